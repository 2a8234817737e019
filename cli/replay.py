"""Replay dialogues into a running service, turn by turn, as if the calls were live.

Each dialogue's turns are sent in order (REST ``POST /v1/dialogues/{id}/turns`` or one WebSocket
``/v1/stream``) at ``rate`` turns per second (0 = as fast as the service answers); the call is ended
(DELETE / ``end`` frame) after its last turn. Every answer is printed as one line with the labels
and the round-trip time; the summary has latency percentiles, errors and, where the data has gold
labels, how often the served label agrees with them.

Retries are safe: turns are idempotent on (dialogue_id, seq), so replaying the same file twice
against a window that still exists returns the stored results.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

from turnwise.dialogue import Dialogue

TEXT_PREVIEW = 60


def _ws_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/v1/stream"


def _scored(task: str, label: str | list[str], scores: dict[str, float]) -> str:
    """``act=question(0.91)``: each predicted label with the model's probability for it."""
    labels = [label] if isinstance(label, str) else list(label)
    shown = ",".join(f"{lab}({scores[lab]:.2f})" if lab in scores else lab for lab in labels)
    return f"{task}={shown or '-'}"


def format_line(dialogue_id: str, seq: int, speaker: str, text: str, reply: dict[str, Any], ms: float) -> str:
    preview = text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"
    if reply.get("type") == "error" or "error" in reply:
        kind = reply.get("code") or reply.get("error_type")
        what = f"ERROR {kind}: {reply.get('message') or reply.get('error')}"
    else:
        what = "  ".join(_scored(task, label, reply.get("scores", {}).get(task, {}))
                         for task, label in reply.get("labels", {}).items())
    return f"{dialogue_id} #{seq:<3} {speaker:<9} {ms:7.1f} ms  {what}  | {preview}"


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


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 and not (isinstance(body, dict) and "error" in body):
        return {"error": resp.text[:200] or resp.reason_phrase, "error_type": f"http_{resp.status_code}"}
    return body


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
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    latencies: list[float] = []
    errors = 0
    agree: dict[str, list[bool]] = {}
    pacer = _Pacer(rate)
    started = time.monotonic()

    def record(d: Dialogue, seq: int, reply: dict[str, Any], ms: float) -> None:
        nonlocal errors
        turn = d.turns[seq]
        if echo is not None:
            echo(format_line(d.dialogue_id, seq, turn.speaker, turn.text, reply, ms))
        if reply.get("type") == "error" or "error" in reply:
            errors += 1
            return
        latencies.append(ms)
        for task, gold in turn.labels.items():
            served = reply.get("labels", {}).get(task)
            if served is not None:
                agree.setdefault(task, []).append(served == gold)

    if ws:
        async with websockets.connect(
            _ws_url(url), additional_headers=headers, open_timeout=timeout_s, proxy=None, max_size=1 << 22
        ) as sock:
            for d in dialogues:
                for seq, turn in enumerate(d.turns):
                    await pacer.wait()
                    t0 = time.perf_counter()
                    await sock.send(
                        json.dumps(
                            {
                                "type": "turn",
                                "dialogue_id": d.dialogue_id,
                                "seq": seq,
                                "speaker": turn.speaker,
                                "text": turn.text,
                            }
                        )
                    )
                    reply = json.loads(await asyncio.wait_for(sock.recv(), timeout_s))
                    record(d, seq, reply, (time.perf_counter() - t0) * 1000)
                await sock.send(json.dumps({"type": "end", "dialogue_id": d.dialogue_id}))
                await asyncio.wait_for(sock.recv(), timeout_s)
    else:
        async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s) as client:
            for d in dialogues:
                for seq, turn in enumerate(d.turns):
                    await pacer.wait()
                    t0 = time.perf_counter()
                    resp = await client.post(
                        f"/v1/dialogues/{d.dialogue_id}/turns",
                        json={"seq": seq, "speaker": turn.speaker, "text": turn.text},
                    )
                    record(d, seq, _body(resp), (time.perf_counter() - t0) * 1000)
                await client.delete(f"/v1/dialogues/{d.dialogue_id}")
    return summarize(
        latencies,
        errors,
        agree,
        transport="ws" if ws else "rest",
        dialogues=len(dialogues),
        elapsed_s=time.monotonic() - started,
    )


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
    from trainer.data import load_source

    dialogues = load_source(source, data, split, max_dialogues=max_dialogues)
    summary = asyncio.run(replay(url, dialogues, ws=ws, rate=rate, api_key=api_key))
    print_summary(summary)
    return summary
