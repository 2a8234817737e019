"""int8 dynamic quantization for CPU serving; the settings are a dataclass preset saved beside the model.

Dynamic quantization: weights are int8 once, offline; activations are quantized per call
(DynamicQuantizeLinear -> uint8) so no calibration data is needed. On the fused graph the quantizer
turns each Attention into QAttention and every remaining weight MatMul into MatMulInteger.

Presets (``PRESETS``) follow optimum-onnx's ``AutoQuantizationConfig`` naming:
- ``avx512_vnni`` (default): u8 activations x s8 weights, full 8-bit range. VNNI's VPDPBUSD does this
  without overflow. Per-tensor weights: per-channel was ~25 % slower through QAttention on this CPU
  and int8 parity already clears 99 % label agreement without it.
- ``avx2``: the same with ``reduce_range`` (7-bit weights): pre-VNNI u8 x s8 multiply-adds
  (VPMADDUBSW) saturate at int16, which 7-bit weights avoid.
- ``accurate``: per-channel weights, for a model whose int8 parity misses by a little.

The classification heads stay float32 in every preset (``keep_heads_fp32``): they are a few thousand
weights, so int8 saves nothing there, and their error would land directly on the logits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from export.errors import ExportError
from export.onnx_export import GraphInfo, op_counts

QUANTIZATION_FILE = "quantization.json"


@dataclass(frozen=True)
class QuantizationPreset:
    name: str
    weight_type: str = "QInt8"  # onnxruntime.quantization.QuantType member
    activation_type: str = "QUInt8"  # fixed by dynamic quantization (DynamicQuantizeLinear emits uint8)
    per_channel: bool = False
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    weight_symmetric: bool = True
    # Only MatMuls whose B is a weight: activation x activation products (QK^T, AV) stay float.
    matmul_const_b_only: bool = True
    keep_heads_fp32: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_types"] = list(self.op_types)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizationPreset:
        d = dict(d)
        d["op_types"] = tuple(d.get("op_types", ()))
        return cls(**d)


PRESETS: dict[str, QuantizationPreset] = {
    "avx512_vnni": QuantizationPreset(name="avx512_vnni"),
    "avx2": QuantizationPreset(name="avx2", reduce_range=True),
    "accurate": QuantizationPreset(name="accurate", per_channel=True),
}
DEFAULT_PRESET = "avx512_vnni"


def get_preset(name: str | QuantizationPreset) -> QuantizationPreset:
    if isinstance(name, QuantizationPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ExportError(f"unknown quantization preset '{name}' (choose from {sorted(PRESETS)})") from None


def head_nodes(model_path: Path, head_outputs: list[str]) -> list[str]:
    """Names of the nodes producing the task logits, plus the MatMul the quantizer makes of a head Gemm."""
    proto = onnx.load(str(model_path), load_external_data=False)
    names: list[str] = []
    for node in proto.graph.node:
        if set(node.output) & set(head_outputs):
            names.append(node.name)
            if node.op_type == "Gemm":
                # onnxruntime.quantization's dynamic mode rewrites Gemm -> MatMul named "<gemm>_MatMul" + Add.
                names.append(f"{node.name}_MatMul")
    return names


def quantize_int8(src: Path, dst: Path, preset: QuantizationPreset, *, head_outputs: list[str],
                  built_from: str) -> GraphInfo:
    """Dynamic int8 quantization of ``src`` into ``dst``; writes quantization.json beside it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = head_nodes(src, head_outputs) if preset.keep_heads_fp32 else []
    with _quiet_preprocess_hint():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(preset.op_types),
            per_channel=preset.per_channel,
            reduce_range=preset.reduce_range,
            weight_type=QuantType[preset.weight_type],
            nodes_to_exclude=exclude,
            extra_options={
                "WeightSymmetric": preset.weight_symmetric,
                "MatMulConstBOnly": preset.matmul_const_b_only,
                # Outputs of fused com.microsoft ops have no inferred type; they are all float32 here.
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                **preset.extra,
            },
        )
    save_preset(preset, dst.parent / QUANTIZATION_FILE, model_file=dst.name, built_from=built_from)
    settings = {"tool": "onnxruntime.quantization.quantize_dynamic", "preset": preset.to_dict(),
                "excluded_nodes": exclude}
    return GraphInfo(source="quantized", built_from=built_from, settings=settings, op_counts=op_counts(dst))


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    # quantize_dynamic logs a generic "consider pre-processing" hint on the root logger for every
    # model; shape inference (what it refers to) is done by the quantizer itself for our graphs.
    hint = _DropHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def save_preset(preset: QuantizationPreset, path: Path, *, model_file: str, built_from: str) -> None:
    body = {"model": model_file, "built_from": built_from, "mode": "dynamic", "preset": preset.to_dict()}
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def load_preset(path: Path) -> QuantizationPreset:
    return QuantizationPreset.from_dict(json.loads(path.read_text(encoding="utf-8"))["preset"])
