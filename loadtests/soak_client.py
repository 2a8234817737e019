"""The soak test's callers: N live calls over WebSockets at speech pace, and the seq audit.

Every call is one WebSocket to one of the service replicas (round robin over the ones that accept a
handshake; closed at the end of the call). A call sends one turn, waits for its reply, pauses
(``pause_s``: a turn every 2-4 s, as a person speaks), sends the next; at the end of its dialogue it
sends ``end`` and the next call starts under a new id, so ``calls`` calls are live for the whole run.

What a caller does with a reply, following docs/websocket.md:

- ``scores``: checked (:func:`loadtests.calls.check_turn_body`: the right dialogue and seq, sane
  probabilities); the turn is answered.
- ``error`` with a retryable code (``overloaded``, ``store_unavailable``, ``model_unavailable``): the
  same turn is sent again after ``retry_after_s`` (turns are idempotent on (dialogue_id, seq)), until
  ``retry_for_s`` has passed; then the turn is refused with that code. Any other code refuses it.
- the socket closes (1012 on a drain, or anything else): reconnect to another replica and resend the
  unanswered turn.

The audit counts, per (dialogue_id, seq), every scores frame: a turn is lost when it got neither a
scores frame nor a final refusal, duplicated when it got more than one scores frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from loadtests.calls import Call, CallBook, CallTurn, check_turn_body

RETRYABLE = frozenset({"overloaded", "store_unavailable", "model_unavailable"})


@dataclass
class TurnRecord:
    dialogue_id: str
    seq: int
    sent_at: float  # seconds since the run started, first send
    attempts: int = 0
    scores: int = 0  # scores frames received for this turn (1 = answered exactly once)
    refused: str | None = None  # the final error code, when it was refused
    latency_ms: float | None = None  # send -> scores of the attempt that was answered
    turn_ms: float | None = None  # first send -> scores (retries and reconnects included)
    answered_at: float | None = None
    model: str | None = None
    replica: int | None = None


@dataclass
class Audit:
    """Everything the callers saw; :meth:`summary` is the report's ``audit``."""

    t0: float = field(default_factory=time.monotonic)
    turns: dict[tuple[str, int], TurnRecord] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)  # every error frame, retried ones included
    closes: Counter[str] = field(default_factory=Counter)  # sockets closed by the server, by close code
    handshake_failures: Counter[str] = field(default_factory=Counter)
    mismatched: list[str] = field(default_factory=list)  # replies that do not belong to the turn sent
    calls_started: int = 0
    calls_finished: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def summary(self) -> dict[str, Any]:
        recs = list(self.turns.values())
        answered = sum(1 for r in recs if r.scores >= 1)
        refused = Counter(r.refused for r in recs if r.scores == 0 and r.refused)
        lost = [f"{r.dialogue_id}/{r.seq}" for r in recs if r.scores == 0 and not r.refused]
        dup = [f"{r.dialogue_id}/{r.seq}" for r in recs if r.scores > 1]
        return {
            "turns_sent": len(recs), "answered": answered, "refused": dict(refused),
            "lost": len(lost), "duplicated": len(dup), "mismatched": len(self.mismatched),
            "lost_examples": lost[:10], "duplicated_examples": dup[:10], "mismatched_examples": self.mismatched[:10],
            "accounted_for": answered + sum(refused.values()) == len(recs) and not dup and not self.mismatched,
            "resent_turns": sum(1 for r in recs if r.attempts > 1),
            "calls_started": self.calls_started, "calls_finished": self.calls_finished,
            "error_frames_by_code": dict(self.errors), "server_closes_by_code": dict(self.closes),
            "handshake_failures": dict(self.handshake_failures),
            "models_seen": dict(Counter(r.model for r in recs if r.model)),
        }


