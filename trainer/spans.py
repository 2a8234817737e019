"""Dialogues -> turn-causal context spans (``turn-causal-v1``), batched by token budget.

One span is encoded in one forward pass and gives the logits of every turn it scores: no token
attends to a later turn, so a turn's representation in the span pass is exactly what the service
computes for it incrementally. Rows are the same as for flat segments --
one per turn, with gold targets and teacher scores -- so losses, pair sampling and metrics are shared;
only the model input differs::

    span  = [usr] my card was charged twice [sys] sorry , which card ? [usr] the visa
    turn  =   0    0   0   0    0      0      1     1   1    1    1  1   2     2   2
    tags  = positions 0, 6, 12 -> rows of turns 0, 1, 2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.segments import SegmentSet, TeacherScores, fill_targets
from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema
from turnwise.window import WindowConfig, plan_spans, turn_token_ids


@dataclass
class SpanSet(SegmentSet):
    """Rows (one per turn, as :class:`SegmentSet`; ``ids`` holds each turn's own tokens) plus spans."""

    span_ids: list[list[int]] = field(default_factory=list)  # token ids of each span
    span_turn: list[np.ndarray] = field(default_factory=list)  # (T,) local turn index of each token
    span_tags: list[np.ndarray] = field(default_factory=list)  # (K,) tag position of each scored turn
    span_rows: list[np.ndarray] = field(default_factory=list)  # (K,) row of each scored turn
    span_dialogue: list[int] = field(default_factory=list)

    def span_lengths(self) -> np.ndarray:
        return np.asarray([len(s) for s in self.span_ids], dtype=np.int64)

    def spans_with(self, rows_mask: np.ndarray) -> np.ndarray:
        """Spans that score at least one row where ``rows_mask`` is true."""
        return np.asarray([i for i, r in enumerate(self.span_rows) if rows_mask[r].any()], dtype=np.int64)


def build_spans(dialogues: Sequence[Dialogue], schema: TaskSchema, tokenizer: Any, window: WindowConfig,
                teacher: TeacherScores | None = None) -> SpanSet:
    if not window.streaming:
        raise ValueError(f"build_spans needs a turn-causal window, got format '{window.format}'")
    out = SpanSet(schema=schema, dialogue_ids=[d.dialogue_id for d in dialogues])
    fill_targets(out, dialogues, teacher)
    row = 0
    for di, dlg in enumerate(dialogues):
        turn_ids = turn_token_ids(dlg.turns, tokenizer, window)
        out.ids.extend(turn_ids)
        lengths = [len(t) for t in turn_ids]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        for span in plan_spans(lengths, window):
            ids = [tok for t in turn_ids[span.start : span.end] for tok in t]
            local = np.repeat(np.arange(span.end - span.start), lengths[span.start : span.end])
            out.span_ids.append(ids)
            out.span_turn.append(local)
            out.span_tags.append(offsets[span.first : span.end] - offsets[span.start])
            out.span_rows.append(np.arange(row + span.first, row + span.end))
            out.span_dialogue.append(di)
        row += len(dlg.turns)
    return out


def turn_causal_mask(turn_index: torch.Tensor) -> torch.Tensor:
    """(B, T) local turn index (-1 = padding) -> (B, T, T) mask: query i may attend key j iff both are
    real tokens and turn(j) <= turn(i) -- its own turn both ways, earlier turns, never a later one."""
    q = turn_index.unsqueeze(2)  # (B, T, 1)
    k = turn_index.unsqueeze(1)  # (B, 1, T)
    return ((k <= q) & (k >= 0) & (q >= 0)).long()


def collate_spans(spans: SpanSet, index: Sequence[int] | np.ndarray, pad_id: int,
                  device: torch.device | None = None) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Model inputs for the spans ``index`` (right-padded) and the rows their pooled tags belong to.

    Returns ``(batch, rows)``: ``batch`` has ``input_ids`` and ``token_type_ids`` (B, T), the 3-D
    ``attention_mask`` (B, T, T) and ``pool_index`` (K, 2) = (span in batch, tag position);
    ``rows`` (K,) maps the K pooled turns back to rows of ``spans``.
    """
    index = np.asarray(index, dtype=np.int64)
    length = max(len(spans.span_ids[i]) for i in index)
    ids = np.full((len(index), length), pad_id, dtype=np.int64)
    turn = np.full((len(index), length), -1, dtype=np.int64)
    pool, rows = [], []
    for b, i in enumerate(index):
        n = len(spans.span_ids[i])
        ids[b, :n] = spans.span_ids[i]
        turn[b, :n] = spans.span_turn[i]
        tags = spans.span_tags[i]
        pool.append(np.stack([np.full(len(tags), b), tags], axis=1))
        rows.append(spans.span_rows[i])
    t_ids = torch.from_numpy(ids)
    batch = {"input_ids": t_ids, "attention_mask": turn_causal_mask(torch.from_numpy(turn)),
             "token_type_ids": torch.zeros_like(t_ids), "pool_index": torch.from_numpy(np.concatenate(pool))}
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch, np.concatenate(rows)


def pack_by_tokens(lengths: np.ndarray, order: np.ndarray, budget: int, rng: np.random.Generator,
                   sort_window: int = 256) -> list[np.ndarray]:
    """Cut ``order`` (span indices) into batches of at most ``budget`` padded tokens (B x T_max).

    Spans are sorted by length inside consecutive windows of ``sort_window`` so a batch pads little,
    then the batches are shuffled with ``rng`` so lengths do not come in a fixed order. A span longer
    than the budget is a batch of its own. Deterministic for a given ``order`` and ``rng`` state.
    """
    if budget < 1:
        raise ValueError("token budget must be >= 1")
    batches: list[np.ndarray] = []
    for w in range(0, len(order), sort_window):
        chunk = order[w : w + sort_window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        current: list[int] = []
        longest = 0
        for i in chunk:
            longest_if = max(longest, int(lengths[i]))
            if current and longest_if * (len(current) + 1) > budget:
                batches.append(np.asarray(current, dtype=np.int64))
                current, longest_if = [], int(lengths[i])
            current.append(int(i))
            longest = longest_if
        if current:
            batches.append(np.asarray(current, dtype=np.int64))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]
