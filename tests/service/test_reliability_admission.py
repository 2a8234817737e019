"""Admission by time: a request is refused 429 at once when its predicted wait (requests ahead x the
measured per-item model time) exceeds the time left to its deadline, never otherwise; Retry-After comes
from the same estimate. The model is a slow fake at the model-call boundary, or the real tiny bundle
with the estimate primed."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import httpx
import pytest
import websockets

from service.batcher import MicroBatcher
from service.errors import ErrorKind, ServiceError

BUNDLE = object()


class SlowModel:
    """Stands in for Engine.infer: ``per_item_s`` of model time per sequence, one row each."""

    def __init__(self, per_item_s: float):
        self.per_item_s = per_item_s
        self.calls = 0

    async def __call__(self, bundle: Any, seqs: list[Any]) -> list[dict[str, Any]]:
        self.calls += 1
        await asyncio.sleep(self.per_item_s * len(seqs))
        return [{"echo": s[0]} for s in seqs]


async def primed_batcher(per_item_s: float = 0.05, budget_s: float = 1.0) -> MicroBatcher:
    """A running batcher whose estimate was learnt from one real batch of the slow model."""
    b = MicroBatcher(SlowModel(per_item_s), max_batch_size=4, max_queue=1000, budget_s=budget_s)
    b.start()
    await b.submit(BUNDLE, [1], time.monotonic() + 10)
    return b


async def test_no_estimate_admits_everything_up_to_max_queue():
    b = MicroBatcher(SlowModel(0.01), max_queue=3)
    assert b.item_seconds() is None and b.predicted_wait() is None
    with b.admit(deadline=time.monotonic() + 1e-6), b.admit(deadline=time.monotonic() + 1e-6), b.admit():
        assert b.admitted == 3


async def test_estimate_is_learnt_from_batches_per_bundle():
    b = await primed_batcher(per_item_s=0.05)
    try:
        est = b.item_seconds(BUNDLE)
        assert est is not None and est >= 0.05  # a sleep never returns early
        assert b.item_seconds() == est  # the last bundle that ran is the default
        assert b.item_seconds(object()) is None  # another bundle has its own (none yet)
        b.observe(BUNDLE, est + 1.0)  # an exponentially weighted step towards the new sample
        assert est < b.item_seconds(BUNDLE) < est + 1.0
    finally:
        await b.stop()


@pytest.mark.parametrize("ahead", [1, 3, 7])
async def test_refused_exactly_when_the_predicted_wait_exceeds_the_time_left(ahead: int):
    b = await primed_batcher()
    try:
        est = b.item_seconds()
        assert est is not None
        with Holding(b, ahead):
            wait = b.predicted_wait()
            assert wait == pytest.approx((ahead + 1) * est)
            # Fits, with room to spare: admitted, no error.
            with b.admit(deadline=time.monotonic() + 2 * wait):
                assert b.admitted == ahead + 1
            # Does not fit: 429 at once, Retry-After from the same estimate.
            with pytest.raises(ServiceError) as info, b.admit(deadline=time.monotonic() + wait / 2):
                pass
            err = info.value
            assert err.kind is ErrorKind.overloaded and err.status == 429
            assert "predicted wait" in err.message
            assert err.retry_after == pytest.approx(max(wait - b.budget_s, est), abs=1e-3)
            assert err.headers() == {"Retry-After": str(max(1, math.ceil(err.retry_after)))}
            assert b.admitted == ahead  # a refusal holds nothing
    finally:
        await b.stop()


async def test_a_request_alone_always_runs():
    b = await primed_batcher()
    try:
        b.observe(BUNDLE, 100.0)  # far slower than any budget
        with b.admit(deadline=time.monotonic() + 0.001):
            assert b.admitted == 1
    finally:
        await b.stop()


async def test_retry_after_grows_with_the_backlog():
    b = await primed_batcher(budget_s=0.5)
    try:
        b.observe(BUNDLE, 1.0)
        b.observe(BUNDLE, 1.0)
        retries = []
        for ahead in (2, 6):
            with Holding(b, ahead), pytest.raises(ServiceError) as info, b.admit():
                pass
            retries.append(info.value.retry_after)
        est = b.item_seconds()
        assert est is not None and retries[0] < retries[1]
        assert retries == [pytest.approx(max((a + 1) * est - 0.5, est), abs=1e-3) for a in (2, 6)]
    finally:
        await b.stop()


class Holding:
    """Hold ``n`` admissions (requests in flight) for the block."""

    def __init__(self, b: MicroBatcher, n: int):
        self.b, self.n = b, n
        self.held: list[Any] = []

    def __enter__(self) -> None:
        for _ in range(self.n):
            cm = self.b.admit(deadline=time.monotonic() + 1e9)
            cm.__enter__()
            self.held.append(cm)

    def __exit__(self, *exc: object) -> None:
        for cm in reversed(self.held):
            cm.__exit__(None, None, None)


async def test_live_service_answers_429_with_retry_after_from_the_estimate(live):
    # A long batch wait keeps the first request in flight while the others arrive; the estimate says
    # each costs 10 s of model time, so a second request cannot fit the 1 s budget.
    srv = live(max_batch_wait_ms=300, max_batch_size=64, latency_budget_ms=1000)
    batcher = srv.state.engine.batcher
    batcher.observe(srv.state.engine.current, 10.0)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        responses = await asyncio.gather(*(
            c.post(f"/v1/dialogues/call-a{i}/turns", json={"seq": 0, "speaker": "agent", "text": "hi"})
            for i in range(6)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) == {200, 429}
        for r in responses:
            if r.status_code == 429:
                body = r.json()
                assert body["error_type"] == "overloaded" and "predicted wait" in body["error"]
                # (1+ ahead + itself) x the estimate (10 s, decaying by a fifth per real batch) - the budget;
                # the configured TURNWISE_RETRY_AFTER_S (1) is not what a predicted-wait refusal sends
                assert int(r.headers["retry-after"]) >= 5
        text = (await c.get("/metrics")).text
        assert f'turnwise_requests_total{{endpoint="turns",outcome="overloaded"}} {codes.count(429)}.0' in text


async def test_live_stream_refusal_is_an_overloaded_frame_with_retry_after(live):
    srv = live(max_batch_wait_ms=300, max_batch_size=64, latency_budget_ms=1000)
    srv.state.engine.batcher.observe(srv.state.engine.current, 10.0)
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        for i in range(2):
            await ws.send(json.dumps({"type": "turn", "dialogue_id": f"call-w{i}", "seq": 0, "speaker": "agent",
                                      "text": "hi"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 20))
        second = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert first["type"] == "scores" and first["dialogue_id"] == "call-w0"
    assert second["type"] == "error" and second["code"] == "overloaded"
    assert second["dialogue_id"] == "call-w1" and second["seq"] == 0
    assert second["retry_after_s"] > 1.0
