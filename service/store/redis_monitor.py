"""The Redis side of the call monitor: the alert state's compare-and-set, event streams, live calls.

Keys (names from :mod:`turnwise.names`)::

    <prefix>{<dialogue_id>}:meta   HASH ... monitor (JSON call state), monitor_seq (its seq)
    <prefix>events                 STREAM of alert and ended events, field ``event`` (JSON), MAXLEN ~
    <prefix>turn-events            STREAM of scored-turn events, field ``event`` (JSON), MAXLEN ~
    <prefix>live                   ZSET dialogue id -> unix time of its last scored turn

The compare-and-set touches only the dialogue's own hash; the streams and the live set are written
after it, in one pipeline, so every key a script touches shares one cluster slot.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.store.base import DialogueState, MonitorWrite
from service.store.errors import StoreError, StoreErrorKind
from turnwise import names

# KEYS: meta. ARGV: base seq (-1: none), new seq, state JSON. -> {status, current state JSON or ""}.
PUT_MONITOR_LUA = """
if not redis.call('HGET', KEYS[1], 'last_seq') then return {'gone', ''} end
local current = tonumber(redis.call('HGET', KEYS[1], 'monitor_seq') or '-1')
if current ~= tonumber(ARGV[1]) then return {'stale', redis.call('HGET', KEYS[1], 'monitor') or ''} end
redis.call('HSET', KEYS[1], 'monitor', ARGV[3], 'monitor_seq', ARGV[2])
return {'ok', ''}
"""


KIND_ORDER = {"turn": 0, "alert": 1, "ended": 2}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class RedisMonitor:
    """Mixed into :class:`service.store.redis.RedisStore` (which provides ``client``, ``_call``, keys)."""

    client: aioredis.Redis
    prefix: str
    ttl_s: int
    url: str
    timeout_s: float
    events_maxlen: int
    turn_events_maxlen: int
    _put_monitor: Any
    _reader: aioredis.Redis | None

    # Provided by the store: every Redis call through its error mapping and deadline.
    _call: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

    def meta_key(self, dialogue_id: str) -> str:
        return names.meta_key(self.prefix, dialogue_id)

    def _register_monitor(self) -> None:
        self._put_monitor = self.client.register_script(PUT_MONITOR_LUA)
        self._reader = None

    @property
    def live_key(self) -> str:
        return names.live_key(self.prefix)

    def _stream_of(self, event: dict[str, Any]) -> tuple[str, int]:
        if event.get("type") == "turn":
            return names.turn_events_stream(self.prefix), self.turn_events_maxlen
        return names.events_stream(self.prefix), self.events_maxlen

    async def put_monitor(self, dialogue_id: str, base_seq: int, state: dict[str, Any]) -> MonitorWrite:
        args = [base_seq, int(state["seq"]), _dumps(state)]
        status, current = await self._call(lambda: self._put_monitor(keys=[self.meta_key(dialogue_id)], args=args))
        return MonitorWrite(status, json.loads(current) if current else None)

    async def publish(self, events: list[dict[str, Any]], live: tuple[str, float] | None = None) -> None:
        async def op() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for event in events:
                    stream, maxlen = self._stream_of(event)
                    pipe.xadd(stream, {"event": _dumps(event)}, maxlen=maxlen, approximate=True)
                if live is not None:
                    pipe.zadd(self.live_key, {live[0]: live[1]})
                    pipe.zremrangebyscore(self.live_key, "-inf", live[1] - self.ttl_s)
                await pipe.execute()

        await self._call(op)

    async def live_calls(self, limit: int) -> list[DialogueState]:
        ids: list[str] = await self._call(lambda: self.client.zrevrange(self.live_key, 0, max(limit, 1) - 1))
        if not ids:
            return []

        async def op() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for dialogue_id in ids:
                    pipe.hmget(self.meta_key(dialogue_id), "last_seq", "model", "monitor")
                return await pipe.execute()

        rows = await self._call(op)
        out, gone = [], []
        for dialogue_id, (last_seq, model, monitor) in zip(ids, rows, strict=True):
            if last_seq is None:  # ended or expired: drop it from the set
                gone.append(dialogue_id)
                continue
            out.append(DialogueState(dialogue_id, [], int(last_seq), None, model,
                                     json.loads(monitor) if monitor else None))
        if gone:
            await self._call(lambda: self.client.zrem(self.live_key, *gone))
        return out

    async def read_events(self, cursor: Any, block_s: float) -> tuple[Any, list[dict[str, Any]]]:
        if self._reader is None:  # blocking reads get their own connection, with room for the block
            self._reader = aioredis.Redis.from_url(self.url, decode_responses=True,
                                                   socket_timeout=block_s + self.timeout_s + 1.0,
                                                   socket_connect_timeout=self.timeout_s)
        reader = self._reader
        streams = [names.events_stream(self.prefix), names.turn_events_stream(self.prefix)]
        if cursor is None:
            cursor = {}
            for stream in streams:
                last = await self._call(functools.partial(reader.xrevrange, stream, count=1))
                cursor[stream] = last[0][0] if last else "0-0"
        block_ms = max(int(block_s * 1000), 1)
        try:  # not through _call: a blocking read may outlast a request's latency budget by design
            replies = await reader.xread(dict(cursor), block=block_ms, count=500)
        except (RedisError, OSError) as err:
            raise StoreError(StoreErrorKind.unavailable, f"event stream unavailable (Redis: {type(err).__name__})") \
                from err
        found: list[tuple[str, dict[str, Any]]] = []
        cursor = dict(cursor)
        for stream, entries in replies or []:
            for entry_id, fields in entries:
                cursor[stream] = entry_id
                found.append((entry_id, json.loads(fields["event"])))
        # Two streams: ordered as published, a turn before the alerts it fired, by the time of the turn.
        found.sort(key=lambda x: (float(x[1].get("at", 0.0)), int(x[1].get("seq", -1)),
                                  KIND_ORDER.get(x[1]["type"], 3)))
        return cursor, [e for _, e in found]

    async def _close_reader(self) -> None:
        if self._reader is not None:
            await self._reader.aclose()  # type: ignore[attr-defined]
            self._reader = None