class Replicas:
    """WebSocket URLs of the service processes; round robin, skipping one that just refused a handshake."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.down_until = [0.0] * len(urls)
        self._next = itertools.count()

    def pick(self, avoid: int | None = None) -> int:
        now, start = time.monotonic(), next(self._next)
        order = [(start + k) % len(self.urls) for k in range(len(self.urls))]
        good = [i for i in order if self.down_until[i] <= now and i != avoid]
        return good[0] if good else min(range(len(self.urls)), key=lambda i: self.down_until[i])

    def mark_down(self, i: int, for_s: float = 1.0) -> None:
        self.down_until[i] = time.monotonic() + for_s


@dataclass
class Pace:
    pause_s: tuple[float, float] = (2.0, 4.0)
    retry_after_s: float = 1.0
    retry_for_s: float = 30.0
    reply_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0


class Caller:
    """One concurrent caller: plays calls one after another until ``stop`` is set."""

    def __init__(self, n: int, book: CallBook, replicas: Replicas, audit: Audit, pace: Pace, stop: asyncio.Event,
                 seed: int):
        self.n, self.book, self.replicas, self.audit, self.pace, self.stop = n, book, replicas, audit, pace, stop
        self.rng = random.Random(seed)
        self.ws: ClientConnection | None = None
        self.replica: int | None = None
        self.failed: int | None = None  # the replica whose socket just closed or refused: try another first

    async def run(self) -> None:
        tag = self.book.user_tag()
        await asyncio.sleep(self.rng.uniform(0, self.pace.pause_s[1]))  # callers do not start in step
        try:
            for k in itertools.count():
                if self.stop.is_set():
                    break
                await self.play(self.book.new_call(tag, k))
        finally:
            await self.close()

    async def play(self, call: Call) -> None:
        self.audit.calls_started += 1
        while not call.finished and not self.stop.is_set():
            turn = call.next_turn()
            await self.turn(call.dialogue_id, turn)
            call.scored.append(turn)
            if not call.finished:
                await self.sleep(self.rng.uniform(*self.pace.pause_s))
        if await self.send_end(call.dialogue_id):
            self.audit.calls_finished += 1
        await self.close()  # one WebSocket per call: the next call is routed afresh

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def connection(self) -> ClientConnection:
        """The open socket, or a new one to a replica that accepts the handshake (retrying until one does)."""
        while self.ws is None:
            i = self.replicas.pick(avoid=self.failed)
            try:
                self.ws = await asyncio.wait_for(
                    connect(self.replicas.urls[i], max_size=2**20, ping_interval=None, open_timeout=None),
                    timeout=self.pace.connect_timeout_s)
                self.replica, self.failed = i, None
            except (OSError, InvalidHandshake, asyncio.TimeoutError) as err:
                self.audit.handshake_failures[type(err).__name__] += 1
                self.replicas.mark_down(i)
                self.failed = i
                await asyncio.sleep(0.2 + self.rng.uniform(0, 0.3))
        return self.ws

    async def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            with contextlib.suppress(OSError, asyncio.TimeoutError, ConnectionClosed):
                await asyncio.wait_for(ws.close(), timeout=5)

    async def exchange(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        """Send one frame and return its reply; None when the socket closed first (then it is reset)."""
        ws = await self.connection()
        try:
            await ws.send(json.dumps(frame))
            raw = await asyncio.wait_for(ws.recv(), timeout=self.pace.reply_timeout_s)
            return dict(json.loads(raw))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            self.audit.closes[str(code)] += 1
            self.replicas.mark_down(self.replica or 0, 0.5)
            self.failed = self.replica
        except asyncio.TimeoutError:
            self.audit.closes["reply-timeout"] += 1
            self.failed = self.replica
            await self.close()
        self.ws = None
        return None

    async def turn(self, dialogue_id: str, turn: CallTurn) -> None:
        rec = TurnRecord(dialogue_id, turn.seq, self.audit.now())
        self.audit.turns[(dialogue_id, turn.seq)] = rec
        frame = {"type": "turn", "dialogue_id": dialogue_id, "seq": turn.seq, "speaker": turn.speaker,
                 "text": turn.text}
        first = time.monotonic()
        while True:
            rec.attempts += 1
            sent = time.monotonic()
            reply = await self.exchange(frame)
            if reply is None:  # closed before the reply: reconnect (another replica) and resend
                if time.monotonic() - first > self.pace.retry_for_s and self.stop.is_set():
                    return  # the run is over and no replica answers: the audit counts it as lost
                continue
            if reply.get("type") == "scores":
                problem = check_turn_body(reply, dialogue_id, turn.seq)
                if problem:
                    self.audit.mismatched.append(f"{dialogue_id}/{turn.seq}: {problem}")
                    return
                done = time.monotonic()
                rec.scores += 1
                rec.latency_ms, rec.turn_ms = (done - sent) * 1000, (done - first) * 1000
                rec.answered_at, rec.replica = self.audit.now(), self.replica
                rec.model = str(reply["model"].get("version"))
                return
            code = str(reply.get("code") or reply.get("type"))
            self.audit.errors[code] += 1
            if reply.get("type") != "error" or reply.get("seq") not in (turn.seq, None):
                self.audit.mismatched.append(f"{dialogue_id}/{turn.seq}: {reply.get('type')} for {reply.get('seq')}")
                return
            if code not in RETRYABLE or time.monotonic() - first > self.pace.retry_for_s:
                rec.refused = code
                return
            await asyncio.sleep(self.pace.retry_after_s * self.rng.uniform(0.8, 1.2))

    async def send_end(self, dialogue_id: str) -> bool:
        for _ in range(3):
            reply = await self.exchange({"type": "end", "dialogue_id": dialogue_id})
            if reply is not None:
                return reply.get("type") == "ended"
        return False


async def drive(urls: list[str], book: CallBook, calls: int, seconds: float, pace: Pace, audit: Audit,
                seed: int = 0) -> None:
    """Run ``calls`` callers for ``seconds``; then let every caller finish its turn in flight."""
    stop = asyncio.Event()
    replicas = Replicas(urls)
    callers = [Caller(i, book, replicas, audit, pace, stop, seed * 100_003 + i) for i in range(calls)]
    tasks = [asyncio.create_task(c.run()) for c in callers]
    await asyncio.sleep(seconds)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=pace.reply_timeout_s + pace.retry_for_s + 10)
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


__all__ = ["Audit", "Pace", "Replicas", "TurnRecord", "drive"]
