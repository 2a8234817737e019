"""The response-ranking auxiliary task (MINT-CL): which of two responses better continues a context.

For a context (the first k turns of a dialogue) and two candidate responses a+ (better) and a-
(worse), the student's encoder scores each ``[CLS] context [SEP] response [SEP]`` on its [CLS] state
(:meth:`trainer.model.TurnwiseModel.rank_scores`) and the loss is
:func:`trainer.losses.response_ranking_loss`; training adds it as ``L = L_task + rank_weight * L_rank``.

Pairs:
- a dialogue whose ``meta.ranked_pairs`` lists ``{"context_turns": k, "better": str, "worse": str}``
  (e.g. from a dialogue generator) gives exactly those pairs, the responses spoken by the agent;
- any other dialogue gives one candidate per turn k >= 1: the context is turns 0..k-1, a+ is turn k
  itself, and a- is a turn drawn (per step) from another dialogue whose label for the ranking task
  differs from turn k's (responses of other intents, as the paper balances its negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.losses import response_ranking_loss
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.window import turn_string

AGENT = "agent"
MAX_DRAWS = 20  # tries to draw a negative of another label before any other dialogue's turn will do


@dataclass
class RankSet:
    """Tokenized turns plus the ranking candidates drawn from them."""

    turn_ids: list[list[list[int]]] = field(default_factory=list)  # per dialogue, per turn (role-tagged)
    # (dialogue, context turns k, better ids, worse ids or None = draw one, label of the better response)
    candidates: list[tuple[int, int, list[int], list[int] | None, str | None]] = field(default_factory=list)
    pool: list[tuple[int, int, str]] = field(default_factory=list)  # (dialogue, turn, label): negatives to draw

    def __len__(self) -> int:
        return len(self.candidates)


def _ranked_pairs(dlg: Dialogue) -> list[tuple[int, str, str]]:
    raw = dlg.meta.get("ranked_pairs")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DataError(f"dialogue '{dlg.dialogue_id}': meta.ranked_pairs must be a list")
    out = []
    for i, p in enumerate(raw):
        k = p.get("context_turns") if isinstance(p, dict) else None
        better = p.get("better") if isinstance(p, dict) else None
        worse = p.get("worse") if isinstance(p, dict) else None
        if (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(dlg.turns)
                or not isinstance(better, str) or not isinstance(worse, str) or not better.strip()
                or not worse.strip()):
            raise DataError(f"dialogue '{dlg.dialogue_id}': meta.ranked_pairs[{i}] must be "
                            f'{{"context_turns": 1..{len(dlg.turns)}, "better": text, "worse": text}}')
        out.append((k, better, worse))
    return out


def _tokenize(tokenizer: Any, strings: list[str]) -> list[list[int]]:
    return list(tokenizer(strings, add_special_tokens=False)["input_ids"]) if strings else []


def build_rank_set(dialogues: Sequence[Dialogue], task: str, tokenizer: Any) -> RankSet:
    """Candidates of every dialogue; ``task`` is the label that tells two intents apart for negatives."""
    out = RankSet()
    for di, dlg in enumerate(dialogues):
        ids = _tokenize(tokenizer, [turn_string(t) for t in dlg.turns])
        out.turn_ids.append(ids)
        pairs = _ranked_pairs(dlg)
        if pairs:
            texts = [turn_string({"speaker": AGENT, "text": s}) for _, b, w in pairs for s in (b, w)]
            enc = _tokenize(tokenizer, texts)
            out.candidates.extend((di, k, enc[2 * j], enc[2 * j + 1], None) for j, (k, _, _) in enumerate(pairs))
        for k, turn in enumerate(dlg.turns):
            label = turn.labels.get(task)
            label = label if isinstance(label, str) else None
            if label is not None:
                out.pool.append((di, k, label))
            if k >= 1 and not pairs:
                out.candidates.append((di, k, ids[k], None, label))
    return out


def _draw_negative(rs: RankSet, dialogue: int, label: str | None, rng: np.random.Generator) -> list[int]:
    pick = None
    for _ in range(MAX_DRAWS):
        d, k, lab = rs.pool[int(rng.integers(len(rs.pool)))]
        if d != dialogue and (label is None or lab != label):
            return rs.turn_ids[d][k]
        if d != dialogue:
            pick = rs.turn_ids[d][k]
    if pick is None:
        raise DataError("response ranking needs labelled turns from at least two dialogues to draw negatives")
    return pick


def pair_inputs(context: Sequence[Sequence[int]], response: Sequence[int], tokenizer: Any, max_tokens: int,
                max_turns: int) -> tuple[list[int], list[int]]:
    """``[CLS] context [SEP] response [SEP]`` (the context cut from the left) and its token types."""
    resp = list(response)[: max(1, max_tokens // 2)]
    budget = max(0, max_tokens - 3 - len(resp))
    ctx = [t for turn in list(context)[-max_turns:] for t in turn][-budget:] if budget else []
    ids = [tokenizer.cls_token_id, *ctx, tokenizer.sep_token_id, *resp, tokenizer.sep_token_id]
    return ids, [0] * (len(ctx) + 2) + [1] * (len(resp) + 1)


def rank_batch(rs: RankSet, n: int, rng: np.random.Generator, tokenizer: Any, max_tokens: int,
               max_turns: int) -> dict[str, torch.Tensor]:
    """``n`` candidates: rows 0..n-1 the better responses, rows n..2n-1 the worse (padded, (2n, T))."""
    if not len(rs):
        raise DataError("no response-ranking candidates: dialogues need two turns or meta.ranked_pairs")
    chosen = rng.choice(len(rs), size=min(n, len(rs)), replace=False)
    better, worse = [], []
    for c in chosen:
        d, k, b, w, label = rs.candidates[int(c)]
        w = w if w is not None else _draw_negative(rs, d, label, rng)
        better.append(pair_inputs(rs.turn_ids[d][:k], b, tokenizer, max_tokens, max_turns))
        worse.append(pair_inputs(rs.turn_ids[d][:k], w, tokenizer, max_tokens, max_turns))
    rows = better + worse
    length = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), length), tokenizer.pad_token_id, dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for i, (seq, tt) in enumerate(rows):
        ids[i, : len(seq)], types[i, : len(seq)], mask[i, : len(seq)] = seq, tt, 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.from_numpy(types)}


def rank_loss(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The ranking loss of one :func:`rank_batch` through the student's ranker."""
    s = model.rank_scores(**{k: v.to(device) for k, v in batch.items()}).float()
    half = len(s) // 2
    return response_ranking_loss(s[:half], s[half:])
