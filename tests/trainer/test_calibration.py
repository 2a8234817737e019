"""Calibration: ECE (hand-worked), ECE vs N, reliability, the H2 intra/inter check, the calibrate command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.teachers.calibration import (
    TaskScores,
    bucket_index,
    calibration_report,
    collect,
    ece,
    ece_vs_n,
    h2_check,
    pair_curve,
    reliability,
)
from trainer.teachers.cli import run_calibrate, run_label
from trainer.teachers.scores import ABSTAIN, make_record, write_scores
from trainer.teachers.simulated import SimulatedTeacher
from turnwise.dialogue import Dialogue, Turn, write_jsonl
from turnwise.errors import DataError
from turnwise.tasks import TaskType, parse_tasks

ACT = ["inform", "question", "directive", "commissive"]
SCHEMA = parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ACT}}})


def test_ece_hand_worked_example():
    # buckets [0,.2) [.2,.4) [.4,.6) [.6,.8) [.8,1]
    #   [0, .2):  S = 0.1          y = 0      -> |0.1 - 0|      = 0.1,   weight 1/5
    #   [.2, .4): S = 0.3, 0.35    y = 1, 0   -> |0.325 - 0.5|  = 0.175, weight 2/5
    #   [.8, 1]:  S = 0.9, 0.95    y = 1, 1   -> |0.925 - 1|    = 0.075, weight 2/5
    # ECE = 0.02 + 0.07 + 0.03 = 0.12
    conf = [0.1, 0.3, 0.35, 0.9, 0.95]
    y = [0, 1, 0, 1, 1]
    assert ece(conf, y) == pytest.approx(0.12)
    rows = reliability(conf, y)
    assert [r["count"] for r in rows] == [1, 2, 0, 0, 2]
    assert rows[1]["mean_confidence"] == pytest.approx(0.325) and rows[1]["frequency"] == pytest.approx(0.5)
    assert rows[2]["frequency"] is None


def test_bucket_edges():
    assert bucket_index(np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.19999])).tolist() == [0, 1, 2, 3, 4, 4, 0]
    assert ece([1.0, 1.0], [1, 1]) == 0.0
    assert ece([1.0, 0.0], [0, 1]) == pytest.approx(1.0)


def test_ece_of_one_vote_matches_the_closed_form():
    # N = 1 and C classes: S in {0, 1}; with vote accuracy a, ECE = 2 (1 - a) / C.
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 5000)
    vote = np.where(rng.random(5000) < 0.6, gold, (gold + rng.integers(1, 4, 5000)) % 4)
    s = np.eye(4)[vote]
    y = np.eye(4)[gold]
    a = (vote == gold).mean()
    assert ece(s, y) == pytest.approx(2 * (1 - a) / 4)


def _ts(scores, gold, dlg, task_type=TaskType.multiclass, votes=None, labels=None):
    labels = labels or [f"c{i}" for i in range(np.asarray(scores).shape[1])]
    return TaskScores("t", labels, task_type, np.asarray(scores, float), np.asarray(gold, float),
                      np.asarray(dlg), votes, 1 if votes is None else votes.shape[1], {"kind": "llm"})


def test_pair_curve_and_fit_hand_worked():
    # ΔS 0.05 (bucket 1) outcome 0; 0.5 (bucket 5) outcomes 1,0; 0.95 (bucket 10) outcome 1
    d = np.array([0.05, 0.5, 0.5, 0.95])
    o = np.array([0.0, 1.0, 0.0, 1.0])
    cur = pair_curve(d, o, np.array([True, True, False, True]))
    assert cur["buckets"][0]["count"] == 1 and cur["buckets"][4]["p_first_higher"] == 0.5
    assert cur["buckets"][9]["count"] == 1
    slope, intercept = np.polyfit(d, o, 1)
    assert cur["slope"] == pytest.approx(slope) and cur["intercept"] == pytest.approx(intercept)
    assert cur["ordering_accuracy"] == pytest.approx(2 / 3)


def test_h2_intra_pairs_cancel_a_per_dialogue_offset():
    # Scores = gold + a per-dialogue offset: inside a dialogue the ordering is perfect, across dialogues
    # the offset scrambles it, so the intra slope must beat the inter slope.
    rng = np.random.default_rng(0)
    n_d, per = 200, 6
    dlg = np.repeat(np.arange(n_d), per)
    y = rng.integers(0, 2, n_d * per)
    s1 = np.clip(0.3 + 0.3 * y + rng.uniform(-0.3, 0.3, n_d)[dlg] + rng.uniform(-0.05, 0.05, n_d * per), 0, 1)
    ts = _ts(np.stack([1 - s1, s1], 1), np.stack([1 - y, y], 1), dlg, TaskType.binary)
    h2 = h2_check(ts, seed=0)
    assert h2["intra"]["ordering_accuracy"] == pytest.approx(1.0)
    assert h2["inter"]["ordering_accuracy"] < 0.9
    assert h2["slope_intra"] > h2["slope_inter"] and h2["h2_holds"]
    # as many inter pairs drawn as intra pairs (15 per dialogue); only a few clipped scores tie and drop out
    assert n_d * 15 - 20 <= h2["intra"]["pairs"] <= n_d * 15 and n_d * 15 - 20 <= h2["inter"]["pairs"] <= n_d * 15
    assert list(h2["per_class"]) == ["c1"]  # binary: the positive class only


def _synthetic(n: int = 200, turns: int = 8) -> list[Dialogue]:
    rng = np.random.default_rng(1)
    return [Dialogue(dialogue_id=f"d{k}", turns=[Turn(speaker="user", text=f"{k}-{i}",
                                                     labels={"act": ACT[rng.choice(4, p=[.4, .3, .2, .1])]})
                                                for i in range(turns)]) for k in range(n)]


def test_ece_falls_with_n_and_h2_holds_for_the_simulated_teacher():
    ds = _synthetic()
    recs = SimulatedTeacher({"accuracy": 0.7, "drift": 1.5}, seed=0).label(ds, SCHEMA, 30)
    rep = calibration_report(ds, {(r.dialogue_id, r.task): r for r in recs}, "act", max_n=30, repeats=3)
    curve = {r["n"]: r["ece"] for r in rep["ece_vs_n"]}
    assert curve[1] > curve[5] > curve[30]
    assert rep["accuracy"] == pytest.approx(0.7, abs=0.01)
    assert rep["h2"]["h2_holds"]
    assert "simulated teacher" in rep["note"]


def test_ece_vs_n_subsamples_the_stored_votes():
    votes = np.array([[0, 0, 0, 1], [1, 1, ABSTAIN, ABSTAIN]])
    ts = _ts([[0.75, 0.25], [0.0, 1.0]], [[1, 0], [0, 1]], [0, 1], votes=votes)
    curve = ece_vs_n(ts, max_n=10, repeats=20, seed=0)
    assert [r["n"] for r in curve] == [1, 2, 3, 4]  # capped at the stored votes
    assert curve[-1]["repeats"] == 1
    assert curve[-1]["ece"] == pytest.approx(ece([0.75, 0.25, 0.0, 1.0], [1, 0, 0, 1]))
    assert curve[0]["coverage"] < 1.0  # some single draws of turn 2 are abstentions


def test_collect_checks_turn_counts_and_labels():
    ds = _synthetic(2, 3)
    rec = make_record("d0", "act", ACT, TaskType.multiclass, np.zeros((2, 1), int), {"kind": "llm", "model": "m"})
    with pytest.raises(DataError, match="scores for 2 turns"):
        collect(ds, {("d0", "act"): rec}, "act")
    with pytest.raises(DataError, match="no turn has both"):
        collect(ds, {}, "act")


def test_run_calibrate_writes_json_and_plots(tmp_path, samples_dir):
    data, tasks = samples_dir / "dialogues.jsonl", samples_dir / "tasks.yaml"
    scores = tmp_path / "s.jsonl"
    run_label(data, tasks, "simulated", 12, scores, noise={"accuracy": 0.7})
    out = tmp_path / "cal"
    rep = run_calibrate(data, scores, "act", out, max_n=12)
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["task"] == "act" and saved["n_votes"] == 12
    assert set(saved["ece_at"]) == {"1", "5", "10"}
    assert "simulated teacher" in saved["note"] and saved["teacher"]["kind"] == "simulated"
    for name in ("ece_vs_n.png", "reliability.png", "h2_pairs.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep["h2"]["slope_intra"] is not None
    with pytest.raises(DataError, match="no scores for task 'emotion'"):
        run_calibrate(data, scores, "emotion", out)


def test_run_calibrate_on_a_record_file_without_votes(tmp_path):
    ds = _synthetic(20, 4)
    write_jsonl(ds, tmp_path / "d.jsonl")
    recs = SimulatedTeacher(seed=0).label(ds, SCHEMA, 5)
    for r in recs:
        r.votes = None
    write_scores(recs, tmp_path / "s.jsonl")
    rep = run_calibrate(tmp_path / "d.jsonl", tmp_path / "s.jsonl", "act", tmp_path / "cal")
    assert "ece_vs_n" not in rep and rep["ece_at_stored_n"] >= 0.0
