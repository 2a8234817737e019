"""The Redis window store.

Keys (:mod:`turnwise.names` owns the layout: :func:`~turnwise.names.turns_key`,
:func:`~turnwise.names.meta_key`, :func:`~turnwise.names.feedback_stream`), hash-tagged so a
dialogue's keys share one Redis Cluster slot (``dialogue_id`` cannot hold braces: its alphabet is
``[A-Za-z0-9._:-]``)::

    <prefix>{<dialogue_id>}:turns   LIST of turn JSON {"seq", "speaker", "text"}, trimmed to max_turns
    <prefix>{<dialogue_id>}:meta    HASH last_seq, last_hash (turn digest), result (JSON), model,
                                    anchor (streaming bundles: seq of the current span's first turn)
    <prefix>feedback                STREAM, XADD MAXLEN ~ feedback_maxlen

Append + dedupe + trim + expire run in one Lua script (:data:`APPEND_LUA`), so a crash or a lost
connection can never leave half a write. Any Redis connection error or timeout becomes
``StoreError(unavailable)``; the pool reconnects by itself when Redis is back. Every call, its retry
included, ends within the time left to the request's deadline (:mod:`service.store.deadline`) and
never takes longer than ``call_timeout_s`` (the latency budget) outside a request.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.store import deadline
from service.store.base import AppendResult, DialogueState, StoredTurn, WindowStore
from service.store.errors import StoreError, StoreErrorKind, seq_conflict
from service.store.redis_monitor import RedisMonitor
from turnwise import names

T = TypeVar("T")

# KEYS: turns, meta. ARGV: seq, turn digest, turn JSON, max_turns, ttl_s.
# -> {status, last_seq, result JSON or "", window LIST, anchor or "", monitor JSON or ""};
# status in appended|duplicate|stale|conflict.
APPEND_LUA = """
local seq = tonumber(ARGV[1])
local ttl = tonumber(ARGV[5])
local meta = redis.call('HMGET', KEYS[2], 'last_seq', 'last_hash', 'result', 'anchor', 'monitor')
local anchor = meta[4] or ''
local monitor = meta[5] or ''
if meta[1] then
  local last = tonumber(meta[1])
  if seq < last then return {'stale', meta[1], '', {}, anchor, ''} end
  if seq == last then
    if meta[2] ~= ARGV[2] then return {'conflict', meta[1], '', {}, anchor, ''} end
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
    return {'duplicate', meta[1], meta[3] or '', redis.call('LRANGE', KEYS[1], 0, -1), anchor, monitor}
  end
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('HSET', KEYS[2], 'last_seq', ARGV[1], 'last_hash', ARGV[2])
redis.call('HDEL', KEYS[2], 'result', 'model')
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {'appended', ARGV[1], '', redis.call('LRANGE', KEYS[1], 0, -1), anchor, monitor}
"""

# KEYS: meta, turns. ARGV: seq, result JSON, model, ttl_s, anchor or "". The result is written only
# while seq is still the last turn; the anchor (streaming bundles) whenever it is one of this call's
# (anchor <= seq <= last_seq: a late write for an earlier call with the same id is ignored), the later
# one winning, and the window drops the turns before it.
SET_RESULT_LUA = """
local last_seq = redis.call('HGET', KEYS[1], 'last_seq')
if ARGV[5] ~= '' and last_seq and tonumber(ARGV[5]) <= tonumber(ARGV[1])
    and tonumber(ARGV[1]) <= tonumber(last_seq) then
  local anchor = tonumber(ARGV[5])
  local old = tonumber(redis.call('HGET', KEYS[1], 'anchor') or '-1')
  if old > anchor then anchor = old end
  redis.call('HSET', KEYS[1], 'anchor', anchor)
  while true do
    local head = redis.call('LINDEX', KEYS[2], 0)
    if not head or tonumber(cjson.decode(head)['seq']) >= anchor then break end
    redis.call('LPOP', KEYS[2])
  end
