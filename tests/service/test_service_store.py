"""The window store contract, run against the embedded store and a real redis-server."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.store.base import WindowStore
from service.store.errors import StoreError, StoreErrorKind
from service.store.memory import MemoryStore
from service.store.redis import RedisStore


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest):
    if request.param == "memory":
        s: WindowStore = MemoryStore(ttl_s=60)
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix="twtest:", ttl_s=60)
    try:
        yield s
    finally:
        await s.close()


async def test_append_returns_window_ending_at_turn(store: WindowStore):
    r0 = await store.append("call-1", 0, "agent", "hello", max_turns=3)
    assert r0.status == "appended"
    assert [t.seq for t in r0.window] == [0]
    r1 = await store.append("call-1", 1, "customer", "hi", max_turns=3)
    assert [(t.seq, t.speaker, t.text) for t in r1.window] == [(0, "agent", "hello"), (1, "customer", "hi")]


async def test_window_is_trimmed_to_max_turns(store: WindowStore):
    for seq in range(6):
        r = await store.append("call-trim", seq, "agent", f"t{seq}", max_turns=4)
    assert [t.seq for t in r.window] == [2, 3, 4, 5]
    state = await store.get("call-trim")
    assert state is not None and [t.seq for t in state.window] == [2, 3, 4, 5]


async def test_retry_same_text_is_duplicate_and_adds_nothing(store: WindowStore):
    await store.append("call-dup", 0, "agent", "hello", max_turns=5)
    await store.set_result("call-dup", 0, {"labels": {"act": "question"}}, "m@1")
    again = await store.append("call-dup", 0, "agent", "hello", max_turns=5)
    assert again.status == "duplicate"
    assert again.result == {"labels": {"act": "question"}}
    assert [t.seq for t in again.window] == [0]
    state = await store.get("call-dup")
    assert state is not None and len(state.window) == 1 and state.model == "m@1"


async def test_duplicate_before_result_has_no_result(store: WindowStore):
    await store.append("call-pend", 0, "agent", "hello", max_turns=5)
    again = await store.append("call-pend", 0, "agent", "hello", max_turns=5)
    assert again.status == "duplicate" and again.result is None


@pytest.mark.parametrize(
    ("seq", "speaker", "text"), [(1, "agent", "other text"), (1, "customer", "b"), (0, "agent", "a")]
)
async def test_conflicting_or_stale_seq_is_409(store: WindowStore, seq: int, speaker: str, text: str):
    await store.append("call-c", 0, "agent", "a", max_turns=5)
    await store.append("call-c", 1, "agent", "b", max_turns=5)
    with pytest.raises(StoreError) as info:
        await store.append("call-c", seq, speaker, text, max_turns=5)
    assert info.value.kind is StoreErrorKind.conflict
    state = await store.get("call-c")
    assert state is not None and [t.text for t in state.window] == ["a", "b"]


async def test_gaps_in_seq_are_allowed(store: WindowStore):
    await store.append("call-gap", 3, "agent", "a", max_turns=5)
    r = await store.append("call-gap", 10, "agent", "b", max_turns=5)
    assert [t.seq for t in r.window] == [3, 10]


async def test_set_result_only_for_the_last_turn(store: WindowStore):
    await store.append("call-r", 0, "agent", "a", max_turns=5)
    await store.append("call-r", 1, "agent", "b", max_turns=5)
    assert await store.set_result("call-r", 0, {"x": 0}, "m@1") is False
    assert await store.set_result("call-r", 1, {"x": 1}, "m@1") is True
    state = await store.get("call-r")
    assert state is not None and state.result == {"x": 1} and state.last_seq == 1


async def test_delete_and_unknown(store: WindowStore):
    assert await store.get("nobody") is None
    await store.append("call-d", 0, "agent", "a", max_turns=5)
    assert await store.delete("call-d") is True
    assert await store.get("call-d") is None
    assert await store.delete("call-d") is False
    # after the end of a call the same id starts afresh
    r = await store.append("call-d", 0, "agent", "new", max_turns=5)
    assert r.status == "appended" and [t.text for t in r.window] == ["new"]


async def test_unicode_text_round_trips(store: WindowStore):
    r = await store.append("call-u", 0, "customer", 'ça coûte 20 € — 😀 "quoted"', max_turns=5)
    assert r.window[0].text == 'ça coûte 20 € — 😀 "quoted"'


async def test_concurrent_appends_of_one_dialogue_stay_ordered(store: WindowStore):
    results = await asyncio.gather(
        *(store.append("call-cc", seq, "agent", f"t{seq}", max_turns=50) for seq in range(30)),
        return_exceptions=True,
    )
    accepted = [seq for seq, r in enumerate(results) if not isinstance(r, BaseException)]
    for r in results:
        if isinstance(r, BaseException):
            assert isinstance(r, StoreError) and r.kind is StoreErrorKind.conflict
    state = await store.get("call-cc")
    assert state is not None
    seqs = [t.seq for t in state.window]
    assert seqs == sorted(seqs) == accepted
    for r in results:  # each window ends with its own turn and holds nothing later
        if not isinstance(r, BaseException):
            assert all(t.seq <= r.window[-1].seq for t in r.window)


async def test_feedback_is_appended(store: WindowStore):
    rec = {"dialogue_id": "call-f", "seq": "2", "task": "act", "label": "inform", "model": "m@1"}
    entry_id = await store.add_feedback(rec)
    assert entry_id
    if isinstance(store, MemoryStore):
        assert store.feedback[-1][1]["label"] == "inform"
    else:
        assert isinstance(store, RedisStore)
        entries = await store.client.xrange(store.feedback_key)
        assert entries[-1][1]["label"] == "inform" and entries[-1][1]["dialogue_id"] == "call-f"


@pytest.mark.redis
async def test_redis_keys_are_hash_tagged_with_ttl(redis_server):
    store = RedisStore(redis_server.url, prefix="tw:", ttl_s=123)
    try:
        await store.append("call:7.a-b_c", 0, "agent", "a", max_turns=5)
        keys = sorted(await store.client.keys("tw:*"))
        assert keys == ["tw:{call:7.a-b_c}:meta", "tw:{call:7.a-b_c}:turns"]
        assert await store.client.type("tw:{call:7.a-b_c}:turns") == "list"
        assert await store.client.type("tw:{call:7.a-b_c}:meta") == "hash"
        for key in keys:
            assert 0 < await store.client.ttl(key) <= 123
        raw = await store.client.lrange("tw:{call:7.a-b_c}:turns", 0, -1)
        assert json.loads(raw[0]) == {"seq": 0, "speaker": "agent", "text": "a"}
        await store.add_feedback({"dialogue_id": "x", "seq": "0", "task": "act", "label": "inform"})
        assert await store.client.type("tw:feedback") == "stream"
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_down_is_store_unavailable_then_recovers(redis_server):
    store = RedisStore(redis_server.url, ttl_s=60, timeout_s=0.3)
    try:
        await store.append("call-x", 0, "agent", "a", max_turns=5)
        redis_server.stop()
        with pytest.raises(StoreError) as info:
            await store.append("call-x", 1, "agent", "b", max_turns=5)
        assert info.value.kind is StoreErrorKind.unavailable
        with pytest.raises(StoreError):
            await store.ping()
        redis_server.start()
        await store.ping()
        r = await store.append("call-x", 2, "agent", "c", max_turns=5)
        assert r.status == "appended"
    finally:
        await store.close()


async def test_memory_store_expires_windows():
    store = MemoryStore(ttl_s=1)
    await store.append("call-e", 0, "agent", "a", max_turns=5)
    for entry in store._dialogues.values():  # age the entry instead of sleeping
        entry.expires_at -= 2
    assert await store.get("call-e") is None


def test_store_errors_are_409_and_503_with_the_same_message():
    from service.errors import ErrorKind, ServiceError, as_service_error
    from service.store.errors import seq_conflict

    stale = as_service_error(seq_conflict("call-m", 1, 2, stale=True))
    assert stale.kind is ErrorKind.conflict and stale.status == 409
    assert stale.body() == {"error": "dialogue 'call-m': seq 1 is older than the last seq 2", "error_type": "conflict"}
    down = as_service_error(StoreError(StoreErrorKind.unavailable, "window store unavailable (Redis: ConnectionError)"))
    assert down.kind is ErrorKind.store_unavailable and down.status == 503 and down.headers() is None
    assert down.message == "window store unavailable (Redis: ConnectionError)"
    same = ServiceError(ErrorKind.overloaded, "busy", retry_after=1)
    assert as_service_error(same) is same
