"""The micro-batcher: owns its loop, a bounded queue, and one future per request.

- Admission control (:meth:`MicroBatcher.admit`): at most ``max_queue`` requests are inside the
  serving path at once; one more is refused at once with ``overloaded`` (429 + Retry-After) instead of
  queueing past its latency budget.
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
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.errors import ErrorKind, ServiceError

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("turnwise.service")

# A request's payload: token ids (flat bundles) or a bundle.streaming.StepRequest (streaming bundles);
# its len() is what the token budget counts. The model call returns one row per payload.
InferFn = Callable[[Any, list[Any]], Awaitable[list[Any]]]


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
        metrics: Metrics | None = None,
    ):
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._admitted = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # --- admission -----------------------------------------------------------------------------
    @property
    def admitted(self) -> int:
        return self._admitted

    @contextlib.contextmanager
    def admit(self, weight: int = 1) -> Iterator[None]:
        """Hold ``weight`` slots of the serving path for the duration of a request, or raise 429 now."""
        if self._stopping:
            raise ServiceError(ErrorKind.model_unavailable, "shutting down: not accepting new work")
        # A request heavier than the whole queue (a long POST /v1/score) still runs when it is alone.
        if self._admitted > 0 and self._admitted + weight > self.max_queue:
            raise ServiceError(
                ErrorKind.overloaded,
                f"overloaded: {self._admitted} requests in flight (limit {self.max_queue}); retry shortly",
                retry_after=self.retry_after_s,
            )
        self._admitted += weight
        self._gauge_inflight()
        try:
            yield
        finally:
            self._admitted -= weight
            self._gauge_inflight()

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
        item.future.set_exception(
            ServiceError(
                ErrorKind.deadline_exceeded,
                f"latency budget exceeded before inference (queued {waited:.0f} ms)",
            )
        )
        if self.metrics is not None:
            self.metrics.expired.inc()

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
