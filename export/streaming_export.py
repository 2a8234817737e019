"""Variants of a turn-causal (streaming) bundle: the step graph in fp32, int8 and fp16, each proven by
:mod:`export.step_parity` before it is kept.

- fp32: the traced step graph (standard ONNX ops; ONNX Runtime applies its own fusions when the
  session is created). The transformer optimizer's BERT fusions do not apply: they match the flat
  encoder's attention pattern, not an attention over cached keys/values.
- int8: dynamic quantization of the weight MatMuls (the presets of :mod:`export.quantize`);
  activation x activation products (QK^T, AV over the cache) stay float, and so do the heads.
- fp16: float16 conversion with float32 / int64 at the boundary (``past_kv`` stays float32, so a
  call's cache is the same whichever variant serves it).

A variant that fails parity is not written; :func:`ship_streaming` records why in ``rejected``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundle.manifest import VARIANT_FILES
from bundle.streaming import kv_row_shape
from export.errors import ParityError
from export.onnx_export import GraphInfo, convert_fp16, op_counts
from export.parity import Tolerance, check, compare, parity_session, record_with
from export.quantize import QUANTIZATION_FILE, QuantizationPreset, quantize_int8
from export.step_graph import export_step, step_io
from export.step_parity import DialogueProbes, build_dialogue_probes, ort_step_runner, replay, torch_reference
from turnwise.names import logits_output


@dataclass
class Shipped:
    """What the variants of a bundle came to: per variant its graph info and parity record, or why not."""

    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: dict[str, dict[str, Any]] = field(default_factory=dict)
    io: dict[str, Any] = field(default_factory=dict)


def ship_streaming(ckpt: Any, arch: dict[str, Any], opts: Any, ladder: list[QuantizationPreset],
                   variants: list[str], pad: int, scratch: Path, staging: Path,
                   say: Callable[[str], None]) -> Shipped:
    tasks = list(ckpt.schema.names())
    kv_shape = kv_row_shape(arch)
    say("building the probe dialogues")
    probes = build_dialogue_probes(ckpt.tokenizer, ckpt.window, opts.probe_data)
    say(f"PyTorch reference: full passes over the spans of {len(probes.dialogues)} probe dialogues")
    reference = torch_reference(ckpt.model, probes)
    say(f"exporting the step graph (opset {opts.opset})")
    raw = export_step(ckpt.model, scratch / "step.raw.onnx", opts.opset)
    raw_info = GraphInfo(source="raw", built_from=None, op_counts=op_counts(raw),
                         settings={"tool": "torch.onnx.export", "dynamo": False, "opset": opts.opset,
                                   "graph": "step"})
    out = Shipped(io=step_io(tasks))

    def prove(variant: str, path: Path, tol: Tolerance) -> dict[str, Any]:
        session, provider = parity_session(path, variant)
        got = replay(ort_step_runner(session, tasks), probes, tasks, kv_shape, pad)
        rec = record_with(variant, path.name, compare(ckpt.schema, reference, got, logits_output), tol,
                          probes.describe(), provider)
        check(variant, rec)
        return rec

    def attempt(variant: str, build: Callable[[Path], tuple[Any, dict[str, Any] | None]]) -> None:
        dst = staging / VARIANT_FILES[variant]
        try:
            info, rec = build(dst)
            if rec is None:
                say(f"parity: {variant} (step graph, turn by turn)")
                rec = prove(variant, dst, opts.tolerances[variant])
            out.parity[variant] = rec
            out.graphs[variant] = info.to_dict() if isinstance(info, GraphInfo) else info
        except ParityError as err:
            dst.unlink(missing_ok=True)
            if variant == "int8":
                (staging / QUANTIZATION_FILE).unlink(missing_ok=True)
            out.rejected[variant] = err.to_record()

    if "fp32" in variants:
        attempt("fp32", lambda dst: (shutil.copyfile(raw, dst), (raw_info, None))[1])
    if "int8" in variants:
        attempt("int8", lambda dst: _int8(raw, dst, ladder, tasks, arch, prove, opts, say))
    if "fp16" in variants:
        attempt("fp16", lambda dst: (convert_fp16(raw, dst), None))
    return out


def _int8(raw: Path, dst: Path, ladder: list[QuantizationPreset], tasks: list[str], arch: dict[str, Any],
          prove: Callable[[str, Path, Tolerance], dict[str, Any]], opts: Any,
          say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first preset of the ladder whose parity passes (every attempt recorded); the last error otherwise."""
    attempts: list[dict[str, Any]] = []
    for i, preset in enumerate(ladder):
        say(f"quantizing the step graph to int8 (preset {preset.name})")
        info = quantize_int8(raw, dst, preset, head_outputs=[logits_output(t) for t in tasks], built_from="raw",
                             ffn_output_shape=(arch["intermediate_size"], arch["hidden_size"]))
        say(f"parity: int8 ({preset.name}, step graph, turn by turn)")
        try:
            rec = prove("int8", dst, opts.tolerances["int8"])
        except ParityError as err:
            attempts.append({"preset": preset.name, "passed": False, "error": str(err)})
            if i == len(ladder) - 1:
                raise
            continue
        attempts.append({"preset": preset.name, "passed": True})
        return {**info.to_dict(), "settings_file": QUANTIZATION_FILE, "attempts": attempts}, rec
    raise ParityError("int8", "-", "label_agreement", 0.0, 1.0)  # an empty ladder is refused earlier


__all__ = ["DialogueProbes", "Shipped", "ship_streaming"]
