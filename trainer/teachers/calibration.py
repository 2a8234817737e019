"""How good are the teacher scores: accuracy, ECE as a function of ensemble size N, and the H2 check.

What ``turnwise calibrate`` reports (:func:`calibration_report`, :func:`write_report`; the figures are drawn by
:mod:`trainer.teachers.calibration_plots`).

Definitions (paper: Liu et al., NAACL 2025 Industry, Figs. 3 and 4):

- One-vs-rest view: every (turn i, class c) with a gold label is one binary prediction with
  confidence S_i^c and outcome y_i^c in {0, 1}.
- ECE = sum_b (n_b / n) * |mean S in b - mean y in b| over 5 equal-width buckets of S
  ([0, .2), [.2, .4), [.4, .6), [.6, .8), [.8, 1]).
- ECE vs N: for N = 1..max_n, N of each turn's stored votes are drawn without replacement (seeded;
  ``repeats`` draws, mean and std reported), S is recomputed from them (abstentions leave the
  denominator; a turn whose N drawn votes all abstained drops out at that N).
- Teacher accuracy: argmax_c S_i^c against gold (single-label tasks; ties go to the first class);
  multilabel tasks: per-(turn, class) accuracy of S >= 0.5.
- H2 check (Fig. 4): for each class c (one-vs-rest), take pairs of turns from the same dialogue (intra:
  all of them) or from different dialogues (inter: drawn at random, as many as intra), orient each so the
  teacher prefers the first (ΔS = S_first - S_second > 0; pairs with ΔS = 0 carry no preference and are
  dropped, as in pair sampling) and measure P(y_first > y_second), i.e. the pairwise loss's target
  1[y_first = 1, y_second = 0], per ΔS bucket (10 equal-width buckets on (0, 1]), with a least-squares
  line P = a + b ΔS over the pairs. H2 says the teacher's preferences are more informative inside a
  dialogue: intra slope above inter. Also reported: the ordering accuracy on pairs whose gold differs.
  Binary tasks use the positive class only (the other is its mirror image); multiclass tasks pool classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.teachers.calibration_plots import plot_report
from trainer.teachers.scores import ABSTAIN, ScoreRecord, scores_from_votes
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.jsonl import dumps_json
from turnwise.tasks import TaskType

N_BUCKETS = 5
PAIR_BUCKETS = 10
SIMULATED_NOTE = "simulated teacher: gold labels corrupted by a noise model (for controlled experiments only)"


# --------------------------------------------------------------------------------------------------
# ECE


def bucket_index(conf: np.ndarray, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Equal-width buckets on [0, 1]; 1.0 goes to the last bucket."""
    conf = np.asarray(conf, dtype=np.float64)
    return np.clip(np.floor(conf * n_buckets + 1e-9), 0, n_buckets - 1).astype(np.int64)


def reliability(conf: np.ndarray, outcome: np.ndarray, n_buckets: int = N_BUCKETS) -> list[dict[str, Any]]:
    """Per bucket: bounds, count, mean confidence, observed frequency (None for an empty bucket)."""
    conf = np.asarray(conf, dtype=np.float64).ravel()
    outcome = np.asarray(outcome, dtype=np.float64).ravel()
    if conf.shape != outcome.shape:
        raise ValueError("confidences and outcomes differ in size")
    b = bucket_index(conf, n_buckets)
    rows = []
    for k in range(n_buckets):
        m = b == k
        n = int(m.sum())
        rows.append({"lo": k / n_buckets, "hi": (k + 1) / n_buckets, "count": n,
                     "mean_confidence": float(conf[m].mean()) if n else None,
                     "frequency": float(outcome[m].mean()) if n else None})
    return rows


def ece(conf: np.ndarray, outcome: np.ndarray, n_buckets: int = N_BUCKETS) -> float:
    rows = reliability(conf, outcome, n_buckets)
    total = sum(r["count"] for r in rows)
    if total == 0:
        raise ValueError("ECE of an empty set")
    return float(sum(r["count"] / total * abs(r["mean_confidence"] - r["frequency"]) for r in rows if r["count"]))


