"""Scoring a turn with a turn-causal (streaming) bundle: the call's cached keys/values, one step per turn.

Per turn, under a per-call lock (a call's turns are steps of one chain, so they run in order):

1. token ids of the stored window's turns (the window holds every turn of the current span; the
   engine's tokenizer cache makes the earlier turns free);
2. the span's anchor: the later of the one recorded in the store (Redis meta ``anchor``) and the one
   of this replica's cached state;
3. :func:`bundle.streaming.plan_turn` decides: ``incremental`` (the cached state holds exactly the
   span's earlier turns: encode the new turn only), ``rebuilt`` (no state here -- a new call, a
   replica hop, an eviction, a reload -- or a re-anchor: encode the span in one pass), or
   ``cached`` (a duplicate retry of the turn the state already holds: nothing runs, nothing advances);
4. the step rides the micro-batcher with every other call's steps; the state is cached again.

``timings_ms`` of the turn carries the model time under the mode's name (``incremental``,
``rebuilt`` or ``cached``), and the ``turnwise_stream_steps_total{mode}`` counter counts them.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from asyncio import Lock
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bundle.streaming import StepRequest, advance, plan_turn
from service.state_cache import StateCache
from turnwise.names import StoredTurn
from turnwise.scoring import decode
from turnwise.window import plan_spans

if TYPE_CHECKING:
    from bundle.loader import LoadedBundle
    from service.batcher import MicroBatcher
    from service.engine import Engine
    from service.metrics import Metrics


def bundle_key(bundle: LoadedBundle) -> str:
    return f"{bundle.name}@{bundle.version}:{bundle.variant}:{id(bundle)}"


def anchor_index(seqs: Sequence[int], anchors: Sequence[int | None]) -> int:
    """Index of the span's first turn in the window: the latest known anchor present in it (else 0)."""
    known = [a for a in anchors if a is not None]
    if not known:
        return 0
    anchor = max(known)
    return next((i for i, s in enumerate(seqs) if s >= anchor), len(seqs) - 1)


class StreamScorer:
    def __init__(self, engine: Engine, batcher: MicroBatcher, cache_bytes: int, metrics: Metrics | None = None):
        self.engine = engine
        self.batcher = batcher
        self.cache = StateCache(cache_bytes)
        self.metrics = metrics
        self._locks: weakref.WeakValueDictionary[str, Lock] = weakref.WeakValueDictionary()
        self._evictions_seen = 0

    def _lock(self, dialogue_id: str) -> Lock:
        lock = self._locks.get(dialogue_id)
        if lock is None:
            lock = self._locks[dialogue_id] = Lock()
        return lock

    async def score_turn(self, bundle: LoadedBundle, dialogue_id: str, window: list[StoredTurn],
                         stored_anchor: int | None,
                         deadline: float) -> tuple[dict[str, Any], dict[str, float], int, int]:
        """-> (decoded row, timings ms, anchor seq of the turn's span, turns in the span)."""
        lock = self._lock(dialogue_id)  # held in a local: the weak dictionary keeps it while we wait
        async with lock:
            t0 = time.perf_counter()
            ids = self.engine.turn_ids(bundle, window)
            seqs = [t.seq for t in window]
            key = (bundle_key(bundle), dialogue_id)
            state = self.cache.get(key)
            self._count_lookup(state is not None)
            start_i = anchor_index(seqs, [stored_anchor, state.anchor_seq if state is not None else None])
            request, start, mode = plan_turn(state, seqs, ids, start_i, bundle.window, bundle.kv_shape)
            timings = {"tokenize": (time.perf_counter() - t0) * 1000}
            if request is None:
                assert state is not None
                logits = {t: v[None] for t, v in state.last_logits.items()}
                timings.update(queue=0.0, inference=0.0, cached=0.0)
            else:
                (logits, new_kv), bt = await self.batcher.submit(bundle, request, deadline)
                state = advance(state, mode, seqs, start, logits, new_kv)
                self.cache.put(key, state)
                timings.update(queue=bt["queue"], inference=bt["inference"])
                timings[mode] = bt["inference"]
            self._count_step(mode)
            row = decode(bundle.schema, {t: np.asarray(v[-1:], dtype=np.float32) for t, v in logits.items()})[0]
            return row, timings, state.anchor_seq, len(seqs) - start

    async def score_dialogue(self, bundle: LoadedBundle, turns: Sequence[Any], deadline: float,
                             every: bool) -> list[tuple[dict[str, Any], int]]:
        """Stateless scoring of a list of turns: one pass per span (the spans training used); the last
        turn only, or every turn. -> [(decoded row, turns in its span)]."""
        ids = self.engine.turn_ids(bundle, list(turns))
        spans = plan_spans([len(t) for t in ids], bundle.window)
        if not every:
            spans = spans[-1:]
        outs = await asyncio.gather(*(
            self.batcher.submit(bundle, StepRequest(ids[s.start : s.end], _empty(bundle)), deadline) for s in spans))
        rows: list[tuple[dict[str, Any], int]] = []
        for span, ((logits, _), _bt) in zip(spans, outs, strict=True):
            first = span.first - span.start if every else span.end - 1 - span.start
            part = {t: np.asarray(v[first:], dtype=np.float32) for t, v in logits.items()}
            for k, row in enumerate(decode(bundle.schema, part)):
                rows.append((row, first + k + 1))
        return rows

    def forget(self, dialogue_id: str) -> None:
        self.cache.drop_dialogue(dialogue_id)
        self._gauge()

    def _count_lookup(self, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.state_cache.labels(result="hit" if hit else "miss").inc()

    def _count_step(self, mode: str) -> None:
        if self.metrics is not None:
            self.metrics.stream_steps.labels(mode=mode).inc()
            self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.state_cache_bytes.set(self.cache.bytes)
            self.metrics.state_cache_entries.set(len(self.cache))
            self.metrics.state_cache_evictions.inc(self.cache.counts.evictions - self._evictions_seen)
            self._evictions_seen = self.cache.counts.evictions


def _empty(bundle: LoadedBundle) -> np.ndarray:
    return np.zeros((0, *bundle.kv_shape), dtype=np.float32)
