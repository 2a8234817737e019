"""Load generator for the service benchmark: live calls replayed against a server, in its own process.

Every call is a sample dialogue under a fresh id (or, with ``--call-turns N``, N turns of sample
dialogues joined end to end: a long support call); a call sends its next turn only after the previous
one was answered (a live call never has two turns of one dialogue in flight).

- ``one-stream``: one call at a time, each turn sent as soon as the previous answer arrived: the
  latency of an otherwise idle server.
- ``sweep``: open-loop Poisson arrivals at a fixed offered rate per stage; each arrival takes an idle
  call (or starts a new one) and sends its next turn. Latency counts from the scheduled arrival, so a
  slow client or server cannot hide queueing (no coordinated omission). The rate grows by ``factor``
  while a stage holds p99 <= ``loose_slo_ms`` (1 s) with < 1% errors and >= 90% of the offered rate
  answered; then one bisection stage between the last pass and the first failure, for the strict SLO
  (``slo_ms``, 100 ms) and for the loose one.

Also records the CPU seconds used by this process and by the server process (``--server-pid``),
split into the server's main (event loop) thread and all its other threads (model threads).

    python -m benchmarks.loadgen --url http://127.0.0.1:8080 --data samples/dialogues.jsonl \\
        --mode sweep --start-rate 20 --out result.json [--ws] [--server-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets
from websockets.exceptions import WebSocketException

from turnwise.dialogue import read_jsonl

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds of a process: main thread and the rest (0 when unknown)."""
    if not pid:
        return {"main": 0.0, "other": 0.0}
    main = other = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            secs = (int(fields[11]) + int(fields[12])) / TICKS
            if int(tid) == pid:
                main += secs
            else:
                other += secs
    except (OSError, IndexError, ValueError):
        pass
    return {"main": main, "other": other}


def call_scripts(data: Path, call_turns: int = 0) -> list[list[tuple[str, str]]]:
    """The calls a load generator plays: (speaker, text) per turn.

    ``call_turns`` 0: each sample dialogue as it is (8-13 turns). Otherwise each call is ``call_turns``
    turns long, the sample dialogues joined end to end from a different starting dialogue per call (a
    long support call that goes through several issues): one call per sample dialogue.
    """
    dialogues = [[(t.speaker, t.text) for t in d.turns] for d in read_jsonl(data)]
    if call_turns <= 0:
        return dialogues
    calls = []
    for first in range(len(dialogues)):
        turns: list[tuple[str, str]] = []
        k = first
        while len(turns) < call_turns:
            turns.extend(dialogues[k % len(dialogues)])
            k += 1
        calls.append(turns[:call_turns])
    return calls


class Calls:
    """Turns of sample dialogues played as calls with unique ids (``call_turns``: see :func:`call_scripts`)."""

    def __init__(self, data: Path, prefix: str, call_turns: int = 0):
        self.dialogues = call_scripts(data, call_turns)
        self.prefix = prefix
        self.started = 0

    def new(self) -> dict[str, Any]:
        turns = self.dialogues[self.started % len(self.dialogues)]
        call = {"id": f"{self.prefix}-{self.started}", "turns": turns, "next": 0, "ws": None}
        self.started += 1
        return call


class Client:
    def __init__(self, url: str, ws: bool, api_key: str | None):
        self.url = url.rstrip("/")
        self.ws = ws
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
        self.retries = 0
        self.timings: list[dict[str, float]] | None = None  # when a list: timings_ms of every answered turn
        self.http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=10.0, limits=limits)

    async def send(self, call: dict[str, Any]) -> int:
        """Send the call's next turn; returns an HTTP-like status (0 = transport error/timeout)."""
        seq = call["next"]
        speaker, text = call["turns"][seq]
        try:
            if self.ws:
                if call["ws"] is None:
                    ws_url = self.url.replace("http://", "ws://") + "/v1/stream"
                    call["ws"] = await websockets.connect(ws_url, additional_headers=self.headers, proxy=None)
                await call["ws"].send(
                    json.dumps(
                        {"type": "turn", "dialogue_id": call["id"], "seq": seq, "speaker": speaker, "text": text}
                    )
                )
                reply = json.loads(await asyncio.wait_for(call["ws"].recv(), 10.0))
                status = 200 if reply.get("type") == "scores" else {"overloaded": 429}.get(reply.get("code"), 500)
                if status == 200 and self.timings is not None:
                    self.timings.append(reply.get("timings_ms") or {})
            else:
                body = {"seq": seq, "speaker": speaker, "text": text}
                try:
                    r = await self.http.post(f"/v1/dialogues/{call['id']}/turns", json=body)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A keep-alive connection the server closed while idle: retry once, as a client
                    # should (turns are idempotent on (dialogue_id, seq)).
                    self.retries += 1
                    r = await self.http.post(f"/v1/dialogues/{call['id']}/turns", json=body)
                status = r.status_code
                if status == 200 and self.timings is not None:
                    self.timings.append(r.json().get("timings_ms") or {})
        except (httpx.HTTPError, OSError, asyncio.TimeoutError, WebSocketException):
            status = 0
        call["next"] += 1
        return status

    async def finish(self, call: dict[str, Any]) -> None:
        if call["ws"] is not None:
            await call["ws"].close()
            call["ws"] = None

    async def close(self) -> None:
        await self.http.aclose()


