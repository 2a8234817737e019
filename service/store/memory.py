"""The embedded window store: same semantics as Redis, in this process (one replica, laptop default).

Every method runs without awaiting in between, so on one event loop each call is atomic, exactly
like the Redis Lua script. Expired dialogues are dropped lazily on access and by a sweep every
``SWEEP_EVERY`` appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from service.store.base import AppendResult, DialogueState, MonitorWrite, StoredTurn, WindowStore
from service.store.errors import seq_conflict
from turnwise.names import turn_digest

SWEEP_EVERY = 1024


@dataclass
class _Entry:
    turns: deque[StoredTurn]
    last_seq: int
    last_hash: str
    expires_at: float
    result: dict[str, Any] | None = None
    model: str | None = None
    anchor: int | None = None
    monitor: dict[str, Any] | None = None
    live_at: float | None = None


class MemoryStore(WindowStore):
    kind = "memory"

    def __init__(self, *, ttl_s: int = 7200, feedback_maxlen: int = 1_000_000, events_maxlen: int = 100_000):
        self.ttl_s = ttl_s
        # Published events, numbered; readers wait on ``_published``, replaced by every publish.
        self.events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=events_maxlen)
        self._event_seq = 0
        self._published = asyncio.Event()
        self._dialogues: dict[str, _Entry] = {}
        # The embedded equivalent of the Redis stream: (id, record), oldest first, bounded.
        self.feedback: deque[tuple[str, dict[str, str]]] = deque(maxlen=feedback_maxlen)
        self._feedback_seq = 0
        self._appends = 0

    def _live(self, dialogue_id: str, now: float) -> _Entry | None:
        entry = self._dialogues.get(dialogue_id)
        if entry is not None and entry.expires_at <= now:
            del self._dialogues[dialogue_id]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        for key in [k for k, e in self._dialogues.items() if e.expires_at <= now]:
            del self._dialogues[key]

    async def append(self, dialogue_id: str, seq: int, speaker: str, text: str, *, max_turns: int) -> AppendResult:
        now = time.monotonic()
        self._appends += 1
        if self._appends % SWEEP_EVERY == 0:
            self._sweep(now)
        digest = turn_digest(speaker, text)
        entry = self._live(dialogue_id, now)
        if entry is not None:
            if seq < entry.last_seq:
                raise seq_conflict(dialogue_id, seq, entry.last_seq, stale=True)
            if seq == entry.last_seq:
                if digest != entry.last_hash:
                    raise seq_conflict(dialogue_id, seq, entry.last_seq, stale=False)
                entry.expires_at = now + self.ttl_s
                return AppendResult("duplicate", list(entry.turns), entry.result, entry.anchor, entry.monitor)
        turn = StoredTurn(seq, speaker, text)
        if entry is None:
            entry = _Entry(turns=deque(maxlen=max_turns), last_seq=seq, last_hash=digest, expires_at=0.0)
            self._dialogues[dialogue_id] = entry
        elif entry.turns.maxlen != max_turns:  # a reloaded bundle changed window.max_turns
            entry.turns = deque(entry.turns, maxlen=max_turns)
        entry.turns.append(turn)
        entry.last_seq, entry.last_hash = seq, digest
        entry.result, entry.model = None, None
        entry.expires_at = now + self.ttl_s
        return AppendResult("appended", list(entry.turns), None, entry.anchor, entry.monitor)

    async def set_result(self, dialogue_id: str, seq: int, result: dict[str, Any], model: str,
                         anchor: int | None = None) -> bool:
        entry = self._live(dialogue_id, time.monotonic())
        # A span start of this call's turns only (a late write for an earlier call with the same id has a
        # seq past the window's; an anchor never lies after the turn it was computed for).
        if entry is not None and anchor is not None and anchor <= seq <= entry.last_seq:
            entry.anchor = anchor if entry.anchor is None else max(entry.anchor, anchor)
            while entry.turns and entry.turns[0].seq < entry.anchor:
                entry.turns.popleft()
        if entry is None or entry.last_seq != seq:
            return False
        entry.result, entry.model = result, model
        entry.expires_at = time.monotonic() + self.ttl_s
        return True

    async def get(self, dialogue_id: str) -> DialogueState | None:
        entry = self._live(dialogue_id, time.monotonic())
        if entry is None:
            return None
        return DialogueState(dialogue_id, list(entry.turns), entry.last_seq, entry.result, entry.model, entry.monitor)

    async def delete(self, dialogue_id: str) -> bool:
        return self._dialogues.pop(dialogue_id, None) is not None

    async def add_feedback(self, record: dict[str, str]) -> str:
        self._feedback_seq += 1
        entry_id = f"{int(time.time() * 1000)}-{self._feedback_seq}"
        self.feedback.append((entry_id, dict(record)))
        return entry_id

    async def put_monitor(self, dialogue_id: str, base_seq: int, state: dict[str, Any]) -> MonitorWrite:
        entry = self._live(dialogue_id, time.monotonic())
        if entry is None:
            return MonitorWrite("gone")
        stored = -1 if entry.monitor is None else int(entry.monitor.get("seq", -1))
        if stored != base_seq:
            return MonitorWrite("stale", entry.monitor)
        entry.monitor = state
        return MonitorWrite("ok")

    async def publish(self, events: list[dict[str, Any]], live: tuple[str, float] | None = None) -> None:
        for event in events:
            self._event_seq += 1
            self.events.append((self._event_seq, event))
        if live is not None:
            entry = self._live(live[0], time.monotonic())
            if entry is not None:
                entry.live_at = live[1]
        if events:
            self._published.set()
            self._published = asyncio.Event()

    async def live_calls(self, limit: int) -> list[DialogueState]:
        now = time.monotonic()
        live = [(e.live_at, k) for k, e in self._dialogues.items() if e.live_at is not None and e.expires_at > now]
        live.sort(reverse=True)
        out = []
        for _, key in live[:limit]:
            e = self._dialogues[key]
            out.append(DialogueState(key, [], e.last_seq, None, e.model, e.monitor))
        return out

    async def read_events(self, cursor: Any, block_s: float) -> tuple[Any, list[dict[str, Any]]]:
        after = self._event_seq if cursor is None else int(cursor)
        if self._event_seq <= after and block_s > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._published.wait(), block_s)
        newer = min(self._event_seq - after, len(self.events))
        found = [e for _, e in itertools.islice(reversed(self.events), max(newer, 0))][::-1]
        return self._event_seq, found

    async def ping(self) -> None:
        return None