end
local last = redis.call('HGET', KEYS[1], 'last_seq')
if last and tonumber(last) == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'result', ARGV[2], 'model', ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  return 1
end
return 0
"""


class RedisStore(RedisMonitor, WindowStore):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = names.DEFAULT_KEY_PREFIX,
        ttl_s: int = 7200,
        timeout_s: float = 0.5,
        feedback_maxlen: int = 1_000_000,
        call_timeout_s: float = 1.0,
        events_maxlen: int = 100_000,
        turn_events_maxlen: int = 10_000,
    ):
        self.url, self.timeout_s = url, timeout_s
        self.events_maxlen, self.turn_events_maxlen = events_maxlen, turn_events_maxlen
        self.prefix = prefix
        self.call_timeout_s = call_timeout_s
        self.ttl_s = ttl_s
        self.feedback_maxlen = feedback_maxlen
        # One quick retry covers a connection the server closed while idle; a Redis that is really
        # down fails in about timeout_s and becomes a 503 instead of hanging the request.
        self.client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
        )
        self._append = self.client.register_script(APPEND_LUA)
        self._set_result = self.client.register_script(SET_RESULT_LUA)
        self._register_monitor()

    def turns_key(self, dialogue_id: str) -> str:
        return names.turns_key(self.prefix, dialogue_id)

    def meta_key(self, dialogue_id: str) -> str:
        return names.meta_key(self.prefix, dialogue_id)

    @property
    def feedback_key(self) -> str:
        return names.feedback_stream(self.prefix)

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        timeout = deadline.remaining(self.call_timeout_s)
        if timeout <= 0:
            raise StoreError(StoreErrorKind.unavailable, "window store not asked: the latency budget is spent")
        try:
            return await asyncio.wait_for(op(), timeout)
        except TimeoutError as err:  # asyncio's: the deadline passed (Redis' own timeout is RedisTimeoutError)
            raise StoreError(
                StoreErrorKind.unavailable, f"window store did not answer within {timeout * 1000:.0f} ms"
            ) from err
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            raise StoreError(
                StoreErrorKind.unavailable, f"window store unavailable (Redis: {type(err).__name__})"
            ) from err
        except RedisError as err:
            raise StoreError(StoreErrorKind.unavailable, f"window store error (Redis: {err})") from err

    async def append(self, dialogue_id: str, seq: int, speaker: str, text: str, *, max_turns: int) -> AppendResult:
        turn = StoredTurn(seq, speaker, text)
        keys = [self.turns_key(dialogue_id), self.meta_key(dialogue_id)]
        args: list[str | int] = [seq, names.turn_digest(speaker, text), turn.to_json(), max_turns, self.ttl_s]
        status, last, result, raw_window, anchor, monitor = await self._call(
            lambda: self._append(keys=keys, args=args))
        if status == "stale":
            raise seq_conflict(dialogue_id, seq, int(last), stale=True)
        if status == "conflict":
            raise seq_conflict(dialogue_id, seq, int(last), stale=False)
        window = [StoredTurn.from_json(raw) for raw in raw_window]
        return AppendResult(status, window, json.loads(result) if result else None, int(anchor) if anchor else None,
                            json.loads(monitor) if monitor else None)

    async def set_result(self, dialogue_id: str, seq: int, result: dict[str, Any], model: str,
                         anchor: int | None = None) -> bool:
        payload = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        keys = [self.meta_key(dialogue_id), self.turns_key(dialogue_id)]
        args: list[str | int] = [seq, payload, model, self.ttl_s, "" if anchor is None else anchor]
        done = await self._call(lambda: self._set_result(keys=keys, args=args))
        return bool(done)

    async def get(self, dialogue_id: str) -> DialogueState | None:
        async def op() -> list[Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.lrange(self.turns_key(dialogue_id), 0, -1)
                pipe.hgetall(self.meta_key(dialogue_id))
                return await pipe.execute()

        raw_window, meta = await self._call(op)
        if not raw_window and not meta:
            return None
        return DialogueState(
            dialogue_id=dialogue_id,
            window=[StoredTurn.from_json(raw) for raw in raw_window],
            last_seq=int(meta["last_seq"]) if "last_seq" in meta else None,
            result=json.loads(meta["result"]) if meta.get("result") else None,
            model=meta.get("model"),
            monitor=json.loads(meta["monitor"]) if meta.get("monitor") else None,
        )

    async def delete(self, dialogue_id: str) -> bool:
        async def op() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.turns_key(dialogue_id), self.meta_key(dialogue_id))
                pipe.zrem(self.live_key, dialogue_id)
                return await pipe.execute()

        n, _ = await self._call(op)
        return bool(n)

    async def add_feedback(self, record: dict[str, str]) -> str:
        fields = {**record, "ts": f"{time.time():.3f}"}
        entry_id = await self._call(
            lambda: self.client.xadd(
                self.feedback_key,
                fields,
                maxlen=self.feedback_maxlen,
                approximate=True,
            )
        )
        return str(entry_id)

    async def ping(self) -> None:
        await self._call(self.client.ping)

    async def close(self) -> None:
        await self._close_reader()
        await self.client.aclose()  # type: ignore[attr-defined]  # types-redis 4.6 predates aclose()
