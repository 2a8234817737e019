"""The model engine: the loaded bundle, one call per turn, inference off the event loop, hot reload.

:meth:`Engine.score` is what the serving path calls for every turn: it tokenizes (behind a per-turn
token cache), keeps the per-call state of streaming bundles (:mod:`service.streaming`) and queues
the work on its private micro-batcher (:mod:`service.batcher`), whose batches run here.

Inference runs on one dedicated worker thread (ONNX Runtime releases the GIL and spreads one batch
over its own intra-op threads), so the event loop keeps accepting, storing and answering while a
batch runs. One batch at a time: on a few CPU cores a second concurrent batch only steals the
cores the first one is using.

Hot reload: ``TURNWISE_BUNDLE`` names a bundle directory, usually a
symlink to a versioned directory. Every ``reload_poll_s`` the engine fingerprints the bundle (the
resolved path + the sha256 of ``bundle.json``); when the fingerprint changes it loads the new
bundle on a side thread (the loader verifies checksums and the parity record and warms it up),
checks that it scores a probe window with finite probabilities, and swaps it in between two
batches. Requests already tokenized for the old bundle finish on the old bundle; nothing is
dropped. If the new bundle fails, the old one keeps serving, ``turnwise_reloads_total{result=
"failed"}`` goes up and the same fingerprint is not retried until it changes again. Deploy a new
version by exporting into a new directory and re-pointing the symlink atomically
(``ln -sfn v2 current.tmp && mv -T current.tmp current``); ``POST /v1/admin/reload`` forces a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import logging
import math
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bundle.loader import BundleError, LoadedBundle, load_bundle
from bundle.streaming import StepRequest
from service.batcher import MicroBatcher
from service.errors import ErrorKind, ServiceError
from service.streaming import StreamScorer
from turnwise.errors import TurnwiseError
from turnwise.names import BUNDLE_MANIFEST
from turnwise.scoring import decode
from turnwise.window import encode_windows, turn_token_ids

if TYPE_CHECKING:
    from service.config import Settings
    from service.metrics import Metrics

log = logging.getLogger("turnwise.service")

PROBE_WINDOW = [
    {"speaker": "agent", "text": "How can I help?"},
    {"speaker": "customer", "text": "My card was charged twice."},
]


RELEASE_AFTER_S = 5.0  # after a hot reload: when the replaced bundle's memory is handed back


def release_memory() -> None:
    """Collect garbage and return freed heap pages to the OS (glibc ``malloc_trim``): a replaced ONNX
    session's arena is freed but would otherwise stay in the process's resident memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def bundle_fingerprint(path: Path) -> str:
    """Resolved directory + sha256 of its manifest: changes when the symlink moves or bundle.json does."""
    real = Path(os.path.realpath(path))
    manifest = real / BUNDLE_MANIFEST
    try:
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    except OSError:
        digest = "missing"
    return f"{real}:{digest}"