def summarize(latencies: list[float], statuses: Counter, duration: float) -> dict[str, Any]:
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    total = sum(statuses.values())
    ok = statuses.get(200, 0)
    return {
        "requests": total,
        "ok": ok,
        "errors": total - ok,
        "error_ratio": (total - ok) / total if total else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "throughput": ok / duration,
        "p50_ms": float(np.nanpercentile(lat, 50)),
        "p90_ms": float(np.nanpercentile(lat, 90)),
        "p99_ms": float(np.nanpercentile(lat, 99)),
        "max_ms": float(np.nanmax(lat)),
        "mean_ms": float(np.nanmean(lat)),
    }


STEP_MODES = ("incremental", "rebuilt", "cached")


def model_times(timings: list[dict[str, float]]) -> dict[str, Any]:
    """Per turn kind, the server's model time (``timings_ms``): streaming bundles report each turn under
    its step mode (incremental / rebuilt / cached), flat ones only ``inference``."""
    out: dict[str, Any] = {}
    for mode in (*STEP_MODES, "inference"):
        ms = [t[mode] for t in timings if mode in t and (mode != "inference" or not any(m in t for m in STEP_MODES))]
        if ms:
            out[mode] = {"turns": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
                         "p90_ms": round(float(np.percentile(ms, 90)), 3), "mean_ms": round(float(np.mean(ms)), 3)}
    return out


async def one_stream(client: Client, calls: Calls, n_turns: int, warmup: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter = Counter()
    done = 0
    call = calls.new()
    t_start = time.perf_counter()
    while done < n_turns + warmup:
        if call["next"] >= len(call["turns"]):
            await client.finish(call)
            call = calls.new()
        t0 = time.perf_counter()
        status = await client.send(call)
        if done >= warmup:
            if done == warmup:
                t_start = time.perf_counter()
                client.timings = []
            statuses[status] += 1
            if status == 200:
                latencies.append((time.perf_counter() - t0) * 1000)
        done += 1
    await client.finish(call)
    result = summarize(latencies, statuses, time.perf_counter() - t_start)
    result["model_ms"] = model_times(client.timings or [])
    client.timings = None
    return result


async def open_loop(client: Client, calls: Calls, rate: float, duration: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    idle: list[dict[str, Any]] = []
    latencies: list[float] = []
    statuses: Counter = Counter()
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = time.process_time()
    retries0 = client.retries

    async def fire(call: dict[str, Any], scheduled: float) -> None:
        status = await client.send(call)
        statuses[status] += 1
        if status == 200:
            latencies.append((time.perf_counter() - scheduled) * 1000)
        if call["next"] < len(call["turns"]):
            idle.append(call)
        else:
            await client.finish(call)

    start = time.perf_counter()
    next_at = start
    issued = 0
    while True:
        next_at += rng.expovariate(rate)
        if next_at - start >= duration:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        call = idle.pop(rng.randrange(len(idle))) if idle else calls.new()
        task = asyncio.create_task(fire(call, next_at))
        issued += 1
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    for call in idle:
        await client.finish(call)
    unfinished = issued - sum(statuses.values())
    if unfinished:
        statuses["unfinished"] += unfinished
    result = summarize(latencies, statuses, duration)
    result.update(
        offered=rate,
        offered_actual=issued / duration,  # Poisson: the count of a short stage varies around rate x duration
        duration_s=duration,
        wall_s=time.perf_counter() - start,  # the stage plus the wait for its last answers
        loadgen_cpu_s=time.process_time() - cpu0,
        calls_started=calls.started,
        client_retries=client.retries - retries0,
    )
    return result


def passes(stage: dict[str, Any], slo_ms: float) -> bool:
    """p99 within the SLO and < 1% errors (timeouts and unanswered requests count as errors)."""
    return stage["p99_ms"] <= slo_ms and stage["error_ratio"] < 0.01


async def server_stage_sums(client: Client, url: str | None) -> dict[str, float]:
    """Sums and counts of the service's stage and batch-size histograms (turnwise servers only)."""
    if not url:
        return {}
    text = (await client.http.get(url)).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("turnwise_stage_duration_seconds_", "turnwise_batch_size_", "turnwise_stream_steps_total",
                            "turnwise_state_cache_evictions_total")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def stage_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    out = {}
    for stage in ("store", "tokenize", "queue", "inference"):
        n = d.get(f'turnwise_stage_duration_seconds_count{{stage="{stage}"}}', 0.0)
        if n:
            out[f"{stage}_ms_mean"] = round(1000 * d[f'turnwise_stage_duration_seconds_sum{{stage="{stage}"}}'] / n, 2)
    if d.get("turnwise_batch_size_count"):
        out["batch_size_mean"] = round(d["turnwise_batch_size_sum"] / d["turnwise_batch_size_count"], 2)
    for mode in STEP_MODES:  # streaming bundles: turns by step mode, and call states evicted
        steps = d.get(f'turnwise_stream_steps_total{{mode="{mode}"}}')
        if steps:
            out[f"steps_{mode}"] = int(steps)
    if d.get("turnwise_state_cache_evictions_total"):
        out["state_evictions"] = int(d["turnwise_state_cache_evictions_total"])
    return out


async def run_stage(client: Client, calls: Calls, rate: float, args: argparse.Namespace, n: int) -> dict[str, Any]:
    sums_before = await server_stage_sums(client, args.metrics_url)
    cpu_before = proc_cpu(args.server_pid)
    stage = await open_loop(client, calls, rate, args.stage_s, seed=n)
    cpu_after = proc_cpu(args.server_pid)
    stage["server_cpu_s"] = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    if args.metrics_url:
        stage["server_stage_means"] = stage_means(sums_before, await server_stage_sums(client, args.metrics_url))
    stage["passed"] = passes(stage, args.slo_ms)
    stage["passed_loose"] = passes(stage, args.loose_slo_ms)
    keep = ("offered", "offered_actual", "throughput", "p50_ms", "p99_ms", "errors", "passed", "passed_loose")
    print(
        json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in stage.items() if k in keep}), flush=True
    )
    await asyncio.sleep(1.0)  # let the server drain between stages
    return stage


