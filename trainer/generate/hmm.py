"""The intent Markov chain of Chain-of-Intent: estimated from labelled dialogues, sampled into intent chains.

From the dialogues' labelled turns of one task (one label per turn: binary or multiclass):

- ``P(T)``: the distribution of the number of labelled turns per dialogue (empirical, no smoothing);
- ``pi``: the distribution of the first turn's intent, ``pi_i = (n_i + alpha) / (N + alpha K)``;
- ``A``: the intent-transition matrix, ``A_ij = (n_ij + alpha) / (n_i. + alpha K)`` over consecutive
  labelled turns of a dialogue (add-``alpha`` smoothing: every transition stays possible);

with ``K`` the intents seen in the data (the states; an intent with no example utterance cannot be
emitted, so unseen labels of the schema are not states). A chain is ``T ~ P(T)``, ``s_1 ~ pi``,
``s_t ~ A[s_{t-1}]``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from turnwise.dialogue import Dialogue
from turnwise.errors import DataError


def labelled_sequence(dialogue: Dialogue, task: str) -> list[str]:
    """The task's labels of a dialogue's labelled turns, in order (a list label is an error)."""
    out = []
    for t in dialogue.turns:
        if task not in t.labels:
            continue
        value = t.labels[task]
        if not isinstance(value, str):
            raise DataError(f"task '{task}' is multilabel in dialogue '{dialogue.dialogue_id}': Chain-of-Intent "
                            "needs one intent per turn (a binary or multiclass task)")
        out.append(value)
    return out


@dataclass
class IntentHMM:
    states: list[str]
    lengths: list[int]  # the turn counts T seen
    length_probs: np.ndarray  # P(T) over ``lengths``
    initial: np.ndarray  # pi, over states
    transitions: np.ndarray  # A, rows sum to 1
    initial_counts: np.ndarray
    transition_counts: np.ndarray
    smoothing: float
    task: str
    dialogues: int

    @classmethod
    def estimate(cls, dialogues: Sequence[Dialogue], task: str, *, smoothing: float = 0.1,
                 max_turns: int | None = None) -> IntentHMM:
        """Eq. 1-2 of Chain-of-Intent: P(T), pi and A from the dialogues with at least one labelled turn.
        ``max_turns`` caps the turn counts (longer dialogues count as ``max_turns`` turns long)."""
        if smoothing < 0:
            raise ValueError("smoothing must be >= 0")
        seqs = [s for s in (labelled_sequence(d, task) for d in dialogues) if s]
        if not seqs:
            raise DataError(f"no dialogue has a gold '{task}' label to estimate the intent chain from")
        states = sorted({x for s in seqs for x in s})
        index = {s: i for i, s in enumerate(states)}
        k = len(states)
        init = np.zeros(k)
        trans = np.zeros((k, k))
        lengths: dict[int, int] = {}
        for s in seqs:
            t = len(s) if max_turns is None else min(len(s), max_turns)
            lengths[t] = lengths.get(t, 0) + 1
            init[index[s[0]]] += 1
            for a, b in itertools.pairwise(s):
                trans[index[a], index[b]] += 1
        ls = sorted(lengths)
        lp = np.array([lengths[t] for t in ls], dtype=float)
        return cls(states=states, lengths=ls, length_probs=lp / lp.sum(), initial=_smooth(init, smoothing),
                   transitions=np.stack([_smooth(row, smoothing) for row in trans]), initial_counts=init,
                   transition_counts=trans, smoothing=smoothing, task=task, dialogues=len(seqs))

    # -- sampling -----------------------------------------------------------------------------------

    def sample_chain(self, rng: np.random.Generator) -> list[str]:
        t = int(rng.choice(self.lengths, p=self.length_probs))
        s = int(rng.choice(len(self.states), p=self.initial))
        chain = [s]
        for _ in range(t - 1):
            s = int(rng.choice(len(self.states), p=self.transitions[s]))
            chain.append(s)
        return [self.states[i] for i in chain]

    def sample_chains(self, n: int, seed: int) -> list[list[str]]:
        rng = np.random.default_rng([seed, 4242])
        return [self.sample_chain(rng) for _ in range(n)]

    # -- checks -------------------------------------------------------------------------------------

    def transition_chi_square(self, chains: Sequence[Sequence[str]], min_expected: float = 5.0) -> tuple[float, int]:
        """Pearson's chi-square of the chains' transition counts against ``A``: for every row with
        observations, the cells whose expected count is at least ``min_expected`` (the rest of the row
        pooled into one cell). Returns (statistic, degrees of freedom)."""
        index = {s: i for i, s in enumerate(self.states)}
        counts = np.zeros_like(self.transitions)
        for c in chains:
            for a, b in itertools.pairwise(c):
                counts[index[a], index[b]] += 1
        stat, df = 0.0, 0
        for i in range(len(self.states)):
            n = counts[i].sum()
            if n == 0:
                continue
            exp = n * self.transitions[i]
            big = exp >= min_expected
            obs_cells = [*counts[i][big], counts[i][~big].sum()]
            exp_cells = [*exp[big], exp[~big].sum()]
            cells = [(o, e) for o, e in zip(obs_cells, exp_cells, strict=True) if e > 0]
            stat += sum((o - e) ** 2 / e for o, e in cells)
            df += len(cells) - 1
        return float(stat), df

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "states": self.states, "smoothing": self.smoothing, "dialogues": self.dialogues,
                "turn_count": {"T": self.lengths, "p": _round(self.length_probs),
                               "n": [round(float(p) * self.dialogues) for p in self.length_probs]},
                "initial": _round(self.initial), "transitions": [_round(r) for r in self.transitions],
                "initial_counts": self.initial_counts.astype(int).tolist(),
                "transition_counts": self.transition_counts.astype(int).tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntentHMM:
        return cls(states=list(d["states"]), lengths=[int(t) for t in d["turn_count"]["T"]],
                   length_probs=_normalised(d["turn_count"]["p"]), initial=_normalised(d["initial"]),
                   transitions=np.stack([_normalised(r) for r in d["transitions"]]),
                   initial_counts=np.array(d["initial_counts"], dtype=float),
                   transition_counts=np.array(d["transition_counts"], dtype=float),
                   smoothing=float(d["smoothing"]), task=str(d["task"]), dialogues=int(d["dialogues"]))

    def sha256(self) -> str:
        """A digest of what the chain is estimated from (states, counts, smoothing): exact, unlike floats."""
        d = self.to_dict()
        d = {k: d[k] for k in ("task", "states", "smoothing", "dialogues", "initial_counts", "transition_counts")} | {
            "turn_count": {"T": self.lengths, "n": d["turn_count"]["n"]}}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _smooth(counts: np.ndarray, alpha: float) -> np.ndarray:
    v = counts + alpha
    total = v.sum()
    return v / total if total > 0 else np.full(len(v), 1.0 / len(v))


def _round(v: np.ndarray) -> list[float]:
    return [round(float(x), 8) for x in v]


def _normalised(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / a.sum()
