"""HTTP API end to end: the real app under uvicorn, a real exported bundle, both stores."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from turnwise.scoring import decode  # noqa: F401 - imported so a broken core fails here too

TURNS = [
    ("agent", "Thanks for calling, how can I help?"),
    ("customer", "My internet has been down since last night."),
    ("agent", "Sorry about that. Could you read me the account number?"),
    ("customer", "It's 555-0142."),
    ("agent", "I see an outage in your area."),
]


def post_turn(client: httpx.AsyncClient, dialogue_id: str, seq: int, speaker: str, text: str, **kw):
    return client.post(f"/v1/dialogues/{dialogue_id}/turns", json={"seq": seq, "speaker": speaker, "text": text}, **kw)


def check_result(body: dict, schema) -> None:
    assert set(body) >= {"dialogue_id", "seq", "scores", "labels", "model", "window_turns", "timings_ms"}
    for task in schema.names():
        probs = body["scores"][task]
        assert list(probs) == schema[task].labels
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
        assert body["labels"][task] == max(probs, key=probs.get)
    assert body["model"] == {"name": "tiny", "version": "1"}
    assert set(body["timings_ms"]) >= {"store", "tokenize", "queue", "inference", "total"}


async def test_turns_are_scored_and_windowed(live, store_kind, sample_schema):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        for seq, (speaker, text) in enumerate(TURNS):
            r = await post_turn(c, "call-1", seq, speaker, text)
            assert r.status_code == 200, r.text
            body = r.json()
            check_result(body, sample_schema)
            assert body["dialogue_id"] == "call-1" and body["seq"] == seq
            assert body["window_turns"] == seq + 1
        r = await c.get("/v1/dialogues/call-1")
        assert r.status_code == 200
        got = r.json()
        assert [t["seq"] for t in got["window"]] == [0, 1, 2, 3, 4]
        assert [t["text"] for t in got["window"]] == [t for _, t in TURNS]
        assert got["last_seq"] == 4 and got["last_result"]["seq"] == 4 and got["model"] == "tiny@1"


async def test_window_keeps_max_turns(live, store_kind):
    srv = live(**store_kind)  # the tiny bundle's window.max_turns is 8
    async with httpx.AsyncClient(base_url=srv.url) as c:
        for seq in range(11):
            r = await post_turn(c, "call-long", seq, "customer", f"turn number {seq}")
            assert r.status_code == 200
        assert r.json()["window_turns"] == 8
        window = (await c.get("/v1/dialogues/call-long")).json()["window"]
        assert [t["seq"] for t in window] == list(range(3, 11))


async def test_stateful_scores_match_stateless_and_the_loader(live, store_kind):
    srv = live(**store_kind)
    bundle = srv.state.engine.current
    async with httpx.AsyncClient(base_url=srv.url) as c:
        stateful = [(await post_turn(c, "call-eq", seq, s, t)).json() for seq, (s, t) in enumerate(TURNS)]
        turns = [{"speaker": s, "text": t} for s, t in TURNS]
        last = (await c.post("/v1/score", json={"turns": turns})).json()
        every = (await c.post("/v1/score", json={"turns": turns, "all": True})).json()
    assert last["scores"] == stateful[-1]["scores"] and last["window_turns"] == 5
    assert [t["scores"] for t in every["turns"]] == [s["scores"] for s in stateful]
    expected = bundle.predict([turns[: i + 1] for i in range(len(turns))])  # the loader, no service
    assert [t["labels"] for t in every["turns"]] == [e["labels"] for e in expected]
    for got, exp in zip(every["turns"], expected, strict=True):
        for task, probs in exp["scores"].items():
            for label, p in probs.items():
                assert got["scores"][task][label] == pytest.approx(p, abs=1e-5)


async def test_retry_with_same_text_returns_stored_result_and_adds_nothing(live, store_kind):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        await post_turn(c, "call-r", 0, "agent", "hello")
        first = (await post_turn(c, "call-r", 1, "customer", "my card was charged twice")).json()
        batches = srv.state.engine.batches
        again = await post_turn(c, "call-r", 1, "customer", "my card was charged twice")
        assert again.status_code == 200
        body = again.json()
        assert {k: v for k, v in body.items() if k != "timings_ms"} == {
            k: v for k, v in first.items() if k != "timings_ms"
        }
        assert srv.state.engine.batches == batches  # not recomputed
        window = (await c.get("/v1/dialogues/call-r")).json()["window"]
        assert [t["seq"] for t in window] == [0, 1]


async def test_conflicting_and_stale_seq_are_409(live, store_kind):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        await post_turn(c, "call-c", 0, "agent", "hello")
        await post_turn(c, "call-c", 1, "customer", "hi")
        other = await post_turn(c, "call-c", 1, "customer", "something else")
        assert other.status_code == 409
        assert other.json()["error_type"] == "conflict" and "different" in other.json()["error"]
        stale = await post_turn(c, "call-c", 0, "agent", "hello")
        assert stale.status_code == 409 and "older than the last seq 1" in stale.json()["error"]
        window = (await c.get("/v1/dialogues/call-c")).json()["window"]
        assert [t["text"] for t in window] == ["hello", "hi"]
        metrics = (await c.get("/metrics")).text
        # failures are in the one request counter, by endpoint and outcome (the error kind)
        assert 'turnwise_requests_total{endpoint="turns",outcome="conflict"} 2.0' in metrics
        assert 'turnwise_requests_total{endpoint="turns",outcome="scored"} 2.0' in metrics
        assert 'turnwise_requests_total{endpoint="dialogue",outcome="ok"} 1.0' in metrics


@pytest.mark.parametrize("bad_id", ["a b", "x" * 129, "call{1}", "call*1", "caf%C3%A9"])
async def test_bad_dialogue_id_is_422(live, bad_id):
    srv = live()
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.post(f"/v1/dialogues/{bad_id}/turns", json={"seq": 0, "speaker": "agent", "text": "hi"})
        assert r.status_code == 422, (bad_id, r.status_code)
        assert r.json()["error_type"] == "invalid" and "dialogue_id" in r.json()["error"]
        assert (await c.get(f"/v1/dialogues/{bad_id}")).status_code == 422
    ok = "A-z.0_9:-" * 14  # 126 characters of the allowed alphabet
    async with httpx.AsyncClient(base_url=srv.url) as c:
        assert (await post_turn(c, ok, 0, "agent", "hi")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"seq": -1, "speaker": "agent", "text": "hi"},
        {"seq": "1", "speaker": "agent", "text": "hi"},
        {"seq": 1.5, "speaker": "agent", "text": "hi"},
        {"seq": 0, "speaker": "", "text": "hi"},
        {"seq": 0, "speaker": "agent", "text": "   "},
        {"seq": 0, "speaker": "agent"},
        {"seq": 0, "speaker": "agent", "text": "hi", "extra": 1},
    ],
)
async def test_bad_turn_body_is_422(live, body):
    srv = live()
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.post("/v1/dialogues/call-v/turns", json=body)
        assert r.status_code == 422
        assert set(r.json()) == {"error", "error_type"} and r.json()["error_type"] == "invalid"
        assert (
            await c.post(
                "/v1/dialogues/call-v/turns", content=b"{not json", headers={"content-type": "application/json"}
            )
        ).status_code == 422


async def test_limits_are_413(live):
    srv = live(max_text_chars=50, max_body_bytes=4096, max_turns_per_request=3)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await post_turn(c, "call-big", 0, "customer", "x" * 51)
        assert r.status_code == 413 and r.json()["error_type"] == "too_large" and "limit is 50" in r.json()["error"]
        assert (await post_turn(c, "call-big", 0, "customer", "x" * 50)).status_code == 200
        r = await c.post(
            "/v1/dialogues/call-big/turns",
            content=b'{"seq": 1, "speaker": "a", "text": "' + b"y" * 5000 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        turns = [{"speaker": "agent", "text": "hi"}] * 4
        r = await c.post("/v1/score", json={"turns": turns})
        assert r.status_code == 413
        assert (await c.get("/v1/dialogues/call-big")).json()["last_seq"] == 0  # nothing stored by the 413s


async def test_auth(live):
    srv = live(api_keys="key-one,key-two")
    async with httpx.AsyncClient(base_url=srv.url) as c:
        turn = {"seq": 0, "speaker": "agent", "text": "hi"}
        r = await c.post("/v1/dialogues/call-a/turns", json=turn)
        assert r.status_code == 401 and r.json()["error_type"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"
        bad = await c.post("/v1/dialogues/call-a/turns", json=turn, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert (await c.get("/v1/dialogues/call-a", headers={"Authorization": "key-one"})).status_code == 401
        assert (await c.post("/v1/score", json={"turns": [turn]})).status_code == 401
        assert (await c.post("/v1/feedback", json={})).status_code == 401
        ok = await c.post("/v1/dialogues/call-a/turns", json=turn, headers={"Authorization": "Bearer key-two"})
        assert ok.status_code == 200
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200


async def test_get_unknown_is_404_and_delete_ends_the_call(live, store_kind):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.get("/v1/dialogues/nobody")
        assert r.status_code == 404 and r.json()["error_type"] == "not_found"
        await post_turn(c, "call-d", 0, "agent", "hi")
        r = await c.delete("/v1/dialogues/call-d")
        assert r.status_code == 204 and r.content == b""
        assert (await c.get("/v1/dialogues/call-d")).status_code == 404
        assert (await c.delete("/v1/dialogues/call-d")).status_code == 204
        assert (await post_turn(c, "call-d", 0, "agent", "a new call")).json()["window_turns"] == 1


async def test_feedback_goes_to_the_stream(live, store_kind):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        fb = {"dialogue_id": "call-f", "seq": 3, "task": "act", "label": "question"}
        r = await c.post("/v1/feedback", json=fb)
        assert r.status_code == 202 and r.json()["status"] == "accepted"
        assert r.json()["context"] == "missing"  # no such call: recorded, but nothing to train on
        # A live call: the feedback carries the window up to its turn, as the model saw it.
        for seq, text in enumerate(["hello", "my card is blocked", "can you help?"]):
            assert (await post_turn(c, "call-w", seq, "customer", text)).status_code == 200
        r = await c.post("/v1/feedback", json={**fb, "dialogue_id": "call-w", "seq": 1})
        assert r.status_code == 202 and r.json()["context"] == "window"
        for bad in (
            {**fb, "task": "nope"},
            {**fb, "label": "nope"},
            {**fb, "label": ["inform", "question"]},
            {**fb, "dialogue_id": "bad id"},
        ):
            assert (await c.post("/v1/feedback", json=bad)).status_code == 422
    store = srv.state.store
    if store_kind["redis_url"]:
        entries = await _xrange(store_kind["redis_url"], "tw:feedback")
        assert len(entries) == 2
        snapshot = entries[1][1]
        assert entries[0][1] | {"ts": "x"} == {
            "dialogue_id": "call-f",
            "seq": "3",
            "task": "act",
            "label": "question",
            "model": "tiny@1",
            "ts": "x",
        }
    else:
        assert [rec for _, rec in store.feedback][:1] == [
            {"dialogue_id": "call-f", "seq": "3", "task": "act", "label": "question", "model": "tiny@1"}
        ]
        snapshot = store.feedback[1][1]
    assert json.loads(snapshot["window"]) == [
        {"seq": 0, "speaker": "customer", "text": "hello"},
        {"seq": 1, "speaker": "customer", "text": "my card is blocked"},
    ]


async def _xrange(url: str, key: str):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return await client.xrange(key)
    finally:
        await client.aclose()


async def test_probes_and_metrics(live, store_kind):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = (await c.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["model"]["version"] == "1"
        assert ready["store"] == ("redis" if store_kind["redis_url"] else "memory")
        await post_turn(c, "call-m", 0, "agent", "hi")
        text = (await c.get("/metrics")).text
        for stage in ("queue", "store", "tokenize", "inference"):
            assert f'turnwise_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text
        assert 'turnwise_requests_total{endpoint="turns",outcome="scored"} 1.0' in text
        assert 'turnwise_model_info{name="tiny",variant="fp32",version="1"} 1.0' in text
        assert "turnwise_batch_size_bucket" in text
        assert 'turnwise_request_duration_seconds_count{endpoint="turns"} 1.0' in text
        assert "turnwise_store_up 1.0" in text  # set by the readiness check and by the turn
        # the standard process and GC collectors: CPU, RSS, collections
        for series in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_collections_total"):
            assert series in text, series
        labels = [line for line in text.splitlines() if line.startswith("turnwise_labels_total{")]
        assert {line.split('task="')[1].split('"')[0] for line in labels} == {"intent", "act", "sentiment"}
        # probes and /metrics are not API requests
        assert "readyz" not in text and 'endpoint="other"' not in text
        assert all(
            line.startswith(("#", "turnwise_", "python_")) or not line
            for line in text.splitlines()
            if not line.startswith("process_")
        )
        assert (await c.get("/docs")).status_code == 200
        spec = (await c.get("/openapi.json")).json()
        assert "/v1/dialogues/{dialogue_id}/turns" in spec["paths"] and "/v1/score" in spec["paths"]


async def test_concurrent_turns_of_one_dialogue_keep_their_order(live, store_kind):
    srv = live(**store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        responses = await asyncio.gather(
            *(post_turn(c, "call-cc", seq, "customer", f"utterance {seq}") for seq in range(16))
        )
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 409}
        accepted = [seq for seq, r in enumerate(responses) if r.status_code == 200]
        assert accepted  # at least the first to arrive
        for r in responses:
            if r.status_code == 409:
                assert "older than the last seq" in r.json()["error"]
        window = (await c.get("/v1/dialogues/call-cc")).json()["window"]
        seqs = [t["seq"] for t in window]
        assert seqs == sorted(seqs) == accepted[-8:]
        assert all(t["text"] == f"utterance {t['seq']}" for t in window)
        # each accepted turn was scored on the window that ended with it
        for rank, seq in enumerate(accepted):
            assert responses[seq].json()["window_turns"] == min(rank + 1, 8)


async def test_429_when_saturated(live):
    # A long batch wait keeps requests inside the serving path, so the third concurrent one finds it full.
    srv = live(max_queue=2, max_batch_wait_ms=300, max_batch_size=64, retry_after_s=2)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        responses = await asyncio.gather(*(post_turn(c, f"call-s{i}", 0, "agent", "hi") for i in range(10)))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) == {200, 429}
        for r in responses:
            if r.status_code == 429:
                assert r.headers["retry-after"] == "2" and r.json()["error_type"] == "overloaded"
        refused = [i for i, r in enumerate(responses) if r.status_code == 429]
        # a refused turn left nothing behind: it can be sent again
        r = await post_turn(c, f"call-s{refused[0]}", 0, "agent", "hi")
        assert r.status_code == 200 and r.json()["window_turns"] == 1


async def test_504_when_the_budget_passes_before_inference(live):
    srv = live(latency_budget_ms=5, max_batch_wait_ms=100)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        batches = srv.state.engine.batches
        r = await post_turn(c, "call-slow", 0, "agent", "hi")
        assert r.status_code == 504 and r.json()["error_type"] == "deadline_exceeded"
        assert srv.state.engine.batches == batches  # never computed
        text = (await c.get("/metrics")).text
        assert "turnwise_expired_total 1.0" in text
        assert 'turnwise_requests_total{endpoint="turns",outcome="deadline_exceeded"} 1.0' in text


async def test_redis_down_is_503_then_recovers_without_corrupting_the_window(live, redis_server):
    srv = live(redis_url=redis_server.url, redis_timeout_s=0.3)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        for seq in range(2):
            assert (await post_turn(c, "call-x", seq, *TURNS[seq])).status_code == 200
        await _redis_save(redis_server.url)  # so the restarted server comes back with the data
        redis_server.stop()
        r = await post_turn(c, "call-x", 2, *TURNS[2])
        assert r.status_code == 503
        assert r.json()["error_type"] == "store_unavailable" and "Redis" in r.json()["error"]
        assert (await c.get("/v1/dialogues/call-x")).status_code == 503
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error_type"] == "store_unavailable"
        redis_server.start()
        assert (await c.get("/readyz")).status_code == 200
        r = await post_turn(c, "call-x", 2, *TURNS[2])  # the client retries the failed turn
        assert r.status_code == 200 and r.json()["window_turns"] == 3
        got = (await c.get("/v1/dialogues/call-x")).json()
        assert [(t["seq"], t["speaker"], t["text"]) for t in got["window"]] == [
            (i, s, t) for i, (s, t) in enumerate(TURNS[:3])
        ]
        assert got["last_result"]["seq"] == 2


async def _redis_save(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.save()
    finally:
        await client.aclose()
