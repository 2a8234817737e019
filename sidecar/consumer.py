"""The feedback stream consumer: ``XREADGROUP`` -> join with the dialogue's window -> ledger -> ``XACK``.

**Delivery.** The sidecar reads the stream in a consumer group (``group``/``consumer``) and acks an
entry only after its joined record is committed to the ledger. A crash between commit and ack
leaves the entry pending; on start the sidecar re-reads its own pending entries (``XREADGROUP`` from
id 0), claims entries left pending by other consumer names (``XAUTOCLAIM`` after ``claim_idle_s``,
e.g. a pod that restarted under another name), and the ledger's primary key on the stream id makes
the re-delivery a no-op: nothing is lost, nothing is counted twice.

**Join.** Feedback names ``(dialogue_id, seq, task, label)``; the turn's text lives in the dialogue's
window list. The context stored is the window up to and including ``seq`` -- exactly what the model
saw, since the service keeps ``window.max_turns`` turns. The join happens when the sidecar reads the
entry, so an expired or ended dialogue (``window_missing``), a turn trimmed out of the window by the
turns that followed it (``turn_trimmed``) or a seq the window never held (``turn_missing``) is
recorded, counted and skipped: feedback posted after a call ended (DELETE / ``end`` frame) cannot be
used, and the loop keeps consuming while a finetune runs so the lag stays at about ``block_ms``. An
entry that carries a ``window`` field (the JSON list of window turns, as the service held them when
the feedback arrived) is joined from that snapshot instead, which removes both races. The service
attaches that snapshot whenever the turn is still in the call's window (its 202 answer says
``"context": "window"``), so in practice only feedback for an already ended or expired call is skipped.

The key layout and the stored-turn format are :mod:`turnwise.names`' (the service's window store uses
the same).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from sidecar.ledger import JOINED, FeedbackLedger, FeedbackRecord
from turnwise.names import StoredTurn, feedback_stream, turns_key


def join_window(window: Sequence[str | bytes | Mapping[str, Any]], seq: int) -> tuple[str, list[dict[str, Any]] | None]:
    """(status, context) for the turn ``seq`` in a dialogue's window (stored turns as JSON or as dicts,
    oldest first)."""
    if not window:
        return "window_missing", None
    turns = [StoredTurn.from_json(t) if isinstance(t, str | bytes) else StoredTurn.from_dict(t) for t in window]
    seqs = [t.seq for t in turns]
    if seq < seqs[0]:
        return "turn_trimmed", None
    if seq not in seqs:
        return "turn_missing", None
    end = seqs.index(seq) + 1
    return JOINED, [t.as_dict() for t in turns[:end]]


class FeedbackConsumer:
    """Reads ``<prefix>feedback`` in a consumer group; joins, records durably, then acks."""

    def __init__(self, client: redis.Redis, ledger: FeedbackLedger, *, prefix: str, group: str, consumer: str,
                 batch: int = 200, claim_idle_ms: int = 300_000):
        self.client = client
        self.ledger = ledger
        self.prefix = prefix
        self.stream = feedback_stream(prefix)
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.stats: dict[str, int] = {"read": 0, "stored": 0, "duplicates": 0}

    def turns_key(self, dialogue_id: str) -> str:
        return turns_key(self.prefix, dialogue_id)

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def recover(self) -> int:
        """Process what this consumer read but never acked, then what others left pending too long."""
        n, cursor = 0, "0"
        while True:
            entries = self._read(cursor, block_ms=None)
            if not entries:
                break
            n += self._process(entries)
            cursor = entries[-1][0]
        start = "0-0"
        while True:
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                           start_id=start, count=self.batch)
            start, claimed = reply[0], reply[1]
            deleted = list(reply[2]) if len(reply) > 2 else []
            if deleted:  # trimmed out of the stream while pending: nothing left to record
                self._ack(deleted)
            if claimed:
                n += self._process(claimed)
            if start in ("0-0", b"0-0"):
                break
        return n

    def poll(self, block_ms: int | None) -> int:
        """Read new entries (waiting up to ``block_ms``; None = don't wait) and process them."""
        return self._process(self._read(">", block_ms=block_ms))

    def drain(self) -> int:
        """Process everything available now, without waiting."""
        total = 0
        while (n := self.poll(None)) > 0:
            total += n
        return total

    def _read(self, cursor: str, block_ms: int | None) -> list[tuple[str, dict[str, str] | None]]:
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: cursor}, count=self.batch,
                                       block=block_ms)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return [(i, f) for i, f in next(iter(reply.values()))[0]]
        return [(i, f) for i, f in reply[0][1]]

    def _process(self, entries: Sequence[tuple[str, dict[str, str] | None]]) -> int:
        if not entries:
            return 0
        parsed: list[FeedbackRecord] = [parse_entry(i, f) for i, f in entries]
        wanted = sorted({r.dialogue_id for r in parsed if r.status == "pending"})
        pipe = self.client.pipeline(transaction=False)
        for did in wanted:
            pipe.lrange(self.turns_key(did), 0, -1)
        windows = dict(zip(wanted, pipe.execute(), strict=True)) if wanted else {}
        for r in parsed:
            if r.status == "pending":
                r.status, r.context = join_window(windows[r.dialogue_id], r.seq)
        added = self.ledger.add(parsed)  # committed (fsync) before the ack below
        self._ack([r.stream_id for r in parsed])
        self.stats["read"] += len(parsed)
        self.stats["stored"] += added
        self.stats["duplicates"] += len(parsed) - added
        return len(parsed)

    def _ack(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    def pending(self) -> int:
        return int(self.client.xpending(self.stream, self.group)["pending"])


def parse_entry(stream_id: str, fields: dict[str, str] | None) -> FeedbackRecord:
    """A stream entry as a record: ``pending`` (to join with the Redis window), ``invalid`` or ``deleted``;
    joined at once when the entry carries its own ``window`` snapshot (see the module docstring)."""
    if fields is None or not fields:
        return FeedbackRecord(stream_id, "", -1, "", "", "", 0.0, "deleted")
    try:
        rec = FeedbackRecord(stream_id, str(fields["dialogue_id"]), int(fields["seq"]), str(fields["task"]),
                             str(fields.get("label", "")), str(fields.get("model", "")),
                             float(fields.get("ts", 0.0)), "pending")
        if fields.get("window"):
            rec.status, rec.context = join_window(json.loads(fields["window"]), rec.seq)
        return rec
    except (KeyError, ValueError, TypeError):
        return FeedbackRecord(stream_id, str(fields.get("dialogue_id", "")), -1, str(fields.get("task", "")),
                              str(fields.get("label", "")), str(fields.get("model", "")), 0.0, "invalid")
