"""The micro-batcher on its own, with a recording model function (the real model is in the e2e tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.batcher import MicroBatcher
from service.errors import ErrorKind, ServiceError

BUNDLE = object()


class Recorder:
    """Stands in for Engine.infer: records each batch, answers one row per sequence."""

    def __init__(self, delay: float = 0.0, fail: bool = False, short: bool = False):
        self.batches: list[list[list[int]]] = []
        self.delay = delay
        self.fail = fail
        self.short = short

    async def __call__(self, bundle: Any, seqs: list[list[int]]) -> list[dict[str, Any]]:
        self.batches.append(seqs)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        rows = [{"echo": s[0]} for s in seqs]
        return rows[:-1] if self.short else rows


def deadline(s: float = 5.0) -> float:
    return time.monotonic() + s


async def run_with(batcher: MicroBatcher, coro):
    batcher.start()
    try:
        return await coro
    finally:
        await batcher.stop()


async def test_each_request_gets_its_own_row_and_batches_form():
    rec = Recorder(delay=0.02)
    b = MicroBatcher(rec, max_batch_size=8, max_wait_s=0.005)
    results = await run_with(b, asyncio.gather(*(b.submit(BUNDLE, [i, 0], deadline()) for i in range(20))))
    assert [row["echo"] for row, _ in results] == list(range(20))
    assert max(len(x) for x in rec.batches) <= 8
    assert len(rec.batches) < 20  # requests were batched
    assert all(t["batch_size"] >= 1 and t["queue"] >= 0 for _, t in results)


async def test_cut_by_tokens():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=64, max_batch_tokens=100, max_wait_s=0.05)
    await run_with(b, asyncio.gather(*(b.submit(BUNDLE, [i] * 30, deadline()) for i in range(10))))
    assert all(len(batch) * max(len(s) for s in batch) <= 100 for batch in rec.batches)
    assert sum(len(x) for x in rec.batches) == 10


async def test_cut_by_wait_when_idle():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=64, max_wait_s=0.05)
    t0 = time.monotonic()
    row, _ = await run_with(b, b.submit(BUNDLE, [1], deadline()))
    assert row == {"echo": 1}
    assert 0.04 <= time.monotonic() - t0 < 1.0


async def test_failed_batch_fails_every_future():
    b = MicroBatcher(Recorder(fail=True), max_batch_size=8, max_wait_s=0.01)
    results = await run_with(
        b, asyncio.gather(*(b.submit(BUNDLE, [i], deadline()) for i in range(5)), return_exceptions=True)
    )
    assert all(isinstance(r, ServiceError) and r.kind is ErrorKind.model_unavailable for r in results)


async def test_output_count_mismatch_fails_the_batch():
    b = MicroBatcher(Recorder(short=True), max_batch_size=8, max_wait_s=0.01)
    results = await run_with(
        b, asyncio.gather(*(b.submit(BUNDLE, [i], deadline()) for i in range(3)), return_exceptions=True)
    )
    assert all(isinstance(r, ServiceError) and "2 results for 3 inputs" in r.message for r in results)


async def test_expired_request_is_504_and_never_computed():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=8, max_wait_s=0.05)
    with pytest.raises(ServiceError) as info:
        await run_with(b, b.submit(BUNDLE, [7], time.monotonic() + 0.001))
    assert info.value.kind is ErrorKind.deadline_exceeded and info.value.status == 504
    assert rec.batches == []


async def test_admission_refuses_at_once_when_full():
    b = MicroBatcher(Recorder(), max_queue=2, retry_after_s=3)
    with b.admit(), b.admit():
        with pytest.raises(ServiceError) as info, b.admit():
            pass
        assert info.value.status == 429 and info.value.headers() == {"Retry-After": "3"}
    with b.admit():  # slots come back
        assert b.admitted == 1
    assert b.admitted == 0


async def test_batches_never_mix_bundles():
    rec = Recorder(delay=0.01)
    b = MicroBatcher(rec, max_batch_size=16, max_wait_s=0.02)
    other = object()
    await run_with(b, asyncio.gather(*(b.submit(BUNDLE if i % 2 else other, [i], deadline()) for i in range(8))))
    for batch in rec.batches:
        assert len({s[0] % 2 for s in batch}) == 1


async def test_stop_drains_queued_work_and_refuses_new():
    rec = Recorder(delay=0.02)
    b = MicroBatcher(rec, max_batch_size=2, max_wait_s=0.0)
    b.start()
    futures = [asyncio.ensure_future(b.submit(BUNDLE, [i], deadline())) for i in range(6)]
    await asyncio.sleep(0)
    await b.stop()
    assert [f.result()[0]["echo"] for f in futures] == list(range(6))
    with pytest.raises(ServiceError) as info, b.admit():
        pass
    assert info.value.kind is ErrorKind.model_unavailable
