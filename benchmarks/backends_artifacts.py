"""The backend benchmark's artifacts: the student checkpoint, the bundle the real exporter makes of it
(fp32 optimized, int8, and fp16 where a GPU provider is there) and the raw traced graph.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bundles import SAMPLE_TASKS, backbone_for, untrained_checkpoint


def build_artifacts(work: Path, quick: bool, gpu: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Student checkpoint -> bundle (the real exporter) + the raw graph; returns paths and metadata."""
    from export.onnx_export import TurnwiseOnnxConfig, default_tolerances, export_raw
    from export.parity import Tolerance
    from export.pipeline import ExportOptions, export_bundle
    from export.quantize import DEFAULT_PRESET
    from trainer.checkpoint import load_checkpoint
    from turnwise.tasks import load_tasks

    schema = load_tasks(SAMPLE_TASKS)
    backbone = backbone_for("tiny" if quick else "minilm", work / "tiny-backbone")
    say(f"building the student ({'tiny random BERT' if quick else 'MiniLM-L6'})")
    ckpt_dir = untrained_checkpoint(work / "ckpt", backbone, name="bench", version="0", schema=schema)
    # int8/fp16 label agreement is recorded but not gated: the heads are untrained (near-tied logits),
    # so agreement would measure their margins, not the engine. fp32 keeps its strict 1e-4 gate.
    tols = default_tolerances()
    tols["int8"] = Tolerance(max_abs_diff=None, min_label_agreement=None)
    tols["fp16"] = Tolerance(max_abs_diff=None, min_label_agreement=None)
    variants = ("fp32", "int8", "fp16") if gpu else ("fp32", "int8")
    say("exporting the bundle (fp32 optimized, int8" + (", fp16)" if gpu else ")"))
    result = export_bundle(ckpt_dir, work / "bundle",
                           ExportOptions(variants=variants, tolerances=tols, quantization=DEFAULT_PRESET,
                                         bench_results=None, max_probes=64 if quick else 1024))
    ckpt = load_checkpoint(ckpt_dir)
    raw = export_raw(ckpt.model, work / "model.raw.onnx", TurnwiseOnnxConfig(tasks=tuple(schema.names())))
    m = result.manifest
    return {
        "tokenizer": ckpt.tokenizer,
        "arch": m["architecture"],
        "n_logits": sum(len(t["labels"]) for t in m["tasks"].values()),
        "files": {"ort_fp32_raw": raw, "ort_fp32_optimized": work / "bundle" / m["variants"]["fp32"],
                  "ort_int8": work / "bundle" / m["variants"]["int8"],
                  **({"fp16": work / "bundle" / m["variants"]["fp16"]} if gpu else {})},
        "parity": {v: {k: rec[k] for k in ("max_abs_diff", "min_label_agreement", "outputs", "measured_on")}
                   | {"windows": rec["probe"]["windows"]} for v, rec in m["parity"].items()},
        "quantization": m["graphs"]["int8"]["settings"]["preset"],
        "fused": m["graphs"]["fp32"]["settings"].get("fused", {}),
        "backbone": backbone if not quick else "tiny random BERT (quick)",
    }
