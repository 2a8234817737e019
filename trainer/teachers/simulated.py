"""The simulated teacher: gold labels corrupted by a documented noise model, for controlled experiments ONLY.

Every record it writes says so (``teacher.kind == "simulated"`` and ``teacher.note``), and so does every
report fed by it. It needs gold labels: a turn without a gold label for the task gets N abstentions.

Noise model (single-label tasks, C classes; gold class y_i of turn i in dialogue d):

    logits_i = log M[y_i] + delta_d + eps_i          (C,)
    vote_{i,k} ~ Categorical(softmax(logits_i / tau))  for k = 1..N, each abstaining with prob. ``abstain``

- Class confusion M: row y puts mass q on y and (1 - q) * pi_y on the other classes, with
  pi_y ~ Dirichlet(``confusion``) drawn once per task: each gold class has its favourite confusions
  (small ``confusion`` = a few systematic confusions; large = uniform).
- Per-dialogue drift delta_d ~ N(0, ``drift``^2 I_C), shared by all turns and all votes of the dialogue: a
  dialogue-level confusion that pushes a whole dialogue towards some classes, so errors cluster by
  dialogue (the structure the paper's H2 relies on: inside a dialogue the drift cancels in S_i - S_j).
- Per-turn noise eps_i ~ N(0, ``turn_noise``^2 I_C): some turns are harder than others.
- Per-vote noise: the categorical draw itself, sharpened or flattened by the vote temperature ``tau``.
- q is solved by bisection so that the teacher accuracy (argmax_c S_i^c against gold, at the run's N)
  hits ``accuracy`` (default 0.70) on the dialogues being labelled; pass ``q`` to fix it instead (e.g. to
  label shards with the value an unsharded run reported in ``teacher.params.q``).

Multilabel tasks: each class is a binary problem, P(vote includes c) = sigmoid(±logit(q) + delta_{d,c} +
eps_{i,c}) (+ when c is gold), with q solved for the per-(turn, class) accuracy of S >= 0.5.

All draws come from generators seeded by (seed, dialogue_id, task), so a dialogue's votes do not depend on
the other dialogues (only the solved q does).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trainer.teachers.scores import (
    ABSTAIN,
    ProgressFn,
    ScoreRecord,
    make_record,
    scores_from_votes,
    votes_to_bitmask,
)
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

MODEL_NAME = "simulated-noise-v1"
NOTE = ("simulated teacher: gold labels corrupted by a noise model (per-dialogue drift + class confusion + "
        "per-vote noise); for controlled experiments only, not a real teacher")


@dataclass(frozen=True)
class NoiseConfig:
    accuracy: float = 0.70  # target teacher accuracy (argmax of S vs gold)
    drift: float = 1.0  # std of the per-dialogue class-logit offsets
    turn_noise: float = 0.5  # std of the per-turn class-logit offsets
    confusion: float = 1.0  # Dirichlet concentration of each gold class's confusion row
    vote_temperature: float = 1.0
    abstain: float = 0.0  # per-vote abstention probability
    q: float | None = None  # diagonal mass of the confusion matrix; None = solve it for ``accuracy``

    def __post_init__(self) -> None:
        if not 0 < self.accuracy < 1:
            raise ValueError("noise accuracy must be in (0, 1)")
        if self.drift < 0 or self.turn_noise < 0 or self.confusion <= 0 or self.vote_temperature <= 0:
            raise ValueError("noise drift/turn_noise must be >= 0, confusion and vote_temperature > 0")
        if not 0 <= self.abstain < 1:
            raise ValueError("noise abstain must be in [0, 1)")
        if self.q is not None and not 0 < self.q < 1:
            raise ValueError("noise q must be in (0, 1)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> NoiseConfig:
        d = dict(d or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown noise parameter(s) {unknown} (known: {sorted(known)})")
        kwargs: dict[str, Any] = {k: (None if v is None else float(v)) for k, v in d.items()}
        return cls(**kwargs)


def _rng(*parts: Any) -> np.random.Generator:
    h = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


@dataclass
class _Draws:
    """Every random number of one task's run, drawn once: the bisection reuses them (common random numbers)."""

    gold: np.ndarray  # (T,) class index, or (T, C) 0/1 for multilabel; -1 rows = no gold
    has_gold: np.ndarray  # (T,) bool
    offsets: np.ndarray  # (T, C) delta_d + eps_i
    u_vote: np.ndarray  # (T, N) or (T, N, C) for multilabel
    u_abstain: np.ndarray  # (T, N)
    spans: list[tuple[int, int]]  # turn range of each dialogue