# --------------------------------------------------------------------------------------------------
# Collecting one task's scores and gold labels


@dataclass
class TaskScores:
    """Turns of one task that have both a gold label and a teacher score."""

    task: str
    labels: list[str]
    task_type: TaskType
    scores: np.ndarray  # (T, C) S at the stored N
    gold: np.ndarray  # (T, C) one-hot / multi-hot gold
    dialogue: np.ndarray  # (T,) dialogue index
    votes: np.ndarray | None  # (T, N) stored votes, or None when the file has none
    n_votes: int
    teacher: dict[str, Any]

    @property
    def multilabel(self) -> bool:
        return self.task_type is TaskType.multilabel


def collect(dialogues: Sequence[Dialogue], records: Mapping[tuple[str, str], ScoreRecord], task: str) -> TaskScores:
    rows_s, rows_y, rows_d, rows_v = [], [], [], []
    labels: list[str] | None = None
    ttype = TaskType.multiclass
    n_votes = 0
    teacher: dict[str, Any] = {}
    has_votes = True
    for di, d in enumerate(dialogues):
        rec = records.get((d.dialogue_id, task))
        if rec is None:
            continue
        if rec.num_turns != len(d.turns):
            raise DataError(f"dialogue '{d.dialogue_id}': scores for {rec.num_turns} turns, data has {len(d.turns)}")
        if labels is None:
            labels, ttype, n_votes = rec.labels, rec.task_type, rec.n_votes
            teacher = rec.teacher.model_dump(exclude_none=True)
        elif rec.labels != labels or rec.n_votes != n_votes:
            raise DataError(f"dialogue '{d.dialogue_id}': labels or n_votes differ from the other records of '{task}'")
        has_votes = has_votes and rec.votes is not None
        s = rec.array()
        valid = rec.valid
        v = rec.votes_array() if rec.votes is not None else None
        for i, t in enumerate(d.turns):
            if task not in t.labels or not valid[i]:
                continue
            value = t.labels[task]
            y = np.zeros(len(labels))
            for lab in [value] if isinstance(value, str) else value:
                if lab not in labels:
                    raise DataError(f"dialogue '{d.dialogue_id}' turn {i}: gold '{lab}' not in {labels}")
                y[labels.index(lab)] = 1.0
            rows_s.append(s[i])
            rows_y.append(y)
            rows_d.append(di)
            if v is not None:
                rows_v.append(v[i])
    if labels is None or not rows_s:
        raise DataError(f"no turn has both a gold '{task}' label and a teacher score")
    return TaskScores(task, labels, ttype, np.array(rows_s), np.array(rows_y), np.array(rows_d),
                      np.array(rows_v) if has_votes else None, n_votes, teacher)


def accuracy(scores: np.ndarray, gold: np.ndarray, multilabel: bool) -> float:
    if multilabel:
        return float(((scores >= 0.5) == (gold > 0.5)).mean())
    return float((scores.argmax(axis=1) == gold.argmax(axis=1)).mean())


