"""The turn-causal student as a *step*: new tokens + cached keys/values -> logits and new keys/values.

:class:`StepModel` re-expresses a BERT-style encoder's forward (the student's own weights, nothing
copied or re-initialised) with the past keys/values as an input, so the service can score a turn by
encoding only its tokens. The inputs and outputs are described in :mod:`bundle.streaming`; the
maths per layer is BERT's, with one attention over ``[past; new]``::

    h0   = LN(E_word[ids] + E_pos[position_ids] + E_type[0])
    q, k, v = h W_q, h W_k, h W_v                    (new tokens only; k, v also go to new_kv)
    a    = softmax(q [k_past; k]^T / sqrt(d) - 10^4 (1 - mask)) [v_past; v]
    h'   = LN(h + a W_o);  h'' = LN(h' + GELU(h' W_1) W_2)

The additive mask uses -10^4 rather than the dtype's minimum so the fp16 conversion of the graph
keeps finite scores (a padded row would otherwise turn into NaN and leak through 0 * NaN); exp(-10^4)
is exactly 0 in float32, so the result equals the training model's masked attention.

The heads are the student's own modules applied to every new token's state: a linear head, or a
hierarchical task's per-level label-attention heads, which on one pooled state reduce to a linear
map per level (their logits concatenated level by level, as in training).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from bundle.streaming import NEW_KV, STEP_INPUTS
from export.errors import ExportError
from trainer.model import TurnwiseModel
from turnwise.names import logits_output

MASK_PENALTY = 10_000.0


class StepModel(nn.Module):
    def __init__(self, student: TurnwiseModel):
        super().__init__()
        enc: Any = student.encoder
        for part in ("embeddings", "encoder"):
            if not hasattr(enc, part):
                raise ExportError(f"the streaming step graph needs a BERT-style encoder (embeddings + encoder "
                                  f"layers); {type(enc).__name__} has no '{part}'")
        cfg = enc.config
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            raise ExportError(f"position_embedding_type {cfg.position_embedding_type!r} is not supported "
                              "by the step graph (absolute positions only)")
        self.embeddings: Any = enc.embeddings
        self.layers: Any = enc.encoder.layer
        self.heads = student.heads
        self.task_names = list(student.task_names)
        self.num_heads = cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.head_dim = self.hidden // self.num_heads

    def _embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        x = e.word_embeddings(input_ids) + e.position_embeddings(position_ids)
        x = x + e.token_type_embeddings(torch.zeros_like(input_ids))
        return e.LayerNorm(x)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, hidden) -> (B, heads, T, d)
        b, t = x.shape[0], x.shape[1]
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                past_kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self._embed(input_ids, position_ids)
        penalty = (1.0 - attention_mask.to(h.dtype)).unsqueeze(1) * -MASK_PENALTY  # (B, 1, N, P+N)
        new_kv = []
        scale = 1.0 / math.sqrt(self.head_dim)
        for i, layer in enumerate(self.layers):
            att = layer.attention.self
            q, k, v = att.query(h), att.key(h), att.value(h)
            new_kv.append(torch.stack([k, v], dim=2))  # (B, N, 2, hidden)
            keys = torch.cat([past_kv[:, :, i, 0], k], dim=1)
            values = torch.cat([past_kv[:, :, i, 1], v], dim=1)
            scores = torch.matmul(self._split(q), self._split(keys).transpose(-1, -2)) * scale + penalty
            ctx = torch.matmul(torch.softmax(scores, dim=-1), self._split(values))  # (B, heads, N, d)
            ctx = ctx.transpose(1, 2).reshape(h.shape[0], h.shape[1], self.hidden)
            h = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + h)
            inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))
            h = layer.output.LayerNorm(layer.output.dense(inner) + h)
        logits = tuple(self.heads[n](h) for n in self.task_names)
        return (*logits, torch.stack(new_kv, dim=2))  # new_kv (B, N, L, 2, hidden)


def step_output_names(tasks: list[str] | tuple[str, ...]) -> list[str]:
    return [*(logits_output(t) for t in tasks), NEW_KV]


def step_io(tasks: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The ``io`` entry of a streaming bundle's manifest."""
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "new"}, "position_ids": {0: "batch", 1: "new"},
        "attention_mask": {0: "batch", 1: "new", 2: "past_plus_new"}, "past_kv": {0: "batch", 1: "past"},
        **{logits_output(t): {0: "batch", 1: "new"} for t in tasks}, NEW_KV: {0: "batch", 1: "new"}}
    return {"graph": "step", "inputs": list(STEP_INPUTS), "outputs": step_output_names(tasks),
            "input_dtype": {"input_ids": "int64", "position_ids": "int64", "attention_mask": "int64",
                            "past_kv": "float32"},
            "output_dtype": "float32", "past_kv_layout": "(batch, past, layers, 2 [key, value], hidden)",
            "dynamic_axes": axes}


def _dummy(step: StepModel, vocab: int) -> tuple[torch.Tensor, ...]:
    # Batch 2, 5 new over 3 cached tokens, one row padded: no axis of size 1 (or equal to another)
    # for the tracer to specialise on.
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab - 1), vocab, (2, 5), generator=g)
    pos = torch.arange(3, 8).repeat(2, 1)
    mask = torch.ones(2, 5, 8, dtype=torch.int64)
    mask[1, :, 6:] = 0
    past = torch.randn(2, 3, len(step.layers), 2, step.hidden, generator=g)
    return ids, pos, mask, past


def export_step(student: TurnwiseModel, path: Path, opset: int) -> Path:
    """Trace the step graph of ``student`` (eval mode) to ``path``."""
    step = StepModel(student.eval()).eval()
    names = step_output_names(step.task_names)
    axes = step_io(step.task_names)["dynamic_axes"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation / tracer notices; parity proves it
        torch.onnx.export(step, _dummy(step, student.encoder.config.vocab_size), str(path),
                          input_names=list(STEP_INPUTS), output_names=names, dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto)
    got = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if got != (list(STEP_INPUTS), names):
        raise ExportError(f"exported step graph has inputs/outputs {got}; expected {list(STEP_INPUTS)}, {names}")
    return path