async def sweep(client: Client, calls: Calls, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Geometric ramp while a stage holds the loose SLO (a step down if none held the strict one), then
    one bisection stage for each SLO's boundary."""
    stages: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.max_seconds
    rate = args.start_rate

    def time_left() -> bool:
        return len(stages) < args.max_stages and time.monotonic() + args.stage_s + 1 < deadline

    while time_left():
        stage = await run_stage(client, calls, rate, args, len(stages))
        stages.append(stage)
        if not stage["passed_loose"]:
            break
        rate *= args.factor
    # The start can already be past the strict SLO: step down until a stage holds it (not reported as 0).
    rate = min(s["offered"] for s in stages) / args.factor**2 if stages else 0.0
    while stages and not any(s["passed"] for s in stages) and rate >= 2.0 and time_left():
        stages.append(await run_stage(client, calls, rate, args, len(stages)))
        rate /= args.factor**2
    for key in ("passed", "passed_loose"):
        ok = [s["offered"] for s in stages if s[key]]
        bad = [s["offered"] for s in stages if not s[key] and (not ok or s["offered"] > max(ok))]
        if ok and bad and min(bad) / max(ok) > 1.15 and time_left():
            mid = (max(ok) * min(bad)) ** 0.5
            stages.append(await run_stage(client, calls, mid, args, len(stages)))
    return stages


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    client = Client(args.url, args.ws, args.api_key)
    calls = Calls(args.data, prefix=f"{args.prefix}-{os.getpid()}", call_turns=args.call_turns)
    try:
        out: dict[str, Any] = {"transport": "ws" if args.ws else "rest",
                               "turns_per_call": sorted({len(c) for c in calls.dialogues})}
        if args.mode in ("one-stream", "both"):
            out["one_stream"] = await one_stream(client, calls, args.turns, args.warmup)
            one = out["one_stream"]
            print(json.dumps({"one_stream_p50_ms": round(one["p50_ms"], 2), "p99_ms": round(one["p99_ms"], 2),
                              "model_ms": one["model_ms"]}), flush=True)
        if args.mode in ("sweep", "both"):
            if args.start_rate <= 0:  # start at about half of what one stream's latency suggests
                base = out.get("one_stream", {}).get("p50_ms") or 20.0
                args.start_rate = max(3.0, round(0.5 * 1000.0 / base))
            out["stages"] = await sweep(client, calls, args)
        if args.mode == "fixed":
            out["stages"] = [await run_stage(client, calls, args.start_rate, args, 0)]
        return out
    finally:
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--mode", choices=("one-stream", "sweep", "both", "fixed"), default="both")
    p.add_argument("--ws", action="store_true")
    p.add_argument("--call-turns", type=int, default=0,
                   help="turns per call: sample dialogues joined end to end (0 = each sample dialogue as it is)")
    p.add_argument("--api-key")
    p.add_argument("--turns", type=int, default=300, help="one-stream: measured turns")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--start-rate", type=float, default=0.0, help="0 = derive from one-stream latency")
    p.add_argument("--factor", type=float, default=1.35)
    p.add_argument("--stage-s", type=float, default=6.0)
    p.add_argument("--max-stages", type=int, default=12)
    p.add_argument("--max-seconds", type=float, default=150.0)
    p.add_argument("--slo-ms", type=float, default=100.0)
    p.add_argument("--loose-slo-ms", type=float, default=1000.0, help="the ramp continues while p99 stays under this")
    p.add_argument("--server-pid", type=int)
    p.add_argument("--metrics-url", help="a turnwise /metrics URL: per-stage server timings are recorded")
    p.add_argument("--prefix", default="bench")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
