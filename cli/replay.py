"""Replay dialogues into a running service, turn by turn, as if the calls were live.

Built on the Python client (:mod:`turnwise.client`): each dialogue is a call whose turns get seq
0, 1, ... and are sent in order over one WebSocket (``--ws``, replies in frame order) or as REST
``POST /v1/dialogues/{id}/turns`` (``--rest``), at ``rate`` turns per second (0 = as fast as the
service answers); the call is ended after its last turn. The client retries 429/503 answers
(honouring ``Retry-After``) and, over the WebSocket, reconnects and resends after a service restart.
Every answer is printed as one line with the labels and the round-trip time; the summary has latency
percentiles, errors and, where the data has gold labels, how often the served label agrees with them.

Retries are safe: turns are idempotent on (dialogue_id, seq), so replaying the same file twice
against a window that still exists returns the stored results. A refused API key or a service that
cannot be reached stops the replay at the first turn (every other turn would fail the same way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from turnwise.client import APIError, AsyncClient, ClientError, Unauthenticated, Unreachable
from turnwise.dialogue import Dialogue
from turnwise.events import AlertEvent
from turnwise.messages import TurnResult

TEXT_PREVIEW = 60


def _scored(task: str, label: str | list[str], scores: dict[str, float]) -> str:
    """``act=question(0.91)``: each predicted label with the model's probability for it."""
    labels = [label] if isinstance(label, str) else list(label)
    shown = ",".join(f"{lab}({scores[lab]:.2f})" if lab in scores else lab for lab in labels)
    return f"{task}={shown or '-'}"


def format_line(dialogue_id: str, seq: int, speaker: str, text: str, reply: TurnResult | ClientError,
                ms: float) -> str:
    preview = text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"
    if isinstance(reply, APIError):
        what = f"ERROR {reply.kind.value}: {reply.message}"
    elif isinstance(reply, ClientError):
        what = f"ERROR {type(reply).__name__}: {reply}"
    else:
        what = "  ".join(_scored(task, label, reply.scores.get(task, {})) for task, label in reply.labels.items())
    return f"{dialogue_id} #{seq:<3} {speaker:<9} {ms:7.1f} ms  {what}  | {preview}"


def format_alert(alert: AlertEvent) -> str:
    return f"{alert.dialogue_id} #{alert.seq:<3} ALERT {alert.severity}: {alert.rule}"


def summarize(
    latencies: list[float],
    errors: int,
    agree: dict[str, list[bool]],
    *,
    transport: str,
    dialogues: int,
    elapsed_s: float,
) -> dict[str, Any]:
    lat = np.asarray(latencies, dtype=np.float64)
    pct = {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)} if len(lat) else {}
    return {
        "transport": transport,
        "dialogues": dialogues,
        "turns": len(latencies) + errors,
        "scored": len(latencies),
        "errors": errors,
        "elapsed_s": round(elapsed_s, 2),
        "latency_ms": {
            **pct,
            "mean": round(float(lat.mean()), 2) if len(lat) else None,
            "max": round(float(lat.max()), 2) if len(lat) else None,
        },
        "gold_agreement": {task: round(sum(v) / len(v), 4) for task, v in sorted(agree.items()) if v},
    }


class _Pacer:
    """Sleeps so that turns go out at ``rate`` per second (no sleeping when rate <= 0)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        if self.interval <= 0:
            return
        delay = self.next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.next_at = max(self.next_at, time.monotonic() - self.interval) + self.interval


class _Tally:
    def __init__(self, echo: Callable[[str], None] | None):
        self.echo = echo
        self.latencies: list[float] = []
        self.errors = 0
        self.agree: dict[str, list[bool]] = {}
        self.alerts: list[AlertEvent] = []  # arrived with a turn's reply, not yet printed

    def record(self, d: Dialogue, seq: int, reply: TurnResult | ClientError, ms: float) -> None:
        turn = d.turns[seq]
        if self.echo is not None:
            self.echo(format_line(d.dialogue_id, seq, turn.speaker, turn.text, reply, ms))
            for alert in self.alerts:
                self.echo(format_alert(alert))
        self.alerts.clear()
        if isinstance(reply, ClientError):
            self.errors += 1
            return
        self.latencies.append(ms)
        for task, gold in turn.labels.items():
            served = reply.labels.get(task)
            if served is not None:
                self.agree.setdefault(task, []).append(served == gold)


async def replay(
    url: str,
    dialogues: Sequence[Dialogue],
    *,
    ws: bool = False,
    rate: float = 0.0,
    api_key: str | None = None,
    timeout_s: float = 30.0,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    tally = _Tally(echo)
    pacer = _Pacer(rate)
    started = time.monotonic()
    async with AsyncClient(url, api_key=api_key, timeout=timeout_s) as client:
        try:
            if ws:
                async with client.stream() as stream:
                    stream.on_alert = tally.alerts.append  # printed after the scores line of their turn
                    for d in dialogues:
                        call = stream.call(d.dialogue_id)
                        await _replay_call(d, call.send, pacer, tally)
                        await call.end()
            else:
                for d in dialogues:
                    rest_call = client.call(d.dialogue_id)
                    await _replay_call(d, rest_call.send, pacer, tally)
                    await rest_call.end()
        except (Unauthenticated, Unreachable):
            pass  # recorded on the turn it happened to; every other turn would fail the same way
    if echo is not None:  # alerts that came in after the last turn's line
        for alert in tally.alerts:
            echo(format_alert(alert))
    return summarize(tally.latencies, tally.errors, tally.agree, transport="ws" if ws else "rest",
                     dialogues=len(dialogues), elapsed_s=time.monotonic() - started)


async def _replay_call(d: Dialogue, send: Callable[..., Any], pacer: _Pacer, tally: _Tally) -> None:
    for seq, turn in enumerate(d.turns):
        await pacer.wait()
        t0 = time.perf_counter()
        try:
            reply: TurnResult | ClientError = await send(turn.speaker, turn.text, seq=seq)
        except ClientError as err:
            reply = err
        tally.record(d, seq, reply, (time.perf_counter() - t0) * 1000)
        if isinstance(reply, Unauthenticated | Unreachable):
            raise reply


def print_summary(summary: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    lat = summary["latency_ms"]
    echo(
        f"{summary['dialogues']} dialogue(s), {summary['turns']} turn(s) over {summary['transport']}: "
        f"{summary['errors']} error(s); latency p50 {lat.get('p50')} ms, p90 {lat.get('p90')} ms, "
        f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms"
    )
    if summary["gold_agreement"]:
        echo("agreement with gold labels: " + ", ".join(f"{t} {v:.1%}" for t, v in summary["gold_agreement"].items()))


def run_replay(
    url: str,
    data: Path,
    ws: bool,
    rate: float,
    max_dialogues: int | None,
    api_key: str | None,
    source: str = "jsonl",
    split: str | None = None,
) -> dict[str, Any]:
    """Stream dialogues into a running service; prints a line per turn and a summary; returns the summary."""
    from cli.score import load_dialogues

    dialogues = load_dialogues(data, source, split, max_dialogues)
    summary = asyncio.run(replay(url, dialogues, ws=ws, rate=rate, api_key=api_key))
    print_summary(summary)
    return summary
