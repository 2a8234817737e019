"""The micro-batcher: owns its loop, a bounded queue, and one future per request.

- Admission control (:meth:`MicroBatcher.admit`) by time: a request is admitted only if its
  predicted wait -- the requests ahead of it and itself times the measured per-item service time of
  the bundle (an exponentially weighted moving average over recent batches) -- fits
  :data:`QUEUE_SHARE` of the time left to its deadline; otherwise it is refused at once with
  ``overloaded`` (429), ``retry_after`` being the
  predicted time until the backlog fits a fresh budget. ``max_queue`` stays a hard cap on requests
  inside the serving path. A request that finds nothing in flight always runs. Admission also binds
  the request's deadline for the store calls made inside it (:mod:`service.store.deadline`).
- A batch is cut at ``max_batch_size`` sequences, at ``max_batch_tokens`` padded tokens (batch size x
  longest sequence), or ``max_batch_wait_s`` after its first request arrived, whichever comes first.
  The wait only matters when the model is idle: while a batch runs, the next one fills up.
- Every request carries a deadline; one that passed before its batch is cut is failed with
  ``deadline_exceeded`` (504) and never computed.
- A batch holds requests tokenized by one bundle (a hot reload swaps bundles between batches).
- The model call gets the token ids of the batch; if it raises, every future of the batch fails; if it
  returns a different number of rows than inputs, every future fails too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.errors import ErrorKind, ServiceError
from service.store.deadline import bound_by

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("turnwise.service")

# A request's payload: token ids (flat bundles) or a bundle.streaming.StepRequest (streaming bundles);
# its len() is what the token budget counts. The model call returns one row per payload.
InferFn = Callable[[Any, list[Any]], Awaitable[list[Any]]]
EWMA_ALPHA = 0.2  # weight of the newest batch in the per-item service time estimate
EWMA_BUNDLES = 4  # estimates kept (the serving bundle and the few before a hot reload)
# Of the time left to a request's deadline, the share its predicted model wait may fill; the rest is for
# what the estimate does not see (store calls, tokenizing, the event loop). Measured at 2x overload
# (benchmarks/overload.py --text-repeat 16, MiniLM streaming, 2 cores, one run each): a share of 1.0 put
# admitted p99 at 1166 ms, 0.8 at 1042 ms, 0.7 at 979 ms for a 1000 ms budget.
QUEUE_SHARE = 0.7


@dataclass
class _Item:
    bundle: Any
    ids: Any  # token ids, or a StepRequest
    deadline: float  # time.monotonic() seconds
    future: asyncio.Future[tuple[Any, dict[str, float]]]
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 8192,
        max_wait_s: float = 0.002,
        max_queue: int = 256,
        retry_after_s: int = 1,
        budget_s: float = 1.0,
        metrics: Metrics | None = None,
    ):
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.budget_s = budget_s
        self.metrics = metrics
        # id(bundle) -> EWMA of model seconds per queued item: by id, so that an estimate never keeps a
        # replaced bundle (its ONNX session) alive.
        self._item_s: dict[int, float] = {}
        self._latest: int | None = None  # id of the last batch's bundle: its estimate serves admit(bundle=None)
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._admitted = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # --- admission -----------------------------------------------------------------------------
    @property
    def admitted(self) -> int:
        return self._admitted

    def item_seconds(self, bundle: Any = None) -> float | None:
        """The estimated model time per queued item of ``bundle`` (default: the last one that ran);
        None before its first batch."""
        key = self._latest if bundle is None else id(bundle)
        return None if key is None else self._item_s.get(key)

    def predicted_wait(self, weight: int = 1, bundle: Any = None) -> float | None:
        """Seconds until a request of ``weight`` items admitted now would be answered by the model."""
        per_item = self.item_seconds(bundle)
        return None if per_item is None else (self._admitted + weight) * per_item

    @contextlib.contextmanager
    def admit(self, weight: int = 1, *, deadline: float | None = None, bundle: Any = None) -> Iterator[None]:
        """Hold ``weight`` slots of the serving path for the duration of a request, or raise 429 now.

        ``deadline`` (``time.monotonic()`` seconds; default: now + the latency budget) is what the
        predicted wait must fit; store calls inside the block are bounded by it."""
        if self._stopping:
            raise ServiceError(ErrorKind.model_unavailable, "shutting down: not accepting new work")
        if deadline is None:
            deadline = time.monotonic() + self.budget_s
        # A request heavier than the whole queue (a long POST /v1/score) still runs when it is alone.
        if self._admitted > 0:
            self._refuse_if_late(weight, deadline, bundle)
        self._admitted += weight
        self._gauge_inflight()
        try:
            with bound_by(deadline):
                yield
        finally:
            self._admitted -= weight
            self._gauge_inflight()

    def _refuse_if_late(self, weight: int, deadline: float, bundle: Any) -> None:
        if self._admitted + weight > self.max_queue:
            raise ServiceError(
                ErrorKind.overloaded,
                f"overloaded: {self._admitted} requests in flight (limit {self.max_queue}); retry shortly",
                retry_after=self.retry_after_s,
            )
        wait = self.predicted_wait(weight, bundle)
        left = deadline - time.monotonic()
        if wait is not None and wait > left * QUEUE_SHARE:
            # When a fresh budget fits the backlog ahead (which drains at the same per-item rate).
            retry = max(wait - self.budget_s, self.item_seconds(bundle) or 0.0)
            raise ServiceError(
                ErrorKind.overloaded,
                f"overloaded: predicted wait {wait * 1000:.0f} ms for {self._admitted} requests ahead "
                f"exceeds the {max(left, 0.0) * 1000:.0f} ms left of the budget; retry after {retry:.3f} s",
                retry_after=math.ceil(retry * 1000) / 1000,
            )

    def _gauge_inflight(self) -> None:
        if self.metrics is not None:
            self.metrics.inflight.set(self._admitted)

    # --- submission ----------------------------------------------------------------------------
    async def submit(self, bundle: Any, ids: Any, deadline: float) -> tuple[Any, dict[str, float]]:
        """Queue one token-id sequence (or step request); returns (its row: decoded scores, or a step's
        logits and keys/values; timings in ms: queue, inference, batch_size)."""
        if self._task is None or self._task.done():
            raise ServiceError(ErrorKind.model_unavailable, "batcher is not running")
        item = _Item(bundle, ids, deadline, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._wakeup.set()
        return await item.future

    # --- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="turnwise-batcher")

    async def stop(self) -> None:
        """Stop admitting, finish everything queued (graceful drain), then end the loop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._fill()
                batch = self._cut()
                if batch:
                    await self._execute(batch)
            except Exception:  # a bug here must not kill the loop that every request depends on
                log.exception("batcher cycle failed")

    async def _fill(self) -> None:
        """Wait (at most max_wait after the first request arrived) for the batch to fill up."""
        first = self._queue[0]
        while len(self._queue) < self.max_batch_size and not self._stopping:
            remaining = first.enqueued + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _cut(self) -> list[_Item]:
        batch: list[_Item] = []
        longest = 0
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue[0]
            if item.future.done():  # the caller went away (client disconnected)
                self._queue.popleft()
                continue
            if item.deadline <= now:
                self._queue.popleft()
                self._expire(item, now)
                continue
            if batch and item.bundle is not batch[0].bundle:
                break
            new_longest = max(longest, len(item.ids))
            if batch and new_longest * (len(batch) + 1) > self.max_batch_tokens:
                break
            batch.append(self._queue.popleft())
            longest = new_longest
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _expire(self, item: _Item, now: float) -> None:
        waited = (now - item.enqueued) * 1000
        if self.metrics is not None:  # the time it spent queued is in the stage histogram all the same
            self.metrics.stage_duration.labels(stage="queue").observe(waited / 1000.0)
        item.future.set_exception(
            ServiceError(
                ErrorKind.deadline_exceeded,
                f"latency budget exceeded before inference (queued {waited:.0f} ms)",
            )
        )
        if self.metrics is not None:
            self.metrics.expired.inc()

    def observe(self, bundle: Any, per_item_s: float) -> None:
        """Fold one batch's model seconds per item into the bundle's estimate (every batch does; an
        operator or a test may prime the estimate the same way)."""
        key = id(bundle)
        old = self._item_s.pop(key, None)  # re-inserted last: the dict stays oldest-first
        self._item_s[key] = per_item_s if old is None else old + EWMA_ALPHA * (per_item_s - old)
        self._latest = key
        while len(self._item_s) > EWMA_BUNDLES:
            del self._item_s[next(iter(self._item_s))]

    async def _execute(self, batch: list[_Item]) -> None:
        seqs = [item.ids for item in batch]
        started = time.monotonic()
        try:
            rows = await self._infer(batch[0].bundle, seqs)
            if len(rows) != len(batch):
                raise ServiceError(
                    ErrorKind.model_unavailable, f"model returned {len(rows)} results for {len(batch)} inputs"
                )
        except Exception as err:  # one failure fails every request of the batch, each with the cause
            if not isinstance(err, ServiceError):
                log.exception("batch of %d failed", len(batch))
                err = ServiceError(ErrorKind.model_unavailable, f"inference failed ({type(err).__name__})")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        finished = time.monotonic()
        inference_ms = (finished - started) * 1000
        self.observe(batch[0].bundle, (finished - started) / len(batch))
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_tokens.observe(sum(len(s) for s in seqs))
        for item, row in zip(batch, rows, strict=True):
            if not item.future.done():
                item.future.set_result(
                    (
                        row,
                        {
                            "queue": (started - item.enqueued) * 1000,
                            "inference": inference_ms,
                            "batch_size": float(len(batch)),
                        },
                    )
                )
