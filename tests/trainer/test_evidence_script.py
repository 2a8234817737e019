"""`make evidence` (scripts/evidence.sh) reads a finished budget check back instead of spending an hour on it
again, and stops before any table when that check is below the bar or never finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.experiment import Table1Config, summarise

REPO = Path(__file__).resolve().parents[2]


def write_check(out: Path, accuracy: float, complete: bool | None, unit: bool = True) -> None:
    cfg = Table1Config(preset="round2", gold_fractions=[1.0], methods=["finetune_only"], seeds=[0])
    run = {"method": "finetune_only", "seed": 0, "gold_fraction": 1.0, "accuracy": accuracy, "macro_f1": 0.5,
           "pretrain_wall_s": 0.0, "finetune_wall_s": 1.0}
    result = summarise(cfg, [run], {"kind": "simulated"}, wall_s=1.0, sizes={"train": 1, "validation": 1, "test": 1})
    if complete is not None:
        result["complete"] = complete
    if not unit:  # written before summaries were in percent: fractions, no unit, no completion flag
        del result["unit"]
        result["methods"]["finetune_only"]["mean"] = [accuracy]
    path = out / "round2" / "budget-check" / "table1-dailydialog-simulated.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result))


def evidence(out: Path, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "RUNS": str(tmp_path / "runs"), "PY": sys.executable,
           "TW": "false",  # any table or check the script would start fails at once
           "TEACHERS": "", "BINARY": "", **settings}
    return subprocess.run(["bash", str(REPO / "scripts" / "evidence.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("unit", [True, False])
def test_a_kept_budget_check_below_the_bar_stops_the_round(tmp_path, unit):
    out = tmp_path / "results"
    write_check(out, 0.80, True if unit else None, unit=unit)
    r = evidence(out, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "reached 80.0 % test accuracy, needed 83.0 %" in r.stdout  # percent and fraction files alike
    assert "STOP" in r.stderr and "RECHECK=1" in r.stderr


def test_an_unfinished_budget_check_stops_the_round(tmp_path):
    out = tmp_path / "results"
    write_check(out, 0.90, False)
    r = evidence(out, tmp_path)
    assert r.returncode == 1 and "did not finish" in r.stderr and "reached" not in r.stdout


@pytest.mark.parametrize("unit", [True, False])
def test_a_kept_budget_check_above_the_bar_is_not_run_again(tmp_path, unit):
    out = tmp_path / "results"
    write_check(out, 0.85, True if unit else None, unit=unit)
    r = evidence(out, tmp_path)
    # the check is read back (TW=false would have failed it) and the round goes on to the teacher calibration,
    # whose `turnwise label` is TW too and fails here: past the gate is all this test needs
    assert "reached 85.0 % test accuracy" in r.stdout and "STOP" not in r.stderr


def test_the_committed_budget_check_ran_with_the_round2_preset():
    """`make evidence` reads the kept check back by its accuracy alone: the check must have run with the
    preset's current settings, or a preset change would leave a check of another budget standing."""
    from dataclasses import asdict, replace

    from trainer.experiment import preset_config
    from trainer.experiment_log import settings_of

    log = REPO / "benchmarks" / "results" / "round2" / "budget-check" / "work-dailydialog-simulated" / "runs.jsonl"
    header = json.loads(log.read_text().splitlines()[0])
    assert header["kind"] == "header"
    cfg = preset_config("round2", dataset="dailydialog", task="act", teacher="simulated")
    check = replace(cfg, gold_fractions=[1.0], methods=["finetune_only"], seeds=[0], ablations=False)
    assert header["settings"] == json.loads(json.dumps(settings_of(asdict(check))))
    kept = json.loads((log.parent.parent / "table1-dailydialog-simulated.json").read_text())
    assert kept["complete"] is True and kept["methods"]["finetune_only"]["mean"][0] >= 83.0


def test_the_tables_run_teacher_by_teacher_so_later_ones_keep_the_finetune_only_runs(tmp_path):
    out = tmp_path / "results"
    write_check(out, 0.85, True)
    evidence(out, tmp_path, TEACHERS="fewshot zeroshot", BINARY="dailydialog:act:question", BINARY_TEACHERS="fewshot")
    lanes = (tmp_path / "runs" / "evidence" / "round2-lanes.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lanes] == ["dailydialog-fewshot", "meld-fewshot", "dailydialog-zeroshot",
                                               "meld-zeroshot", "dailydialog-act-question-fewshot"]
    assert lanes[2].split()[1:] == ["--dataset", "dailydialog", "--task", "act", "--teacher", "zeroshot"]
