"""Pair sampling for preference pretraining.

A training batch holds the segments of a few whole dialogues, so every intra-session pair inside the
batch costs no extra forward pass. For each (task, class c) a pair (a, b) is kept when the teacher
prefers a: ``S_a^c - S_b^c > min_gap``, and oriented so the first element is the more positive one.

Equal-score policy: pairs whose teacher scores differ by at most ``min_gap`` (default 1e-6, i.e. exact
ties of the vote fractions) are DROPPED. A tie carries no preference, and training it towards 0.5
would pull the scores of every same-score pair together -- for the most common case (two turns on
which every vote agreed) that only fights the finetuning signal. ``min_gap`` > 0 also drops
near-ties, which is where a teacher's ordering is least reliable.

Per-dialogue budget: at most ``budget`` pairs per (dialogue, task, class), drawn without replacement
with probability proportional to ``ΔS ** gap_power`` (0 = uniform). Inter-session control pairs
(paper Fig. 4, H2 ablation) use the same rule on pairs whose segments come from DIFFERENT dialogues
of the batch, with the same total budget, so intra and inter runs see the same number of pairs.
Everything is drawn from a ``numpy.random.Generator``: same seed, same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairConfig:
    mode: str = "intra"  # "intra" (same dialogue, the method) or "inter" (different dialogues, the control)
    budget: int = 16  # pairs per (dialogue, class); 16 covers most pairs of a 6-8 turn dialogue
    min_gap: float = 1e-6  # pairs with |ΔS| <= min_gap are dropped (the equal-score policy)
    gap_power: float = 1.0  # sampling weight ΔS**p: prefer pairs the teacher separates clearly

    def __post_init__(self) -> None:
        if self.mode not in ("intra", "inter"):
            raise ValueError("pair mode must be 'intra' or 'inter'")
        if self.budget < 1:
            raise ValueError("pair budget must be >= 1")


@dataclass
class Pairs:
    """Index arrays into the batch's segments: ``first`` is preferred over ``second`` for ``cls``."""

    first: np.ndarray  # (P,) int
    second: np.ndarray  # (P,) int
    cls: np.ndarray  # (P,) int
    gap: np.ndarray  # (P,) float, S_first - S_second > 0

    def __len__(self) -> int:
        return len(self.first)


def _choose(cand_a: np.ndarray, cand_b: np.ndarray, gaps: np.ndarray, k: int, power: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(gaps) <= k:
        return cand_a, cand_b, gaps
    p = gaps**power if power > 0 else np.ones_like(gaps)
    idx = rng.choice(len(gaps), size=k, replace=False, p=p / p.sum())
    idx.sort()
    return cand_a[idx], cand_b[idx], gaps[idx]


def _oriented(scores_a: np.ndarray, scores_b: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray,
              min_gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = scores_a - scores_b
    keep = np.abs(d) > min_gap
    a, b, d = idx_a[keep], idx_b[keep], d[keep]
    flip = d < 0
    first = np.where(flip, b, a)
    second = np.where(flip, a, b)
    return first, second, np.abs(d)


def sample_pairs(scores: np.ndarray, dialogue_of: np.ndarray, cfg: PairConfig, rng: np.random.Generator,
                 valid: np.ndarray | None = None) -> Pairs:
    """Sample preference pairs among the N segments of a batch.

    ``scores`` (N, C) teacher scores; ``dialogue_of`` (N,) the dialogue index of each segment;
    ``valid`` (N,) bool, segments that have a teacher score (others never enter a pair).
    """
    n, num_classes = scores.shape
    valid = np.ones(n, dtype=bool) if valid is None else valid.astype(bool)
    dialogues = np.unique(dialogue_of[valid])
    firsts, seconds, classes, gaps = [], [], [], []
    for c in range(num_classes):
        for d in dialogues:
            members = np.flatnonzero(valid & (dialogue_of == d))
            if cfg.mode == "intra":
                if len(members) < 2:
                    continue
                ia, ib = np.triu_indices(len(members), k=1)
                a, b = members[ia], members[ib]
            else:
                others = np.flatnonzero(valid & (dialogue_of != d))  # one group per dialogue, as in intra
                if len(members) == 0 or len(others) == 0:
                    continue
                a = np.repeat(members, len(others))
                b = np.tile(others, len(members))
            f, s, g = _oriented(scores[a, c], scores[b, c], a, b, cfg.min_gap)
            f, s, g = _choose(f, s, g, cfg.budget, cfg.gap_power, rng)
            firsts.append(f)
            seconds.append(s)
            gaps.append(g)
            classes.append(np.full(len(f), c))
    if not firsts:
        empty_i = np.zeros(0, dtype=np.int64)
        return Pairs(empty_i, empty_i, empty_i, np.zeros(0))
    return Pairs(np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64),
                 np.concatenate(classes).astype(np.int64), np.concatenate(gaps))