class SimulatedTeacher:
    kind = "simulated"

    def __init__(self, noise: NoiseConfig | Mapping[str, Any] | None = None, seed: int = 0):
        self.noise = noise if isinstance(noise, NoiseConfig) else NoiseConfig.from_dict(noise)
        self.seed = seed
        self.solved: dict[str, dict[str, float]] = {}

    # -- draws --------------------------------------------------------------------------------------

    def _draws(self, dialogues: Sequence[Dialogue], name: str, task: Task, n_votes: int) -> _Draws:
        c = task.num_labels
        multilabel = task.type is TaskType.multilabel
        gold, has, offs, uv, ua, spans = [], [], [], [], [], []
        start = 0
        for d in dialogues:
            rng = _rng(self.seed, d.dialogue_id, name)
            drift = rng.normal(0.0, self.noise.drift, c)  # (C,) one per dialogue
            n = len(d.turns)
            eps = rng.normal(0.0, self.noise.turn_noise, (n, c))
            offs.append(drift[None, :] + eps)
            uv.append(rng.random((n, n_votes, c) if multilabel else (n, n_votes)))
            ua.append(rng.random((n, n_votes)))
            for t in d.turns:
                value = t.labels.get(name)
                if value is None:
                    gold.append(np.zeros(c) if multilabel else -1)
                    has.append(False)
                elif multilabel:
                    gold.append(np.array(task.encode(value)))
                    has.append(True)
                else:
                    if not isinstance(value, str):
                        raise DataError(f"dialogue '{d.dialogue_id}': task '{name}' takes one label, got {value!r}")
                    gold.append(task.index(value))
                    has.append(True)
            spans.append((start, start + n))
            start += n
        c_dim = (0, c)
        return _Draws(
            gold=np.array(gold, dtype=np.int64) if gold else np.zeros((0, c) if multilabel else 0, np.int64),
            has_gold=np.array(has, dtype=bool),
            offsets=np.concatenate(offs) if offs else np.zeros(c_dim),
            u_vote=np.concatenate(uv) if uv else np.zeros((0, n_votes)),
            u_abstain=np.concatenate(ua) if ua else np.zeros((0, n_votes)),
            spans=spans,
        )

    def _confusion(self, name: str, c: int, q: float) -> np.ndarray:
        rng = _rng(self.seed, "confusion", name)
        m = np.zeros((c, c))
        for y in range(c):
            pi = rng.dirichlet(np.full(c - 1, self.noise.confusion))
            m[y, np.arange(c) != y] = (1 - q) * pi
            m[y, y] = q
        return m

    # -- votes --------------------------------------------------------------------------------------

    def _votes_single(self, dr: _Draws, name: str, c: int, q: float) -> np.ndarray:
        logm = np.log(np.maximum(self._confusion(name, c, q), 1e-300))
        g = np.where(dr.has_gold, dr.gold, 0)
        logits = (logm[g] + dr.offsets) / self.noise.vote_temperature  # (T, C)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        votes = (np.cumsum(p, axis=1)[:, None, :] < dr.u_vote[..., None]).sum(axis=-1)  # (T, N)
        votes = np.minimum(votes, c - 1)
        votes[dr.u_abstain < self.noise.abstain] = ABSTAIN
        votes[~dr.has_gold] = ABSTAIN
        return votes.astype(np.int64)

    def _votes_multi(self, dr: _Draws, c: int, theta: float) -> np.ndarray:
        sign = np.where(dr.gold > 0, 1.0, -1.0)  # (T, C)
        z = (theta * sign + dr.offsets) / self.noise.vote_temperature
        on = dr.u_vote < (1.0 / (1.0 + np.exp(-z)))[:, None, :]  # (T, N, C)
        votes = votes_to_bitmask(on)
        votes[dr.u_abstain < self.noise.abstain] = ABSTAIN
        votes[~dr.has_gold] = ABSTAIN
        return votes.astype(np.int64)

    def _votes(self, dr: _Draws, name: str, c: int, multilabel: bool, x: float) -> np.ndarray:
        """Votes for x = logit(q)."""
        if multilabel:
            return self._votes_multi(dr, c, x)
        return self._votes_single(dr, name, c, float(1.0 / (1.0 + np.exp(-x))))

    @staticmethod
    def _accuracy(votes: np.ndarray, dr: _Draws, c: int, multilabel: bool) -> float:
        m = dr.has_gold
        s, abst = scores_from_votes(votes[m], c, multilabel)
        ok = abst < votes.shape[1]
        if not ok.any():
            return 0.0
        if multilabel:
            return float(((s[ok] >= 0.5) == (dr.gold[m][ok] > 0)).mean())
        return float((s[ok].argmax(axis=1) == dr.gold[m][ok]).mean())

    def _solve(self, vote_fn: Callable[[float], np.ndarray], acc_fn: Callable[[np.ndarray], float],
               lo: float, hi: float) -> tuple[float, float]:
        """Bisection on a monotone parameter for the target accuracy; returns (parameter, accuracy)."""
        target = self.noise.accuracy
        best = (lo, acc_fn(vote_fn(lo)))
        for _ in range(40):
            mid = (lo + hi) / 2
            acc = acc_fn(vote_fn(mid))
            if abs(acc - target) < abs(best[1] - target):
                best = (mid, acc)
            if acc < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-4:
                break
        return best

    # -- labelling ----------------------------------------------------------------------------------

    def label(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int,
              progress: ProgressFn | None = None) -> list[ScoreRecord]:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        dialogues = [d for d in dialogues if d.turns]
        records: list[ScoreRecord] = []
        if progress is not None:
            progress(0, total=sum(len(d.turns) for d in dialogues) * len(schema.names()))
        for name in schema.names():
            task = schema[name]
            c = task.num_labels
            multilabel = task.type is TaskType.multilabel
            dr = self._draws(dialogues, name, task, samples)
            vote_fn = functools.partial(self._votes, dr, name, c, multilabel)
            acc_fn = functools.partial(self._accuracy, dr=dr, c=c, multilabel=multilabel)
            lo, hi = -12.0, 12.0  # logit(q): q from 6e-6 to 1 - 6e-6
            if self.noise.q is not None:
                x = float(np.log(self.noise.q / (1 - self.noise.q)))
                acc = acc_fn(vote_fn(x))
            elif dr.has_gold.any():
                x, acc = self._solve(vote_fn, acc_fn, lo, hi)
            else:
                x, acc = 0.0, float("nan")
            q = float(1.0 / (1.0 + np.exp(-x)))
            self.solved[name] = {"q": q, "achieved_accuracy": acc}
            votes = vote_fn(x)
            params = {**{k: v for k, v in asdict(self.noise).items() if k != "q"}, "seed": self.seed,
                      "samples": samples, "q": round(q, 6), "achieved_accuracy": round(acc, 6)}
            teacher = {"kind": self.kind, "model": MODEL_NAME, "prompts": [], "params": params, "note": NOTE}
            for d, (a, b) in zip(dialogues, dr.spans, strict=True):
                records.append(make_record(d.dialogue_id, name, task.labels, task.type, votes[a:b], teacher))
                if progress is not None:
                    progress(b - a)
        return records

    def summary(self) -> dict[str, Any]:
        return {"note": NOTE, "solved": self.solved, "noise": asdict(self.noise)}
