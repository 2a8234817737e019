"""PyTorch student -> ONNX graphs: the raw export, the fused fp32 graph, and the fp16 graph.

Exporter choice: ``torch.onnx.export`` (the TorchScript tracer, ``dynamo=False``), called directly.
optimum-onnx's exporter is built around ``PreTrainedModel`` + a registered ``OnnxConfig`` per
architecture with fixed output names (``last_hidden_state``, ``logits``); our student is a plain
``nn.Module`` (encoder + one head per task, outputs ``logits_<task>``), so using optimum would mean a
custom ``OnnxConfig`` subclass, a fake ``.config`` on the wrapper and its dummy-input generators —
and at the end optimum calls exactly ``torch.onnx.export(..., dynamo=False)`` itself
(optimum/exporters/onnx/convert.py). Calling it directly keeps the same machinery with one layer less.
The dynamo exporter (torch's default since 2.9) needs ``onnxscript``, which is not a dependency; the
tracer handles BERT (sdpa attention included) and produces the op patterns the onnxruntime
transformer optimizer knows how to fuse. What we keep from optimum is its habit: one config object
(:class:`TurnwiseOnnxConfig`) declares input names, dynamic axes, opset and tolerance.

Graphs:
- raw: the traced graph, standard ONNX ops only (what TensorRT parses; the fp16 variant is built from it).
- optimized (the fp32 variant): ``onnxruntime.transformers.optimizer`` with ``model_type="bert"``:
  EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu fusions (com.microsoft ops,
  CPU and CUDA kernels). ``opt_level=1`` runs only ORT's basic, hardware-independent rewrites first,
  so the file is portable across machines.
- fp16: float16 conversion of the raw graph with ``keep_io_types=True``: int64 inputs and float32
  logits stay as they are, so callers never see half floats. The raw graph (not the fused one) is
  converted because TensorRT parses only standard ops (contrib ops would split its engine), and on
  the CUDA provider ORT's own extended-level graph fusions still apply at session creation. Not
  measured on a GPU here: the backend benchmark records that section as skipped.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

from export.errors import ExportError
from export.parity import Tolerance
from trainer.model import TurnwiseModel
from turnwise.names import ONNX_INPUTS, logits_output

DEFAULT_OPSET = 17  # first opset with a native LayerNormalization; supported by every ORT >= 1.14
INPUT_NAMES = ONNX_INPUTS
output_name = logits_output


@dataclass(frozen=True)
class TurnwiseOnnxConfig:
    """What the graph looks like to its callers, and how close it must stay to PyTorch.

    Inputs are int64 (B, T) with both axes dynamic; outputs are float32 (B, C_task), batch dynamic.
    A hierarchical task's output holds its levels' logits one after another (C_task = its nodes),
    computed by the label-attention heads over the window's tokens.
    """

    tasks: tuple[str, ...]
    opset: int = DEFAULT_OPSET
    input_names: tuple[str, ...] = INPUT_NAMES
    # fp32 tolerance: re-associated sums in fused kernels (blocked GEMMs, fused LayerNorm/GELU) move
    # logits by ~1e-6 on MiniLM; 1e-4 leaves headroom for trained logits of larger magnitude and for
    # other CPUs' kernels, while any real export bug (mask, positions, pooling) shows up at >= 1e-2.
    fp32_atol: float = 1e-4
    # int8 / fp16 change logits by ~1e-2; what must survive is the decision.
    min_label_agreement: float = 0.99
    dynamic_axes: dict[str, dict[int, str]] = field(init=False)

    def tolerances(self) -> dict[str, Tolerance]:
        """Per variant: what its parity record must meet (fp32 within fp32_atol; every variant keeps the
        labels on at least min_label_agreement of the probes)."""
        return {
            "fp32": Tolerance(max_abs_diff=self.fp32_atol, min_label_agreement=self.min_label_agreement),
            "int8": Tolerance(max_abs_diff=None, min_label_agreement=self.min_label_agreement),
            "fp16": Tolerance(max_abs_diff=None, min_label_agreement=self.min_label_agreement),
        }

    def __post_init__(self) -> None:
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in self.input_names}
        axes.update({o: {0: "batch"} for o in self.output_names})
        object.__setattr__(self, "dynamic_axes", axes)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(output_name(t) for t in self.tasks)

    def io(self) -> dict[str, Any]:
        return {"inputs": list(self.input_names), "outputs": list(self.output_names),
                "input_dtype": "int64", "output_dtype": "float32", "dynamic_axes": self.dynamic_axes}


def _dummy_inputs(model: TurnwiseModel) -> tuple[torch.Tensor, ...]:
    # Batch 2, length 16 with one padded row: no axis of size 1 for the tracer to specialise on, and
    # the masking path is exercised while tracing.
    vocab = model.encoder.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab - 1), vocab, (2, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    return ids, mask, torch.zeros_like(ids)


def export_raw(model: TurnwiseModel, path: Path, cfg: TurnwiseOnnxConfig) -> Path:
    """Trace the student (eval mode, no dropout) to ``path``; returns it."""
    if tuple(model.task_names) != cfg.tasks:
        raise ExportError(f"model heads {model.task_names} differ from the export config's tasks "
                          f"{list(cfg.tasks)}")
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation and transformers' mask code raises
        # TracerWarnings about constants that do not depend on shapes; parity is what proves the graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            _dummy_inputs(model),
            str(path),
            input_names=list(cfg.input_names),
            output_names=list(cfg.output_names),
            dynamic_axes=cfg.dynamic_axes,
            opset_version=cfg.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto)
    _check_io(proto, cfg)
    return path


def _check_io(proto: onnx.ModelProto, cfg: TurnwiseOnnxConfig) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != list(cfg.input_names) or outputs != list(cfg.output_names):
        raise ExportError(f"exported graph has inputs {inputs} and outputs {outputs}; expected "
                          f"{list(cfg.input_names)} and {list(cfg.output_names)}")


@dataclass
class GraphInfo:
    """How a shipped graph was produced; recorded per variant in bundle.json."""

    source: str  # "raw" | "optimized" | "quantized" | "fp16"
    built_from: str | None
    settings: dict[str, Any]
    op_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "built_from": self.built_from, "settings": self.settings,
                "op_counts": self.op_counts}


def op_counts(path: Path) -> dict[str, int]:
    proto = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))


def optimize_fp32(raw: Path, out: Path, *, num_heads: int, hidden_size: int) -> GraphInfo:
    """Transformer fusions for BERT encoders (CPU target, portable: only basic ORT rewrites)."""
    from onnxruntime.transformers.optimizer import optimize_model

    settings = {"tool": "onnxruntime.transformers.optimizer.optimize_model", "model_type": "bert",
                "num_heads": num_heads, "hidden_size": hidden_size, "opt_level": 1, "use_gpu": False}
    opt = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                         opt_level=1, use_gpu=False)
    fused = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(out))
    settings["fused"] = fused
    return GraphInfo(source="optimized", built_from="raw", settings=settings, op_counts=op_counts(out))


def convert_fp16(raw: Path, out: Path) -> GraphInfo:
    """float16 weights and activations, float32 logits and int64 inputs at the boundary."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(raw))
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(out))
    settings = {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True}
    return GraphInfo(source="fp16", built_from="raw", settings=settings, op_counts=op_counts(out))


def default_tolerances() -> dict[str, Tolerance]:
    """The tolerances :class:`TurnwiseOnnxConfig` declares, per variant."""
    return TurnwiseOnnxConfig(tasks=()).tolerances()