def subsample(votes: np.ndarray, n: int, num_classes: int, multilabel: bool,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """S from n of each turn's votes drawn without replacement -> ((T, C) scores, (T,) turn has a valid vote)."""
    if n >= votes.shape[1]:
        chosen = votes
    else:
        idx = np.argsort(rng.random(votes.shape), axis=1)[:, :n]
        chosen = np.take_along_axis(votes, idx, axis=1)
    s, abst = scores_from_votes(chosen, num_classes, multilabel)
    return s, abst < chosen.shape[1]


def ece_vs_n(ts: TaskScores, max_n: int = 30, repeats: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    if ts.votes is None:
        raise DataError("the scores file has no per-vote data ('votes'): ECE vs N needs it")
    rng = np.random.default_rng(seed)
    top = min(max_n, ts.n_votes)
    out = []
    for n in range(1, top + 1):
        reps = 1 if n == ts.n_votes else repeats
        vals, accs, cover = [], [], []
        for _ in range(reps):
            s, ok = subsample(ts.votes, n, len(ts.labels), ts.multilabel, rng)
            vals.append(ece(s[ok], ts.gold[ok]))
            accs.append(accuracy(s[ok], ts.gold[ok], ts.multilabel))
            cover.append(float(ok.mean()))
        out.append({"n": n, "ece": float(np.mean(vals)), "ece_std": float(np.std(vals)), "repeats": reps,
                    "accuracy": float(np.mean(accs)), "coverage": float(np.mean(cover))})
    return out


# --------------------------------------------------------------------------------------------------
# H2: intra- vs inter-session pairs


def _pairs_for_class(s: np.ndarray, y: np.ndarray, dlg: np.ndarray, rng: np.random.Generator,
                     max_pairs: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Oriented intra and inter pairs for one class (s, y, dlg: (T,)) -> (ΔS > 0, outcome, gold differs)."""
    # intra: every pair of turns inside a dialogue
    intra_a, intra_b = [], []
    order = np.argsort(dlg, kind="stable")
    for grp in np.split(order, np.flatnonzero(np.diff(dlg[order])) + 1):
        if len(grp) > 1:
            i, j = np.triu_indices(len(grp), k=1)
            intra_a.append(grp[i])
            intra_b.append(grp[j])
    ia = np.concatenate(intra_a) if intra_a else np.zeros(0, np.int64)
    ib = np.concatenate(intra_b) if intra_b else np.zeros(0, np.int64)
    if len(ia) > max_pairs:
        keep = rng.choice(len(ia), max_pairs, replace=False)
        ia, ib = ia[keep], ib[keep]
    # inter: as many random pairs of turns from different dialogues
    m = len(ia)
    xa, xb = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if m and len(np.unique(dlg)) > 1:
        got_a, got_b, have = [], [], 0
        while have < m:
            a = rng.integers(0, len(s), 2 * (m - have) + 16)
            b = rng.integers(0, len(s), len(a))
            ok = dlg[a] != dlg[b]
            got_a.append(a[ok])
            got_b.append(b[ok])
            have += int(ok.sum())
        xa, xb = np.concatenate(got_a)[:m], np.concatenate(got_b)[:m]
    out = {}
    for name, (a, b) in {"intra": (ia, ib), "inter": (xa, xb)}.items():
        d = s[a] - s[b]
        keep = d != 0  # no teacher preference: dropped, as in pair sampling
        a, b, d = a[keep], b[keep], d[keep]
        first = np.where(d > 0, a, b)
        second = np.where(d > 0, b, a)
        outcome = ((y[first] > 0.5) & (y[second] <= 0.5)).astype(np.float64)  # 1[y_first > y_second]
        out[name] = (np.abs(d), outcome, (y[first] > 0.5) != (y[second] > 0.5))
    return out


def pair_curve(delta: np.ndarray, outcome: np.ndarray, differs: np.ndarray | None = None,
               n_buckets: int = PAIR_BUCKETS) -> dict[str, Any]:
    """P(y_first > y_second) per ΔS bucket on (0, 1], the least-squares line over the pairs, and the
    ordering accuracy on pairs whose gold differs (how often the teacher puts the positive first)."""
    b = np.clip(np.ceil(delta * n_buckets - 1e-9) - 1, 0, n_buckets - 1).astype(np.int64)
    buckets = []
    for k in range(n_buckets):
        m = b == k
        n = int(m.sum())
        buckets.append({"lo": k / n_buckets, "hi": (k + 1) / n_buckets, "count": n,
                        "mean_delta": float(delta[m].mean()) if n else None,
                        "p_first_higher": float(outcome[m].mean()) if n else None})
    fit: dict[str, Any] = {"slope": None, "intercept": None}
    var = float(delta.var()) if len(delta) >= 2 else 0.0
    if var > 1e-12:  # ordinary least squares, closed form
        slope = float(((delta - delta.mean()) * (outcome - outcome.mean())).mean() / var)
        fit = {"slope": slope, "intercept": float(outcome.mean() - slope * delta.mean())}
    ordering = None
    if differs is not None and differs.any():
        ordering = float(outcome[differs].mean())
    return {"pairs": len(delta), "ordering_accuracy": ordering,
            "differing_gold_pairs": int(differs.sum()) if differs is not None else None,
            "buckets": buckets, **fit}


def h2_check(ts: TaskScores, seed: int = 0, max_pairs_per_class: int = 200_000) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    classes = [1] if ts.task_type is TaskType.binary else list(range(len(ts.labels)))
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"intra": [], "inter": []}
    per_class = {}
    for c in classes:
        pairs = _pairs_for_class(ts.scores[:, c], ts.gold[:, c], ts.dialogue, rng, max_pairs_per_class)
        per_class[ts.labels[c]] = {k: {kk: vv for kk, vv in pair_curve(*v).items() if kk != "buckets"}
                                   for k, v in pairs.items()}
        for k, v in pairs.items():
            pooled[k].append(v)
    out: dict[str, Any] = {}
    for k, lst in pooled.items():
        parts = [np.concatenate([p[i] for p in lst]) if lst else np.zeros(0) for i in range(3)]
        out[k] = pair_curve(parts[0], parts[1], parts[2].astype(bool))
    si, se = out["intra"]["slope"], out["inter"]["slope"]
    out["slope_intra"], out["slope_inter"] = si, se
    out["h2_holds"] = bool(si is not None and se is not None and si > se)
    out["per_class"] = per_class
    out["definition"] = ("pairs of turns (same dialogue = intra, different dialogues = inter, as many), per class "
                         "c one-vs-rest, oriented so the teacher prefers the first (ΔS = S_first - S_second > 0; "
                         "ties dropped); outcome 1[y_first = 1 and y_second = 0] (the pairwise loss's target); "
                         "P(outcome) per ΔS bucket and a least-squares line over the pairs; ordering_accuracy: "
                         "the outcome on pairs whose gold differs")
    return out


# --------------------------------------------------------------------------------------------------
# Report


def calibration_report(dialogues: Sequence[Dialogue], records: Mapping[tuple[str, str], ScoreRecord], task: str,
                       *, max_n: int = 30, seed: int = 0, repeats: int = 10) -> dict[str, Any]:
    ts = collect(dialogues, records, task)
    full = {"n": ts.n_votes, "ece": ece(ts.scores, ts.gold), "accuracy": accuracy(ts.scores, ts.gold, ts.multilabel),
            "reliability": reliability(ts.scores, ts.gold)}
    report: dict[str, Any] = {
        "task": task, "labels": ts.labels, "task_type": ts.task_type.value, "teacher": ts.teacher,
        "turns": len(ts.scores), "dialogues": len(np.unique(ts.dialogue)),
        "n_votes": ts.n_votes, "accuracy": full["accuracy"], "ece_at_stored_n": full["ece"],
        "gold_prior": dict(zip(ts.labels, ts.gold.mean(axis=0).round(6).tolist(), strict=True)),
        "n_buckets": N_BUCKETS, "reliability_stored_n": full["reliability"],
    }
    if ts.teacher.get("kind") == "simulated":
        report["note"] = SIMULATED_NOTE
    if ts.votes is not None:
        curve = ece_vs_n(ts, max_n=max_n, repeats=repeats, seed=seed)
        report["ece_vs_n"] = curve
        report["ece_at"] = {str(r["n"]): r["ece"] for r in curve if r["n"] in (1, 5, 10, 30)}
        rng = np.random.default_rng(seed + 1)
        s1, ok1 = subsample(ts.votes, 1, len(ts.labels), ts.multilabel, rng)
        report["reliability_n1"] = reliability(s1[ok1], ts.gold[ok1])
        ab = ts.votes == ABSTAIN
        report["abstention_rate"] = float(ab.mean())
    report["h2"] = h2_check(ts, seed=seed)
    return report


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """``calibration.json`` plus ``ece_vs_n.png``, ``reliability.png``, ``h2_pairs.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "calibration.json"
    path.write_text(dumps_json(report, indent=2) + "\n", encoding="utf-8")
    return [path, *plot_report(report, out)]
