"""Scoring a turn with a turn-causal (streaming) bundle: the call's cached keys/values, one step per turn.

Per turn, under a per-call lock (a call's turns are steps of one chain, so they run in order):

1. token ids of the stored window's turns (the window holds every turn of the current span; the
   engine's tokenizer cache makes the earlier turns free);
2. the span's anchor: the later of the one recorded in the store (Redis meta ``anchor``) and the one
   of this replica's cached state;
3. :func:`bundle.streaming.plan_turn` replays the span rule from that anchor and decides (turns are
   matched by seq and the digest of speaker + text, so a re-used call id never meets old state):
   ``incremental`` (the cached state holds exactly the span's earlier turns: encode the new turn
   only), ``rebuilt`` (no state here -- a new call, a
   replica hop, an eviction, a reload -- or a re-anchor: encode the span in one pass), or
   ``cached`` (a duplicate retry of the turn the state already holds: nothing runs, nothing advances);
4. the step rides the micro-batcher with every other call's steps; the state is cached again.

Time spent waiting for the call's previous turn counts as ``queue``; a turn whose budget ran out
while waiting is answered ``deadline_exceeded`` without running.

``timings_ms`` of the turn carries the model time under the mode's name (``incremental``,
``rebuilt`` or ``cached``), and the ``turnwise_stream_steps_total{mode}`` counter counts them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from asyncio import Lock
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bundle.streaming import StepRequest, advance, plan_turn
from service.errors import ErrorKind, ServiceError
from service.state_cache import StateCache
from turnwise.names import StoredTurn, turn_digest
from turnwise.scoring import decode
from turnwise.window import plan_spans

if TYPE_CHECKING:
    from bundle.loader import LoadedBundle
    from service.batcher import MicroBatcher
    from service.metrics import Metrics


_loads = itertools.count()
_serials: weakref.WeakKeyDictionary[LoadedBundle, int] = weakref.WeakKeyDictionary()


def bundle_key(bundle: LoadedBundle) -> str:
    """Names one loaded bundle for as long as it lives (a reload of the same version gets a new key)."""
    serial = _serials.get(bundle)
    if serial is None:
        serial = _serials[bundle] = next(_loads)
    return f"{bundle.name}@{bundle.version}:{bundle.variant}#{serial}"


def anchor_index(seqs: Sequence[int], anchors: Sequence[int | None]) -> int:
    """Index in the window of the latest known span start (0 when none is known or plausible: an
    anchor past the newest turn belongs to something else, e.g. an earlier call with the same id)."""
    known = [a for a in anchors if a is not None and a <= seqs[-1]]
    if not known:
        return 0
    anchor = max(known)
    return next(i for i, s in enumerate(seqs) if s >= anchor)


class StreamScorer:
    def __init__(self, engine: Any, batcher: MicroBatcher, cache_bytes: int, metrics: Metrics | None = None):
        """``engine``: what tokenizes turns (:meth:`service.engine.Engine.turn_ids`, the engine owning this)."""
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
        waiting = time.perf_counter()
        async with lock:  # the call's previous turn first: its state is this one's past
            t0 = time.perf_counter()
            lock_ms = (t0 - waiting) * 1000
            if time.monotonic() >= deadline:
                raise ServiceError(ErrorKind.deadline_exceeded,
                                   f"latency budget exceeded waiting for the call's previous turn ({lock_ms:.0f} ms)")
            ids = self.engine.turn_ids(bundle, window)
            seqs = [t.seq for t in window]
            keys = [(t.seq, turn_digest(t.speaker, t.text)) for t in window]
            key = (bundle_key(bundle), dialogue_id)
            state = self.cache.get(key)
            self._count_lookup(state is not None)
            start_i = anchor_index(seqs, [stored_anchor, state.anchor_seq if state is not None else None])
            request, start, mode = plan_turn(state, keys, ids, start_i, bundle.window, bundle.kv_shape)
            timings = {"tokenize": (time.perf_counter() - t0) * 1000}
            if request is None:
                assert state is not None
                logits = {t: v[None] for t, v in state.last_logits.items()}
                timings.update(queue=lock_ms, inference=0.0, cached=0.0)
            else:
                (logits, new_kv), bt = await self.batcher.submit(bundle, request, deadline)
                state = advance(state, mode, keys, start, seqs[start], logits, new_kv,
                                max_rows=bundle.window.max_context_tokens)
                self.cache.put(key, state)
                timings.update(queue=lock_ms + bt["queue"], inference=bt["inference"])
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

    def keep_only(self, bundle: LoadedBundle) -> None:
        """A new bundle is serving: the states of any other bundle can never be used again."""
        self.cache.keep_only(bundle_key(bundle))
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
