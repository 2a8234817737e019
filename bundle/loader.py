"""The bundle loader the service uses: verify, pick a variant and providers, open a session, warm up.

```python
bundle = load_bundle("bundles/support", variant="auto", providers="cpu")
bundle.predict([[{"speaker": "customer", "text": "my card was charged twice"}]])
# -> [{"scores": {"intent": {...}, ...}, "labels": {"intent": "has_intent", ...}}]
```

Refusals (all :class:`BundleError`): no or unreadable bundle.json, a referenced file without checksum
or missing (:class:`BundleIncompleteError`), a modified file (:class:`ChecksumError`), a chosen
variant whose parity record is missing, failed, or out of its tolerance (:class:`ParityRecordError`),
a variant or provider this bundle / onnxruntime build cannot serve (:class:`VariantUnavailableError`).
Checks run before any model file is opened.

``variant="auto"``: the bundle's ``preferred_variant`` for the provider (written at export from the
latest backend benchmark), else fp32 on CPU and fp16 on CUDA/TensorRT; if that variant is not in the
bundle, the first present of fp32, int8, fp16 (fp16 first on GPUs).

This module imports neither torch, transformers nor the trainer: serving needs onnxruntime,
tokenizers and numpy only (and loads in well under a second for a small model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle.errors import (
    BundleError,
    BundleIncompleteError,
    ChecksumError,
    ParityRecordError,
    VariantUnavailableError,
)
from bundle.manifest import (
    DEFAULT_PREFERRED_VARIANT,
    MANIFEST,
    VARIANTS,
    fallback_variant,
    read_manifest,
    verify,
)
from bundle.parity_record import first_failure
from bundle.providers import check_choice, create_session
from bundle.streaming import NEW_KV, StepRequest, kv_row_shape, split_outputs, step_feed
from turnwise.names import TOKENIZER_JSON
from turnwise.scoring import decode
from turnwise.tasks import TaskSchema, parse_tasks
from turnwise.window import WindowConfig, encode_windows, pad_batch, plan_spans, turn_token_ids

__all__ = [
    "BundleError",
    "BundleIncompleteError",
    "BundleTokenizer",
    "ChecksumError",
    "LoadedBundle",
    "ParityRecordError",
    "VariantUnavailableError",
    "choose_variant",
    "load_bundle",
]

def choose_variant(manifest: dict[str, Any], variant: str, providers: str) -> str:
    """The variant to serve: an explicit one must exist in the bundle; ``auto`` follows the rule above."""
    available = list(manifest["variants"])
    key = variant.strip().lower()
    if key != "auto":
        if key not in VARIANTS:
            raise VariantUnavailableError(f"unknown variant '{variant}' "
                                          f"(choose auto or one of {', '.join(VARIANTS)})")
        if key not in available:
            raise VariantUnavailableError(f"variant '{key}' is not in this bundle "
                                          f"(it has {', '.join(available)})")
        return key
    preferred = (manifest.get("preferred_variant") or {}).get(providers) or DEFAULT_PREFERRED_VARIANT[providers]
    if preferred in available:
        return preferred
    fallback = fallback_variant(providers, available)
    if fallback is not None:
        return fallback
    raise VariantUnavailableError(f"the bundle lists no servable variant ({available})")


def check_parity_record(manifest: dict[str, Any], variant: str, where: Path) -> dict[str, Any]:
    rec = (manifest.get("parity") or {}).get(variant)
    if not rec:
        raise ParityRecordError(f"{where}: no parity record for variant '{variant}'; it was never checked "
                                "against the PyTorch checkpoint — refusing to serve it")
    try:
        failure = first_failure(rec)
    except (KeyError, TypeError, ValueError) as err:
        raise ParityRecordError(f"{where}: malformed parity record for '{variant}' ({err!r})") from None
    if not rec.get("outputs") or not rec.get("tolerance"):
        raise ParityRecordError(f"{where}: parity record for variant '{variant}' has no outputs or tolerance")
    if failure is not None or rec.get("passed") is not True:
        detail = (f"output '{failure[0]}' {failure[1]} = {failure[2]:.6g} vs tolerance {failure[3]:.6g}"
                  if failure else "marked as failed")
        raise ParityRecordError(f"{where}: variant '{variant}' failed parity ({detail}); "
                                "refusing to serve it")
    return rec


class BundleTokenizer:
    """The bundle's ``tokenizer.json`` through the ``tokenizers`` library: the subset of a HF fast
    tokenizer the window formatter uses, without importing transformers (which imports torch).

    The export records a few strings and the ids the checkpoint's own tokenizer gave them; the loader
    re-encodes them here and refuses the bundle on any difference, so this path cannot drift from
    what the model was trained and parity-checked with.
    """

    def __init__(self, root: Path, info: dict[str, Any]):
        from tokenizers import Tokenizer

        path = root / TOKENIZER_JSON
        if not path.is_file():
            raise BundleIncompleteError(f"{root}: no {TOKENIZER_JSON} (a fast tokenizer is required)")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()  # the window formatter truncates, from the left
        self._tok.no_padding()  # pad_batch pads
        self.cls_token_id: int | None = self._special(info, "cls_token_id", "[CLS]")
        self.sep_token_id: int | None = self._special(info, "sep_token_id", "[SEP]")
        self.pad_token_id: int | None = self._special(info, "pad_token_id", "[PAD]")

    def _special(self, info: dict[str, Any], key: str, token: str) -> int | None:
        value = info.get(key)
        return int(value) if value is not None else self._tok.token_to_id(token)

    def __call__(self, text: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        encodings = self._tok.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings]}

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def check(self, info: dict[str, Any], where: Path) -> None:
        sample = info.get("check") or {}
        texts, expected = sample.get("texts") or [], sample.get("ids") or []
        if not texts:
            raise BundleIncompleteError(f"{where}: bundle.json has no tokenizer check strings")
        got = self(texts)["input_ids"]
        if got != expected:
            bad = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), 0)
            raise BundleError(f"{where}: {TOKENIZER_JSON} encodes {texts[bad]!r} as "
                              f"{got[bad] if bad < len(got) else None}, the checkpoint's tokenizer gave "
                              f"{expected[bad] if bad < len(expected) else None}")


class LoadedBundle:
    """A verified bundle with an open ONNX Runtime session. ``infer``/``predict`` are thread-safe."""

    def __init__(self, path: Path, manifest: dict[str, Any], variant: str, providers: str, session: Any,
                 tokenizer: Any):
        self.path = path
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.version: str = str(manifest["version"])
        self.schema: TaskSchema = parse_tasks({"tasks": manifest["tasks"]}, path=str(path / MANIFEST))
        self.window: WindowConfig = WindowConfig.from_dict(manifest["window"])
        self.tokenizer = tokenizer
        self.variant = variant
        self.provider_choice = providers
        self.session = session
        self.providers: list[str] = list(session.get_providers())
        self.parity: dict[str, Any] = manifest["parity"][variant]
        # Names come from the session, not from constants: a graph with fewer inputs (no
        # token_type_ids) is served as well.
        self.input_names: list[str] = [i.name for i in session.get_inputs()]
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        self._task_for_output = self._map_outputs()
        self.pad_token_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        self.streaming = self.window.streaming
        if self.streaming and NEW_KV not in self.output_names:
            raise BundleError(f"{self.path}: a {self.window.format} bundle needs the step graph (output '{NEW_KV}'), "
                              f"the {self.variant} graph has {self.output_names}")
        arch = manifest.get("architecture") or {}
        self.kv_shape: tuple[int, int, int] = kv_row_shape(arch) if self.streaming else (0, 0, 0)

    def _map_outputs(self) -> dict[str, str]:
        expected = {f"logits_{t}": t for t in self.schema.names()}
        missing = sorted(set(expected) - set(self.output_names))
        if missing:
            raise BundleError(f"{self.path}: the {self.variant} graph lacks outputs {missing} "
                              f"(has {self.output_names})")
        return {o: expected[o] for o in self.output_names if o in expected}

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["variants"][self.variant]

    def encode(self, windows: Sequence[Sequence[Any]]) -> list[list[int]]:
        """Token ids per window via the one window formatter (turns: mappings or speaker/text objects)."""
        if self.streaming:
            raise BundleError(f"{self.path}: a {self.window.format} bundle is run with step(), not on flat windows")
        return encode_windows(windows, self.tokenizer, self.window)

    def step(self, requests: Sequence[StepRequest]) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Streaming bundles: run a batch of step requests; per request ({task: (turns, C)} logits at
        each new turn's tag, its new keys/values (N, L, 2, hidden))."""
        feed = step_feed(requests, self.kv_shape, self.pad_token_id)
        got = dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))
        logits = {task: got[name] for name, task in self._task_for_output.items()}
        return split_outputs(requests, logits, got[NEW_KV])

    def span_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Streaming bundles: whole spans in one pass, nothing cached -- ``input_ids`` (B, T) and the
        turn-causal ``attention_mask`` (B, T, T) -> {task: (B, T, C)} logits of every token."""
        b, t = input_ids.shape
        feed = {"input_ids": input_ids.astype(np.int64), "position_ids": np.tile(np.arange(t, dtype=np.int64), (b, 1)),
                "attention_mask": attention_mask.astype(np.int64),
                "past_kv": np.zeros((b, 0, *self.kv_shape), dtype=np.float32)}
        got = dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))
        return {task: got[name] for name, task in self._task_for_output.items()}

    def rebuild_request(self, turn_ids: Sequence[list[int]]) -> StepRequest:
        """The one-pass request over a whole span (its turns' ids), nothing cached."""
        return StepRequest([list(t) for t in turn_ids], np.zeros((0, *self.kv_shape), dtype=np.float32))

    def infer(self, seqs: list[list[int]]) -> dict[str, np.ndarray]:
        """Logits per task, (B, C_task) float32, for already-encoded sequences (padded here)."""
        if not seqs:
            names = self.schema.names()
            return {t: np.zeros((0, self.schema[t].num_labels), dtype=np.float32) for t in names}
        feed = pad_batch(seqs, self.pad_token_id)
        unknown = [n for n in self.input_names if n not in feed]
        if unknown:
            raise BundleError(f"{self.path}: the graph wants inputs {unknown} that pad_batch does not make")
        outputs = self.session.run(self.output_names, {n: feed[n] for n in self.input_names})
        result = {self._task_for_output[name]: np.asarray(value, dtype=np.float32)
                  for name, value in zip(self.output_names, outputs, strict=True)
                  if name in self._task_for_output}
        if any(len(v) != len(seqs) for v in result.values()):
            raise BundleError(f"{self.path}: the session returned a batch of the wrong size")
        return result

    def predict(self, windows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """``[{"scores": {task: {label: p}}, "labels": {task: label}}]``, one per window; with a
        hierarchical task also ``"levels": {task: [{"level", "label", "p"}]}`` (see :func:`turnwise.scoring.decode`)."""
        if not windows:
            return []
        if self.streaming:  # the newest turn, in the span the span rule gives it from the window's start
            requests = []
            for w in windows:
                ids = turn_token_ids(list(w), self.tokenizer, self.window)
                span = plan_spans([len(t) for t in ids], self.window)[-1]
                requests.append(self.rebuild_request(ids[span.start :]))
            outs = self.step(requests)
            return decode(self.schema, {t: np.stack([lg[t][-1] for lg, _ in outs]) for t in self.schema.names()})
        return decode(self.schema, self.infer(self.encode(windows)))

    def warmup(self) -> None:
        """Run the smallest and the largest shapes once (allocations, TensorRT engine build/load)."""
        if self.streaming:
            tok = self.pad_token_id + 1
            full = self.step([self.rebuild_request([[tok] * 16] * (self.window.max_context_tokens // 16))])
            self.step([StepRequest([[tok] * 8], full[0][1][:-8])])
            return
        cls = self.tokenizer.cls_token_id or 0
        sep = self.tokenizer.sep_token_id or 0
        body = [cls] + [self.pad_token_id + 1] * (self.window.max_tokens - 2) + [sep]
        self.infer([[cls, sep]])
        self.infer([body] * 8)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "variant": self.variant,
                "file": self.manifest["variants"][self.variant], "providers": self.providers,
                "window": self.window.to_dict(), "tasks": self.schema.names(),
                "graph": "step" if self.streaming else "window"}

    def __repr__(self) -> str:
        return f"LoadedBundle({self.name} {self.version}, variant={self.variant}, providers={self.providers})"


def load_bundle(path: str | Path, *, variant: str = "auto", providers: str = "cpu", warmup: bool = True,
                intra_op_threads: int | None = None, cache_dir: str | Path | None = None,
                spinning: bool = True) -> LoadedBundle:
    """Verify the bundle at ``path`` and open ``variant`` on ``providers`` ("cpu" | "cuda" | "tensorrt").

    ``cache_dir``: TensorRT engine/timing cache (default ``$TURNWISE_TRT_CACHE_DIR`` or
    ``~/.cache/turnwise/tensorrt/<name>-<version>-<variant>``).
    """
    root = Path(path)
    manifest = read_manifest(root)
    provider_key = check_choice(providers)
    chosen = choose_variant(manifest, variant, provider_key)
    verify(root, manifest)
    check_parity_record(manifest, chosen, root)
    if provider_key == "tensorrt" and WindowConfig.from_dict(manifest["window"]).streaming:
        raise VariantUnavailableError(f"{root}: TensorRT profiles are built for flat windows; serve this "
                                      "turn-causal (streaming) bundle with providers='cuda'")
    tok_info = manifest.get("tokenizer") or {}
    tokenizer = BundleTokenizer(root, tok_info)
    tokenizer.check(tok_info, root)
    io = manifest.get("io") or {}
    trt_cache = Path(cache_dir) if cache_dir is not None else None
    if provider_key == "tensorrt" and trt_cache is None:
        from bundle.providers import default_trt_cache

        trt_cache = default_trt_cache(f"{manifest['name']}-{manifest['version']}-{chosen}")
    session = create_session(
        root / manifest["variants"][chosen],
        provider_key,
        input_names=list(io.get("inputs") or ("input_ids", "attention_mask", "token_type_ids")),
        max_tokens=int(manifest["window"].get("max_tokens") or manifest["window"].get("max_context_tokens") or 512),
        intra_op_threads=intra_op_threads,
        cache_dir=trt_cache,
        fp16=chosen == "fp16",  # TensorRT may pick fp16 kernels only for the variant whose parity allows them
        spinning=spinning,
    )
    bundle = LoadedBundle(root, manifest, chosen, provider_key, session, tokenizer)
    if warmup:
        bundle.warmup()
    return bundle
