"""A Table 1 run that stops part-way leaves a partial table and resumes without redoing finished work."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import trainer.experiment as experiment
from trainer.experiment import Table1Config, run_table1
from turnwise.tasks import load_tasks


def mini(tiny_backbone) -> Table1Config:
    return Table1Config(dataset="jsonl", task="act", teacher="simulated", gold_fractions=[0.5, 0.25], seeds=[0],
                        methods=["finetune_only", "pairwise"], ablations=False, train_dialogues=10, val_dialogues=3,
                        test_dialogues=4, backbone=str(tiny_backbone), max_tokens=24, max_turns=2, pretrain_steps=2,
                        pretrain_dialogues=3, max_finetune_steps=2, batch_size=8, precision="fp32", device="cpu",
                        noise={"accuracy": 0.7})


class Stop(Exception):
    pass


def test_a_stopped_run_leaves_a_partial_table_and_resumes(tmp_path, tiny_backbone, samples_dir, monkeypatch):
    args = dict(data=samples_dir / "dialogues.jsonl", schema=load_tasks(samples_dir / "tasks.yaml"))
    cfg = mini(tiny_backbone)
    trained: list[str] = []
    real_train, real_eval = experiment.train, experiment.evaluate_path

    def counting_train(tcfg, *a, **kw):
        trained.append("pretrain" if tcfg.objective != "none" else f"finetune {tcfg.gold_fraction}")
        return real_train(tcfg, *a, **kw)

    evaluations = {"n": 0}

    def stopping_eval(*a, **kw):
        evaluations["n"] += 1
        if evaluations["n"] == 3:  # the third finetuning run dies before its result is kept
            raise Stop
        return real_eval(*a, **kw)

    monkeypatch.setattr(experiment, "train", counting_train)
    monkeypatch.setattr(experiment, "evaluate_path", stopping_eval)
    with pytest.raises(Stop):
        run_table1(cfg, tmp_path, **args)
    # the plan runs the first given fraction (50 %) for every method first, then the others
    assert trained == ["finetune 0.5", "pretrain", "finetune 0.5", "finetune 0.25"]
    partial = json.loads((tmp_path / "table1-jsonl-simulated.json").read_text())
    assert partial["complete"] is False and partial["planned_runs"] == 4 and len(partial["runs"]) == 2
    assert {(r["method"], r["gold_fraction"]) for r in partial["runs"]} == {("finetune_only", 0.5), ("pairwise", 0.5)}
    assert partial["gold_fractions"] == [0.25, 0.5]  # tables list the fractions ascending
    assert partial["methods"]["pairwise"]["mean"][0] is None and partial["methods"]["pairwise"]["n"] == [0, 1]
    md = (tmp_path / "table1-jsonl-simulated.md").read_text()
    assert "Partial: 2 of 4 runs" in md
    first_two = partial["runs"]
    (tmp_path / "table1-jsonl-simulated.md").unlink()
    monkeypatch.setattr(experiment, "evaluate_path", real_eval)
    trained.clear()
    report = run_table1(cfg, tmp_path, report_only=True, **args)  # the table of the log, training nothing
    assert trained == [] and report["runs"] == first_two and report["complete"] is False
    assert "Partial: 2 of 4 runs" in (tmp_path / "table1-jsonl-simulated.md").read_text()
    with pytest.raises(ValueError, match="nothing to report"):
        run_table1(cfg, tmp_path / "elsewhere", report_only=True, **args)

    result = run_table1(cfg, tmp_path, **args)
    # only the unfinished runs train again, and the finished pretraining is reused, not redone
    assert trained == ["finetune 0.25", "finetune 0.25"]
    assert result["complete"] is True and result["resumed_runs"] == 2 and len(result["runs"]) == 4
    assert [r for r in result["runs"] if r["gold_fraction"] == 0.5] == first_two
    assert all(v is not None for m in result["methods"].values() for v in m["mean"])
    assert "Partial" not in (tmp_path / "table1-jsonl-simulated.md").read_text()
    work = tmp_path / "work-jsonl-simulated"
    assert sorted(p.name for p in work.iterdir()) == ["lock", "runs.jsonl"]  # checkpoints gone, the log kept
    trained.clear()
    again = run_table1(cfg, tmp_path, **args)  # the same command again rewrites the table, training nothing
    assert trained == [] and again["runs"] == result["runs"] and again["complete"] is True
    # a report of a smaller plan is complete too, and deletes nothing
    run_table1(replace(cfg, methods=["finetune_only"]), tmp_path, report_only=True, **args)
    assert (work / "runs.jsonl").read_text().count('"kind": "run"') == 4


def test_one_process_at_a_time_and_a_cut_last_line_is_dropped(tmp_path):
    from trainer.experiment_log import RunLog

    config = {"gold_fractions": [0.1], "seeds": [0], "dataset": "x"}
    log = RunLog(tmp_path, config)
    with pytest.raises(ValueError, match="another table1 run is working in this folder"):
        RunLog(tmp_path, config)
    log.add({"method": "pairwise", "seed": 0, "gold_fraction": 0.1, "accuracy": 0.5})
    log.close()
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"kind": "run", "run": {"meth')  # a process killed while writing
    again = RunLog(tmp_path, config)
    assert list(again.runs) == [("pairwise", 0, 0.1)]
    again.add({"method": "pairwise", "seed": 1, "gold_fraction": 0.1, "accuracy": 0.6})
    again.close()
    extended = RunLog(tmp_path, {**config, "gold_fractions": [0.1, 0.5], "seeds": [0, 1]})  # more runs: allowed
    assert len(extended.runs) == 2  # the line after the cut one was read: the cut was dropped from the file
    extended.close()
    with pytest.raises(ValueError, match="smallest_gold_fraction"):
        RunLog(tmp_path, {**config, "gold_fractions": [0.05, 0.1]})


def test_a_stopped_run_with_other_settings_is_refused_not_mixed(tmp_path, tiny_backbone, samples_dir, monkeypatch):
    args = dict(data=samples_dir / "dialogues.jsonl", schema=load_tasks(samples_dir / "tasks.yaml"))
    cfg = replace(mini(tiny_backbone), methods=["finetune_only"], gold_fractions=[0.5, 0.25])
    real_eval = experiment.evaluate_path
    calls = {"n": 0}

    def stopping_eval(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop
        return real_eval(*a, **kw)

    monkeypatch.setattr(experiment, "evaluate_path", stopping_eval)
    with pytest.raises(Stop):
        run_table1(cfg, tmp_path, **args)
    log = tmp_path / "work-jsonl-simulated" / "runs.jsonl"
    kept = log.read_text()
    monkeypatch.setattr(experiment, "evaluate_path", real_eval)
    with pytest.raises(ValueError, match=r"other settings \(max_finetune_steps\)"):
        run_table1(replace(cfg, max_finetune_steps=3), tmp_path, **args)
    assert log.read_text() == kept  # nothing of the stopped run was lost or overwritten
    # more seeds extend a stopped run: its finished run is kept, the new seed's runs are added
    result = run_table1(replace(cfg, seeds=[0, 1]), tmp_path, **args)
    assert result["resumed_runs"] == 1 and len(result["runs"]) == 4 and result["complete"] is True


def test_the_run_log_is_committed_and_the_checkpoints_are_not():
    """A fresh clone resumes a table from its committed ``runs.jsonl``; its checkpoints stay out of git."""
    import shutil
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    work = "benchmarks/results/work-meld-fewshot"
    paths = [f"{work}/runs.jsonl", f"{work}/pre-pairwise-s0/model.safetensors", f"{work}/lock",
             f"benchmarks/results/round2/budget-check/{work.split('/')[-1]}/runs.jsonl"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=repo, capture_output=True, text=True)
    ignored = set(r.stdout.split())
    assert ignored == {paths[1], paths[2]}, r.stdout + r.stderr


def test_a_log_written_before_a_setting_existed_resumes_with_the_value_it_ran_with(tmp_path):
    from trainer.experiment_log import RunLog

    config = {"gold_fractions": [0.1], "seeds": [0], "dataset": "x"}
    old = RunLog(tmp_path, config)  # no min_finetune_steps: the setting did not exist yet
    old.add({"method": "pairwise", "seed": 0, "gold_fraction": 0.1, "accuracy": 0.5})
    old.close()
    same = RunLog(tmp_path, {**config, "min_finetune_steps": 0})  # the value the old log ran with
    assert list(same.runs) == [("pairwise", 0, 0.1)]
    same.close()
    with pytest.raises(ValueError, match=r"other settings \(min_finetune_steps\)"):
        RunLog(tmp_path, {**config, "min_finetune_steps": 150})


def test_another_teachers_table_keeps_the_finetune_only_runs_it_shares(tmp_path, tiny_backbone, samples_dir,
                                                                       monkeypatch):
    """Finetune-only never sees the teacher: a table with another teacher keeps the sibling's run."""
    args = dict(data=samples_dir / "dialogues.jsonl", schema=load_tasks(samples_dir / "tasks.yaml"))
    base = replace(mini(tiny_backbone), methods=["finetune_only"])
    trained: list[float] = []
    real_train = experiment.train

    def counting_train(tcfg, *a, **kw):
        trained.append(tcfg.gold_fraction)
        return real_train(tcfg, *a, **kw)

    monkeypatch.setattr(experiment, "train", counting_train)
    first = run_table1(replace(base, gold_fractions=[0.5]), tmp_path, **args)
    assert trained == [0.5]
    # another teacher, and a fraction the first table did not run: only that one trains
    other = run_table1(replace(base, teacher="zeroshot", samples=4), tmp_path, **args)
    assert trained == [0.5, 0.25]
    kept = next(r for r in other["runs"] if r["gold_fraction"] == 0.5)
    (mine,) = first["runs"]
    assert kept["shared_from"] == "work-jsonl-simulated" and kept["accuracy"] == mine["accuracy"]
    assert kept["settings"] == mine["settings"] and kept["finetune_wall_s"] == 0.0
    assert kept["shared_finetune_wall_s"] == mine["finetune_wall_s"]
    assert "shared_from" not in next(r for r in other["runs"] if r["gold_fraction"] == 0.25)
    assert "1 finetune-only run kept from work-jsonl-simulated" in (tmp_path / "table1-jsonl-zeroshot.md").read_text()
    # a table whose training differs (not only its teacher) trains its own
    run_table1(replace(base, teacher="fewshot", gold_fractions=[0.5], finetune_lr=1e-4), tmp_path, **args)
    assert trained == [0.5, 0.25, 0.5]
