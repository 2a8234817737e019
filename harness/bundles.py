"""Untrained checkpoints and bundles: what tests, benchmarks and load tests serve or export.

Two backbones: ``tiny``, a 2-layer random BERT with MiniLM's real vocabulary (built in milliseconds,
no network; for tests and smoke runs), and ``minilm``, the pretrained all-MiniLM-L6-v2 with untrained
task heads: the production architecture, so the same compute per turn as a trained model. Scores of
an untrained model are meaningless, which a speed measurement or a load test does not look at.

    ckpt = untrained_checkpoint(work / "ckpt", backbone_for("tiny", work / "backbone"), name="tiny", version="1")
    bundle = untrained_bundle(cache / "tiny-bundle", kind="tiny")   # reused while it is intact
    stream = untrained_bundle(cache / "tiny-stream-bundle", kind="tiny", streaming=True)  # turn-causal-v1
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from turnwise.names import BUNDLE_MANIFEST, CHECKPOINT_META

if TYPE_CHECKING:
    from export.parity import Tolerance
    from turnwise.tasks import TaskSchema
    from turnwise.window import WindowConfig

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TASKS = REPO / "samples" / "tasks.yaml"
KINDS = ("tiny", "minilm")


def tiny_backbone(out: Path) -> Path:
    """A tiny random BERT saved at ``out``; it loads by path like any backbone."""
    from trainer.model import make_tiny_backbone

    return make_tiny_backbone(out)


def backbone_for(kind: str, tiny_dir: Path) -> str:
    """What ``build_model`` takes for ``kind``: a fresh tiny backbone built in ``tiny_dir``, or "minilm"."""
    if kind == "tiny":
        return str(tiny_backbone(tiny_dir))
    if kind == "minilm":
        return "minilm"
    raise ValueError(f"unknown model kind {kind!r} ({'|'.join(KINDS)})")


def untrained_checkpoint(out: Path, backbone: str | Path, *, name: str, version: str,
                         schema: TaskSchema | None = None, window: WindowConfig | None = None,
                         seed: int = 0) -> Path:
    """The student on ``backbone`` with freshly initialised heads, saved as a checkpoint at ``out``.

    ``schema`` defaults to samples/tasks.yaml, ``window`` to the default window.
    """
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_model
    from turnwise.tasks import load_tasks
    from turnwise.window import WindowConfig

    built = build_model(str(backbone), schema if schema is not None else load_tasks(SAMPLE_TASKS), seed=seed)
    return save_checkpoint(out, built.model, built.tokenizer, window if window is not None else WindowConfig(),
                           {"backbone": str(backbone), "name": name, "version": version})


def is_intact(bundle: Path, variants: Sequence[str] | None = None, window: WindowConfig | None = None) -> bool:
    """True when ``bundle`` has a manifest, every file matches its checksum and (if given) it holds exactly
    ``variants`` and was exported with ``window``."""
    from bundle.manifest import read_manifest, verify

    if not (bundle / BUNDLE_MANIFEST).exists():
        return False
    try:
        manifest = read_manifest(bundle)
        if variants is not None and sorted(manifest["variants"]) != sorted(variants):
            return False
        if window is not None and manifest.get("window") != window.to_dict():
            return False
        verify(bundle, manifest)
    except Exception:
        return False
    return True


def untrained_bundle(out: Path, *, kind: str = "tiny", variants: Sequence[str] = ("fp32",),
                     window: WindowConfig | None = None, streaming: bool = False, name: str | None = None,
                     version: str = "untrained-1", checkpoint: Path | None = None,
                     tolerances: Mapping[str, Tolerance] | None = None) -> Path:
    """A servable bundle of an untrained ``kind`` student at ``out``, reused while it is intact.

    ``streaming=True`` (without ``window``) saves the checkpoint with ``WindowConfig.turn_causal()``, so the
    export writes a turn-causal-v1 (streaming, step graph) bundle; ``window`` sets any window. The
    checkpoint it is exported from is kept at ``checkpoint`` when given (a PyTorch server needs it too;
    it is rebuilt when missing), else built next to ``out`` and removed afterwards. ``tolerances``
    replaces the export's parity tolerance of the variants it names (an untrained model's heads give
    near-tied logits, so int8's label agreement with fp32 says little about the graph; a benchmark of
    speed may gate it less tightly, and the bundle's parity record says so).
    """
    from export.cli import run_export
    from turnwise.window import WindowConfig

    if window is None and streaming:
        window = WindowConfig.turn_causal()
    elif window is not None and streaming and not window.streaming:
        raise ValueError(f"streaming=True with a {window.format} window")
    name = name or f"untrained-{kind}"
    if is_intact(out, variants, window or WindowConfig()) and (
            checkpoint is None or (checkpoint / CHECKPOINT_META).exists()):
        return out
    work = out.parent / f".{out.name}.build"  # the tiny backbone, and the checkpoint unless it is kept
    shutil.rmtree(work, ignore_errors=True)
    ckpt = checkpoint if checkpoint is not None else work / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    untrained_checkpoint(ckpt, backbone_for(kind, work / "backbone"), name=name, version=version, window=window)
    if tolerances:
        from export.onnx_export import default_tolerances
        from export.pipeline import ExportOptions, export_bundle

        opts = ExportOptions(variants=list(variants), name=name, version=version,
                             tolerances={**default_tolerances(), **tolerances})
        path = export_bundle(ckpt, out, opts).path
    else:
        path = run_export(ckpt, out, list(variants), name=name, version=version)
    shutil.rmtree(work, ignore_errors=True)
    return path
