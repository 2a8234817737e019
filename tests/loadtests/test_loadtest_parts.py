"""The pure parts of the load test: the ramp plan, the SLO gate, the calls and the CSV report."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from loadtests.calls import CallBook, check_turn_body
from loadtests.report import peak_rate, plot_latency, read_history, server_side, turn_series
from loadtests.slo import Thresholds, check_slo
from loadtests.stages import ramp_stages, stage_at
from turnwise.dialogue import read_jsonl


def test_ramp_steps_up_to_the_peak_then_holds():
    stages = ramp_stages(30, ramp_s=30, hold_s=60, steps=3)
    assert [(s.until_s, s.users) for s in stages] == [(10, 10), (20, 20), (30, 30), (90, 30)]
    assert all(s.spawn_rate >= 1 for s in stages)
    assert stage_at(stages, 0).users == 10
    assert stage_at(stages, 25).users == 30
    assert stage_at(stages, 89.9).users == 30
    assert stage_at(stages, 90) is None  # the shape stops the run
    assert [s.users for s in ramp_stages(2, ramp_s=10, hold_s=5, steps=8)] == [1, 2, 2]  # no more steps than users
    assert [(s.until_s, s.users) for s in ramp_stages(5, ramp_s=0, hold_s=5)] == [(5, 5)]
    with pytest.raises(ValueError):
        ramp_stages(0, 10, 10)


def test_slo_gate():
    t = Thresholds(p99_ms=300, max_error_ratio=0.01)
    assert check_slo(turns=100, turn_p99_ms=250, requests=120, failures=1, thresholds=t).passed
    slow = check_slo(turns=100, turn_p99_ms=301, requests=120, failures=0, thresholds=t)
    assert not slow.passed and "p99" in slow.breaches[0]
    errors = check_slo(turns=100, turn_p99_ms=10, requests=100, failures=2, thresholds=t)
    assert not errors.passed and "error ratio" in errors.breaches[0]
    empty = check_slo(turns=0, turn_p99_ms=0, requests=0, failures=0, thresholds=t)
    assert not empty.passed and empty.breaches == ["no turn was scored"]


def test_calls_replay_real_dialogues_under_unique_ids(samples_dir: Path):
    book = CallBook(read_jsonl(samples_dir / "dialogues.jsonl"), run_id="lt-x", seed=1)
    a, b = book.user_tag(), book.user_tag()
    c1, c2 = book.new_call(a, 1), book.new_call(b, 1)
    assert c1.dialogue_id != c2.dialogue_id and c1.dialogue_id.startswith("lt-x-u0")
    assert c1.feedback(random.Random(0)) is None  # nothing scored yet
    seqs = []
    while not c1.finished:
        turn = c1.next_turn()
        seqs.append(turn.seq)
        c1.scored.append(turn)
    assert seqs == list(range(len(seqs))) and len(seqs) >= 8
    fb = c1.feedback(random.Random(0))
    assert fb is not None and fb["dialogue_id"] == c1.dialogue_id and fb["seq"] in seqs
    assert fb["label"] == c1.turns[fb["seq"]].labels[fb["task"]]  # the dialogue's own gold label


def test_turn_body_checks():
    good = {"type": "scores", "dialogue_id": "d", "seq": 3, "scores": {"act": {"inform": 0.7, "question": 0.3}},
            "labels": {"act": "inform"}, "model": {"name": "m", "version": "1"}}
    assert check_turn_body(good, "d", 3) is None
    assert check_turn_body({k: v for k, v in good.items() if k != "type"}, "d", 3) is None  # REST body
    assert "expected d/4" in (check_turn_body(good, "d", 4) or "")
    assert "error frame" in (check_turn_body({"type": "error", "code": "overloaded", "message": "x"}, "d", 3) or "")
    assert check_turn_body({**good, "scores": {"act": {"inform": 1.5}}}, "d", 3)
    assert check_turn_body({**good, "model": {}}, "d", 3)


def write_history(path: Path) -> None:
    cols = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "95%", "99%",
            "Total Request Count"]
    rows = []
    for i in range(12):
        users = min(10, 5 * (i // 3 + 1))
        turns = 10 * i
        rows.append([1000 + i, users, "WS", "/v1/stream [turn]", 9, 0, 20, 40, 60 + i, turns])
        rows.append([1000 + i, users, "POST", "/v1/dialogues/{id}/turns", 3, 0, 25, 45, 70, turns // 2])
        rows.append([1000 + i, users, "", "Aggregated", 12, 0, 22, 44, 70, turns + turns // 2])
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(rows)


def test_report_rates_and_plot(tmp_path: Path):
    path = tmp_path / "h.csv"
    write_history(path)
    series = turn_series(read_history(path))
    assert series["99%"][-1] == (11.0, 71.0)  # the busier turn entry (WS)
    peak = peak_rate(series)
    assert peak["users"] == 10 and peak["turns_per_s"] == pytest.approx(15.0, abs=0.6)  # 10 WS + 5 REST per s
    png = plot_latency(series, tmp_path / "p.png", title="t", slo_p99_ms=100)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_server_side_breakdown_from_metrics():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    reg = CollectorRegistry()
    stage = Histogram("turnwise_stage_duration_seconds", "s", ["stage"], registry=reg)
    batch = Histogram("turnwise_batch_size", "b", registry=reg)
    for v in (0.010, 0.030):
        stage.labels(stage="inference").observe(v)
    stage.labels(stage="queue").observe(0.002)
    for n in (1, 3):
        batch.observe(n)
    got = server_side(generate_latest(reg).decode())
    assert got["stage_mean_ms"] == {"inference": 20.0, "queue": 2.0}
    assert got["mean_batch_size"] == 2.0 and got["model_calls"] == 2
