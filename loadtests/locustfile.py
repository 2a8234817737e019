"""Locust users that each play a live call against a turnwise service, a ramp shape and an SLO gate.

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 \\
        --peak-users 30 --ramp-s 30 --hold-s 60 --turn-pause-min 2 --turn-pause-max 4 \\
        --slo-p99-ms 500 --slo-max-error-ratio 0.01 --csv out/loadtest --csv-full-history

(``python -m loadtests.run`` starts Redis and the service and runs exactly this.)

- :class:`WebSocketCall` (weight ``--ws-weight``): one ``/v1/stream`` socket per call; every turn frame
  is timed from send to its ``scores`` frame and reported through ``environment.events.request``
  (type ``WS``: ``[connect]``, ``[turn]``, ``[end]``).
- :class:`RestCall` (weight ``--rest-weight``): the same calls over REST, with weighted tasks -- speak
  the next turn (20), look at the call's window like an agent desktop (2), correct a label through
  ``/v1/feedback`` with the dialogue's gold label (1). URLs are grouped with ``name=`` and a wrong
  body is a failure (``resp.failure``), not only a wrong status.
- Speech pace: ``--turn-pause-min``..``--turn-pause-max`` seconds between a user's actions.
- :class:`RampShape`: stepped ramp to ``--peak-users``, hold, stop.
- The ``quitting`` listener applies the SLO gate (:mod:`loadtests.slo`), sets the process exit code
  and writes the JSON summary (``--summary-json``).

Why ``websocket-client`` for the WebSocket user: it is a blocking client on plain sockets, which
locust's gevent monkey-patching turns cooperative, so a few hundred calls share one process with no
threads or asyncio loop per user. (``websockets``' sync client runs a background thread per socket.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket
from locust import FastHttpUser, LoadTestShape, User, events, task
from locust.env import Environment
from locust.stats import StatsEntry

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # locust puts the locustfile's folder on sys.path, not the repository root
    sys.path.insert(0, str(ROOT))

from loadtests.calls import Call, CallBook, check_turn_body  # noqa: E402
from loadtests.slo import REST_TURN, TURN_ENTRIES, WS_TURN, Thresholds, check_slo  # noqa: E402
from loadtests.stages import ramp_stages, stage_at  # noqa: E402

log = logging.getLogger("turnwise.loadtest")
STATE: dict[str, Any] = {"book": None, "peak_users": 0, "started": time.time()}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--dialogues", default=str(ROOT / "samples" / "dialogues.jsonl"),
                        help="dialogues to replay: a turnwise JSONL file or a corpus folder (with --source)")
    parser.add_argument("--source", default="jsonl", help="jsonl|dailydialog|meld|multiwoz|sgd|multidogo")
    parser.add_argument("--split", default=None, help="corpus split (train, validation, test)")
    parser.add_argument("--max-dialogues", type=int, default=0, help="use the first N dialogues (0 = all)")
    parser.add_argument("--turn-pause-min", type=float, default=2.0, help="seconds between turns (min)")
    parser.add_argument("--turn-pause-max", type=float, default=4.0, help="seconds between turns (max)")
    parser.add_argument("--peak-users", type=int, default=20, help="concurrent calls at the peak")
    parser.add_argument("--ramp-s", type=float, default=30.0, help="seconds of stepped ramp-up")
    parser.add_argument("--ramp-steps", type=int, default=4, help="steps of the ramp")
    parser.add_argument("--hold-s", type=float, default=60.0, help="seconds at the peak")
    parser.add_argument("--ws-weight", type=int, default=3, help="weight of WebSocket calls (>= 1)")
    parser.add_argument("--rest-weight", type=int, default=1, help="weight of REST calls (>= 1)")
    parser.add_argument("--slo-p99-ms", type=float, default=1000.0, help="SLO: p99 of scored turns, ms")
    parser.add_argument("--slo-max-error-ratio", type=float, default=0.01, help="SLO: failures / requests")
    parser.add_argument("--summary-json", default="", help="write the run summary (and SLO verdict) here")
    parser.add_argument("--api-key", default=os.environ.get("TURNWISE_API_KEY", ""), help="Bearer key")
    parser.add_argument("--seed", type=int, default=None, help="seed for the choice of dialogues")


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    STATE["book"] = CallBook.load(opts.dialogues, opts.source, opts.split, opts.max_dialogues or None,
                                  run_id=f"lt-{uuid.uuid4().hex[:6]}", seed=opts.seed)
    # Class weights from the command line: read by the dispatcher when the run starts.
    WebSocketCall.weight = max(1, opts.ws_weight)
    RestCall.weight = max(1, opts.rest_weight)


@events.spawning_complete.add_listener
def _spawned(user_count: int, **_: Any) -> None:
    STATE["peak_users"] = max(STATE["peak_users"], user_count)


@events.test_start.add_listener
def _test_start(**_: Any) -> None:
    STATE["started"] = time.time()


def options(environment: Environment) -> Any:
    """The parsed command line (always there when locust runs this file)."""
    assert environment.parsed_options is not None
    return environment.parsed_options


def speech_pause(environment: Environment) -> float:
    opts = options(environment)
    return random.uniform(opts.turn_pause_min, max(opts.turn_pause_min, opts.turn_pause_max))


def auth_headers(environment: Environment) -> dict[str, str]:
    key = options(environment).api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


class BadAnswer(Exception):
    """The service answered, but not with what a client of the API expects."""


class WebSocketCall(User):
    """A live call streamed over ``WS /v1/stream``: a socket per call, one turn at speech pace."""

    weight = 3

    def on_start(self) -> None:
        self.tag = STATE["book"].user_tag()
        self.calls = 0
        self.call: Call | None = None
        self.ws: websocket.WebSocket | None = None

    def on_stop(self) -> None:
        self._close()

    def wait_time(self) -> float:
        return speech_pause(self.environment)

    @task
    def speak(self) -> None:
        if self.call is None or self.call.finished or self.ws is None:
            if self.call is not None and self.ws is not None:
                self._end_call()
            if not self._start_call():
                return
        assert self.call is not None and self.ws is not None
        call, turn = self.call, self.call.next_turn()
        frame = json.dumps({"type": "turn", "dialogue_id": call.dialogue_id, "seq": turn.seq,
                            "speaker": turn.speaker, "text": turn.text})
        ok = self._timed(WS_TURN[1], lambda ws: (ws.send(frame), ws.recv())[1],
                         lambda body: check_turn_body(body, call.dialogue_id, turn.seq))
        if ok:
            call.scored.append(turn)

    def _start_call(self) -> bool:
        self.calls += 1
        self.call = STATE["book"].new_call(self.tag, self.calls)
        url = str(self.host).replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/v1/stream"
        header = [f"{k}: {v}" for k, v in auth_headers(self.environment).items()]

        def connect(_: Any) -> str:
            self.ws = websocket.create_connection(url, timeout=30, header=header)
            return ""

        return self._timed("/v1/stream [connect]", connect, None)

    def _end_call(self) -> None:
        assert self.call is not None
        did = self.call.dialogue_id
        frame = json.dumps({"type": "end", "dialogue_id": did})

        def ended(body: Any) -> str | None:
            return None if body.get("type") == "ended" and body.get("dialogue_id") == did else f"not ended: {body}"

        self._timed("/v1/stream [end]", lambda ws: (ws.send(frame), ws.recv())[1], ended)
        self._close()

    def _timed(self, name: str, exchange: Callable[[Any], str], check: Callable[[Any], str | None] | None) -> bool:
        """Run one exchange on the socket, time it and report it as a locust request of type WS."""
        start = time.perf_counter()
        length = 0
        exc: Exception | None = None
        try:
            raw = exchange(self.ws)
            length = len(raw)
            problem = check(json.loads(raw)) if check is not None else None
            if problem:
                exc = BadAnswer(problem)
        except (websocket.WebSocketException, OSError, ValueError) as err:
            exc = err
            self._close()  # the socket is unusable: the next action starts a new call
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=(time.perf_counter() - start) * 1000,
            response_length=length, exception=exc, context={"user": self.tag})
        return exc is None

    def _close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                self.ws.close(timeout=1)
            self.ws = None


class RestCall(FastHttpUser):
    """The same live calls over REST, plus an agent desktop looking at the call and correcting labels."""

    weight = 1

    def on_start(self) -> None:
        self.tag = STATE["book"].user_tag()
        self.calls = 0
        self.call: Call | None = None
        self.rng = random.Random()
        self.headers = auth_headers(self.environment)

    def wait_time(self) -> float:
        return speech_pause(self.environment)

    @task(20)
    def speak(self) -> None:
        if self.call is None or self.call.finished:
            if self.call is not None:
                self.client.delete(f"/v1/dialogues/{self.call.dialogue_id}", name="/v1/dialogues/{id}",
                                   headers=self.headers)
            self.calls += 1
            self.call = STATE["book"].new_call(self.tag, self.calls)
        call, turn = self.call, self.call.next_turn()
        body = {"seq": turn.seq, "speaker": turn.speaker, "text": turn.text}
        with self.client.post(f"/v1/dialogues/{call.dialogue_id}/turns", json=body, name=REST_TURN[1],
                              headers=self.headers, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            problem = check_turn_body(resp.json(), call.dialogue_id, turn.seq)
            if problem:
                resp.failure(problem)
            else:
                call.scored.append(turn)

    @task(2)
    def look(self) -> None:
        if self.call is None or not self.call.scored:
            return
        call = self.call
        with self.client.get(f"/v1/dialogues/{call.dialogue_id}", name="/v1/dialogues/{id}", headers=self.headers,
                             catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
            else:
                last = resp.json().get("last_seq")
                if not isinstance(last, int) or last < call.scored[-1].seq:  # a scored turn must be in the window
                    resp.failure(f"window ends at {last}, before the scored turn {call.scored[-1].seq}")

    @task(1)
    def correct(self) -> None:
        fb = self.call.feedback(self.rng) if self.call is not None else None
        if fb is None:
            return
        with self.client.post("/v1/feedback", json=fb, headers=self.headers, catch_response=True) as resp:
            if resp.status_code != 202:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")


class RampShape(LoadTestShape):
    """Stepped ramp to ``--peak-users`` over ``--ramp-s``, hold ``--hold-s``, stop (see loadtests.stages)."""

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts = options(self.runner.environment)
        stages = ramp_stages(opts.peak_users, opts.ramp_s, opts.hold_s, opts.ramp_steps)
        stage = stage_at(stages, self.get_run_time())
        return None if stage is None else (stage.users, stage.spawn_rate)


def merged(environment: Environment, keys: tuple[tuple[str, str], ...], name: str) -> StatsEntry:
    entry = StatsEntry(environment.stats, name, "", use_response_times_cache=False)
    for method, n in keys:
        found = environment.stats.entries.get((n, method))
        if found is not None:
            entry.extend(found)
    return entry


def describe(entry: StatsEntry, duration_s: float) -> dict[str, Any]:
    has = entry.num_requests > 0
    return {
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "per_s": entry.num_requests / duration_s if duration_s > 0 else 0.0,
        **{f"p{int(q * 100)}_ms": float(entry.get_response_time_percentile(q)) if has else None
           for q in (0.5, 0.95, 0.99)},
        "p99.9_ms": float(entry.get_response_time_percentile(0.999)) if has else None,
        "avg_ms": entry.avg_response_time if has else None,
        "max_ms": entry.max_response_time if has else None,
    }


@events.quitting.add_listener
def _slo_gate(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    stats = environment.stats
    turns = merged(environment, TURN_ENTRIES, "turns")
    duration = max(1e-9, (stats.total.last_request_timestamp or time.time()) - stats.total.start_time)
    result = check_slo(
        turns=turns.num_requests,
        turn_p99_ms=float(turns.get_response_time_percentile(0.99)) if turns.num_requests else 0.0,
        requests=stats.total.num_requests,
        failures=stats.total.num_failures,
        thresholds=Thresholds(p99_ms=opts.slo_p99_ms, max_error_ratio=opts.slo_max_error_ratio),
    )
    environment.process_exit_code = 0 if result.passed else 1
    if result.passed:
        log.info("SLO gate passed: %s", json.dumps(result.measured))
    else:
        log.error("SLO gate FAILED: %s", "; ".join(result.breaches))
    if opts.summary_json:
        summary = {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": environment.host,
            "duration_s": round(duration, 2),
            "peak_users": STATE["peak_users"],
            "plan": {"peak_users": opts.peak_users, "ramp_s": opts.ramp_s, "ramp_steps": opts.ramp_steps,
                     "hold_s": opts.hold_s, "turn_pause_s": [opts.turn_pause_min, opts.turn_pause_max],
                     "ws_weight": opts.ws_weight, "rest_weight": opts.rest_weight,
                     "dialogues": opts.dialogues, "source": opts.source},
            "turns": describe(turns, duration),
            "requests": {**describe(stats.total, duration), "error_ratio": result.measured["error_ratio"]},
            "by_name": [{"type": e.method, "name": e.name, **describe(e, duration)}
                        for e in sorted(stats.entries.values(), key=lambda e: (e.method or "", e.name))],
            "errors": [{"type": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                       for e in stats.errors.values()],
            "slo": result.to_dict(),
        }
        path = Path(opts.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