class CachedTokenizer:
    """A per-turn token-id cache in front of a bundle's tokenizer, for the one window formatter.

    ``encode_windows`` tokenizes every turn string (``"[usr] text"``) on its own, so a turn's ids never
    depend on the other turns of the window. A live call re-sends its earlier turns in every window;
    with the cache only the newest turn reaches the tokenizer. Exact by construction: hits return what
    the tokenizer returned for the same string.
    """

    def __init__(self, tokenizer: Any, maxsize: int = 32768):
        self._tok = tokenizer
        self.maxsize = maxsize
        self.cls_token_id = tokenizer.cls_token_id
        self.sep_token_id = tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self.hits = self.misses = 0  # lookups since creation (turnwise_token_cache_lookups_total)

    def __call__(self, text: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        if add_special_tokens:  # not what the window formatter asks for: no caching
            return {"input_ids": self._tok(text, add_special_tokens=True)["input_ids"]}
        cache = self._cache
        found: dict[str, list[int]] = {}
        missing = []
        for t in dict.fromkeys(text):
            ids = cache.get(t)
            if ids is None:
                missing.append(t)
            else:
                cache.move_to_end(t)
                found[t] = ids
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            for t, ids in zip(missing, self._tok(missing, add_special_tokens=False)["input_ids"], strict=True):
                found[t] = cache[t] = ids
            while len(cache) > self.maxsize:
                cache.popitem(last=False)
        return {"input_ids": [found[t] for t in text]}


def length_groups(lengths: Sequence[int], max_waste: float) -> list[list[int]]:
    """Split a batch into groups of similar length (indices), so padding wastes <= ``max_waste`` of each group.

    Greedy over the lengths in ascending order: a group grows while ``1 - sum(len) / (n * longest)``
    stays within ``max_waste``. ``max_waste >= 1`` keeps the whole batch in one call.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if max_waste >= 1 or len(order) <= 1:
        return [order]
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i in order:
        n, longest = len(group) + 1, lengths[i]
        if group and (real + longest) < (1 - max_waste) * n * longest:
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += lengths[i]
    groups.append(group)
    return groups


def model_ref(bundle: LoadedBundle) -> dict[str, str]:
    return {"name": str(bundle.name), "version": str(bundle.version)}


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        if settings.bundle is None:
            raise ServiceError(ErrorKind.model_unavailable, "no model bundle: set TURNWISE_BUNDLE or pass --bundle")
        self.path = Path(settings.bundle)
        self.settings = settings
        self.metrics = metrics
        self._bundle: LoadedBundle | None = None
        self._fingerprint: str | None = None
        self._rejected: str | None = None  # fingerprint of the last bundle that failed its checks
        self._rejection = ""  # and why (a later non-forced reload of the same bundle answers it again)
        self._reload_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnwise-infer")
        self.batches = 0  # model calls made (tests check that expired requests are never computed)
        self._tokenizers: weakref.WeakKeyDictionary[LoadedBundle, CachedTokenizer] = weakref.WeakKeyDictionary()
        # The engine's private queue: every model call of the service goes through it.
        self.batcher = MicroBatcher(
            self.infer,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_batch_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            retry_after_s=settings.retry_after_s,
            budget_s=settings.latency_budget_ms / 1000.0,
            metrics=metrics,
        )
        self.streams = StreamScorer(self, self.batcher, int(settings.state_cache_mb * 2**20), metrics)

    # --- loading ---------------------------------------------------------------------------------
    def _load_checked(self, path: Path) -> LoadedBundle:
        bundle = load_bundle(
            path,
            variant=self.settings.variant,
            providers=self.settings.providers,
            warmup=True,
            intra_op_threads=self.settings.intra_op_threads,
            spinning=self.settings.intra_op_spinning,
        )
        if bundle.streaming:
            rows = bundle.predict([PROBE_WINDOW, PROBE_WINDOW[-1:]])
        else:
            rows = self.compute(bundle, bundle.encode([PROBE_WINDOW, PROBE_WINDOW[-1:]]), record=False)
        for task, probs in rows[0]["scores"].items():
            if not probs or not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs.values()):
                raise ServiceError(
                    ErrorKind.bundle_rejected,
                    f"bundle scores task '{task}' with invalid probabilities on the probe window",
                )
        return bundle

    def _install(self, bundle: LoadedBundle, fingerprint: str) -> None:
        self._bundle, self._fingerprint, self._rejected = bundle, fingerprint, None
        self.streams.keep_only(bundle)
        if self.metrics is not None:
            self.metrics.set_model(str(bundle.name), str(bundle.version), str(bundle.variant))

    def load_checked(self) -> LoadedBundle:
        """The configured bundle, loaded and checked as :meth:`start` does, without installing it (for
        offline scoring with the serving path's windows and decoding: ``turnwise score``)."""
        return self._load_checked(self.path)

    async def start(self) -> None:
        """Load the configured bundle (one that fails its checks stops the service from starting) and
        start the micro-batcher."""
        fingerprint = bundle_fingerprint(self.path)
        bundle = await asyncio.to_thread(self._load_checked, self.path)
        self._install(bundle, fingerprint)
        self.batcher.start()
        log.info(
            "serving bundle %s %s (variant %s, providers %s) from %s",
            bundle.name,
            bundle.version,
            bundle.variant,
            bundle.providers,
            self.path,
        )

    async def reload(self, *, force: bool = False) -> dict[str, Any]:
        """Load, check, swap if the bundle changed (always with ``force``); keep the old one on failure."""
        async with self._reload_lock:
            fingerprint = bundle_fingerprint(self.path)
            if not force and fingerprint == self._rejected:  # not loaded again, but still not served
                raise ServiceError(ErrorKind.bundle_rejected, self._rejection)
            if not force and fingerprint == self._fingerprint:
                return {"reloaded": False, "model": model_ref(self.current)}
            try:
                bundle = await asyncio.to_thread(self._load_checked, self.path)
            except (BundleError, TurnwiseError, ServiceError, OSError, ValueError, RuntimeError) as err:
                self._rejected = fingerprint
                if self.metrics is not None:
                    self.metrics.reloads.labels(result="failed").inc()
                message = err.message if isinstance(err, ServiceError) else f"{type(err).__name__}: {err}"
                log.error(
                    "bundle reload rejected, still serving %s %s: %s",
                    self.current.name,
                    self.current.version,
                    message,
                )
                self._rejection = (f"new bundle rejected ({message}); still serving {self.current.name} "
                                   f"{self.current.version}")
                raise ServiceError(ErrorKind.bundle_rejected, self._rejection) from err
            old = self.current
            self._install(bundle, fingerprint)
            if self.metrics is not None:
                self.metrics.reloads.labels(result="ok").inc()
            log.info("reloaded bundle: %s %s -> %s %s", old.name, old.version, bundle.name, bundle.version)
            previous = model_ref(old)
            del old
            # Requests in flight may still hold the old session for a moment; then give its memory back.
            asyncio.get_running_loop().call_later(RELEASE_AFTER_S, release_memory)
            return {"reloaded": True, "model": model_ref(bundle), "previous": previous}

    async def watch(self, poll_s: float) -> None:
        """Poll the bundle for a new version until cancelled."""
        while True:
            await asyncio.sleep(poll_s)
            # A rejected bundle is logged and counted by reload(); the old one keeps serving.
            with contextlib.suppress(ServiceError):
                await self.reload()

    # --- serving ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._bundle is not None

    @property
    def current(self) -> LoadedBundle:
        if self._bundle is None:
            raise ServiceError(ErrorKind.model_unavailable, "model not loaded yet")
        return self._bundle

    def _tokenizer(self, bundle: LoadedBundle) -> CachedTokenizer:
        tok = self._tokenizers.get(bundle)
        if tok is None:
            tok = self._tokenizers[bundle] = CachedTokenizer(bundle.tokenizer)
        return tok

    def _count_tokens(self, tok: CachedTokenizer, hits: int, misses: int) -> None:
        if self.metrics is not None:
            self.metrics.token_cache.labels(result="hit").inc(tok.hits - hits)
            self.metrics.token_cache.labels(result="miss").inc(tok.misses - misses)

    def encode(self, bundle: LoadedBundle, windows: Sequence[Sequence[Any]]) -> list[list[int]]:
        """Token ids per window: the one window formatter, with the bundle's tokenizer behind a turn cache."""
        tok = self._tokenizer(bundle)
        hits, misses = tok.hits, tok.misses
        ids = encode_windows(windows, tok, bundle.window)
        self._count_tokens(tok, hits, misses)
        return ids

    def turn_ids(self, bundle: LoadedBundle, turns: Sequence[Any]) -> list[list[int]]:
        """Streaming bundles: each turn's ids in the turn-causal format, through the same turn cache."""
        tok = self._tokenizer(bundle)
        hits, misses = tok.hits, tok.misses
        ids = turn_token_ids(list(turns), tok, bundle.window)
        self._count_tokens(tok, hits, misses)
        return ids

    def compute_steps(self, bundle: LoadedBundle, requests: Sequence[StepRequest]) -> list[Any]:
        """Streaming bundles: a batch of step requests -> per request (logits, new keys/values).

        Rebuilds (a whole span over nothing) run one per call; incremental steps run in groups of
        similar cached length of at most ``stream_batch_size`` (padding the past costs a copy of every
        cache in the group and attention over the padding).
        """
        out: list[Any] = [None] * len(requests)
        steps = [i for i, r in enumerate(requests) if len(r.past)]
        calls = [[i] for i, r in enumerate(requests) if not len(r.past)]
        for group in length_groups([len(requests[i].past) for i in steps], self.settings.batch_padding_waste):
            members = [steps[g] for g in group]
            size = self.settings.stream_batch_size
            calls += [members[k : k + size] for k in range(0, len(members), size)]
        for call in calls:
            if call:
                for i, res in zip(call, bundle.step([requests[i] for i in call]), strict=True):
                    out[i] = res
        return out

    def compute(self, bundle: LoadedBundle, seqs: list[list[int]], *, record: bool = True) -> list[dict[str, Any]]:
        """A batch of token-id sequences -> one decoded row per sequence, in input order.

        The batch runs as a few model calls over length groups (see :func:`length_groups`): on CPU a
        padded token costs as much as a real one, and windows range from one short turn to max_tokens.
        """
        if bundle.streaming:
            return self.compute_steps(bundle, seqs)  # type: ignore[arg-type]  # StepRequests ride the batcher
        groups = length_groups([len(s) for s in seqs], self.settings.batch_padding_waste)
        parts = [(group, bundle.infer([seqs[i] for i in group])) for group in groups]
        if record and self.metrics is not None:
            self.metrics.batch_padded_tokens.observe(sum(len(g) * max(len(seqs[i]) for i in g) for g in groups if g))
        logits: dict[str, np.ndarray] = {}
        for task in bundle.schema.names():
            out = np.empty((len(seqs), bundle.schema[task].num_labels), dtype=np.float32)
            for group, part in parts:
                got = part.get(task)
                if got is None or got.shape != (len(group), out.shape[1]):
                    raise ServiceError(
                        ErrorKind.model_unavailable,
                        f"model returned {None if got is None else got.shape} for task '{task}' on {len(group)} inputs",
                    )
                out[group] = got
            logits[task] = out
        return decode(bundle.schema, logits)

    async def infer(self, bundle: LoadedBundle, seqs: list[list[int]]) -> list[dict[str, Any]]:
        """Run :meth:`compute` on the inference thread, leaving the event loop free."""
        self.batches += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.compute, bundle, seqs)

    async def score(self, bundle: LoadedBundle, dialogue_id: str, window: list[Any], anchor: int | None,
                    deadline: float) -> tuple[dict[str, Any], dict[str, float], int | None, int]:
        """One turn of a live call: the stored ``window`` (the new turn last) -> (decoded row, timings in
        ms: tokenize, queue, inference -- plus the step mode for a streaming bundle --, the span anchor
        to record (streaming bundles), turns the model saw). Tokenizing, the per-call state and the
        batching of every call's work happen here."""
        if bundle.streaming:
            return await self.streams.score_turn(bundle, dialogue_id, window, anchor, deadline)
        t = time.perf_counter()
        ids = self.encode(bundle, [window])[0]
        tokenize_ms = (time.perf_counter() - t) * 1000
        try:
            row, timings = await self.batcher.submit(bundle, ids, deadline)
        except ServiceError as err:  # an expired turn's stages are in the histograms too (queue: the batcher)
            if err.kind is ErrorKind.deadline_exceeded and self.metrics is not None:
                self.metrics.stage_duration.labels(stage="tokenize").observe(tokenize_ms / 1000.0)
            raise
        return row, {"tokenize": tokenize_ms, **timings}, None, len(window)

    def forget(self, dialogue_id: str) -> None:
        """The call ended: drop its cached state."""
        self.streams.forget(dialogue_id)

    async def stop(self) -> None:
        """Finish what is queued (graceful drain), then stop the inference thread."""
        await self.batcher.stop()
        self.close()

    def close(self, *, wait: bool = True) -> None:
        """Stop the inference thread (``wait=False``: drop queued calls, do not wait for a running one)."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
