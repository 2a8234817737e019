"""Round 2 of the evidence in miniature: the fewshot teacher, the pairwise+pointwise objective at two weights,
a one-vs-rest task, the budget check, the round2 preset and the figures -- on the sample dialogues, the tiny
backbone and a handful of steps, so the pipeline that `make evidence` runs for hours cannot rot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.experiment import (
    PRESETS,
    Table1Config,
    budget_check,
    preset_config,
    pretraining_variants,
    render_outputs,
    run_table1,
)
from trainer.experiment_plots import COLOURS, majority, stem
from trainer.experiment_teacher import one_vs_rest_dialogues, one_vs_rest_records
from trainer.losses import combine_pairwise_pointwise, pairwise_plus_pointwise_loss
from trainer.teachers.simulated import SimulatedTeacher
from turnwise.dialogue import read_jsonl
from turnwise.names import CHECKPOINT_META
from turnwise.tasks import load_tasks

pytestmark = pytest.mark.usefixtures("encoder_cache_in_tmp")


def tiny(tiny_backbone, **kw) -> Table1Config:
    base = dict(dataset="jsonl", task="act:question", teacher="fewshot", gold_fractions=[0.5], seeds=[0],
                methods=["finetune_only", "pairwise+pointwise", "pairwise+pointwise@0.5"], ablations=False,
                train_dialogues=10, val_dialogues=3, test_dialogues=4, backbone=str(tiny_backbone),
                encoder="streaming", max_context_tokens=64, token_budget=512, pretrain_epochs=1,
                max_finetune_steps=2, batch_size=8, precision="fp32", device="cpu", samples=6,
                fewshot={"backend": "torch", "shots": 2})
    return Table1Config(**{**base, **kw})


def test_round2_pipeline_writes_the_acceptance_files(tmp_path, tiny_backbone, samples_dir):
    cfg = tiny(tiny_backbone)
    run_table1(cfg, tmp_path, data=samples_dir / "dialogues.jsonl", schema=load_tasks(samples_dir / "tasks.yaml"),
               keep_checkpoints=True)
    saved = json.loads((tmp_path / "table1-jsonl-act-question-fewshot.json").read_text())
    assert saved["gold_fractions"] == [0.5] and saved["task"] == "act:question" and saved["teacher"] == "fewshot"
    assert set(saved["methods"]) == {"finetune_only", "pairwise+pointwise", "pairwise+pointwise@0.5"}
    for name, m in saved["methods"].items():
        runs = [r for r in saved["runs"] if r["method"] == name]
        assert len(runs) == 1 and m["mean"] == [pytest.approx(100 * runs[0]["accuracy"])] and 0 <= m["mean"][0] <= 100
    # the one-vs-rest task: two labels, evaluated as such
    assert saved["majority"]["label"] in ("question", "not_question")
    # each weight went into its own pretraining
    for name, w in (("pairwise+pointwise", 0.1), ("pairwise+pointwise@0.5", 0.5)):
        meta = json.loads((tmp_path / "work-jsonl-act-question-fewshot" / f"pre-{name}-s0" / CHECKPOINT_META)
                          .read_text())
        assert meta["train_config"]["objective"] == "pairwise+pointwise"
        assert meta["train_config"]["pointwise_weight"] == w
        assert meta["teacher"]["kind"] == "fewshot"
        assert meta["train_config"]["tasks"] == ["act:question"]
    # the teacher is measured beside the table: accuracy, ECE, the intra- vs inter-session check
    info = saved["teacher_info"]
    assert 0 <= info["accuracy_on_train"] <= 1 and "slope_intra" in info["h2"] and "slope_inter" in info["h2"]
    assert info["checks"][0]["seed"] == 0 and info["gold_pool_dialogues"] == 5  # 50 % of the 10 training dialogues
    md = (tmp_path / "table1-jsonl-act-question-fewshot.md").read_text()
    # where every run and teacher check ran: their wall times depend on it
    from turnwise.machine import cpu_flags, cpu_name

    assert {(r["machine"]["cpu"], tuple(r["machine"]["flags"]), r["machine"]["device"]) for r in saved["runs"]} == {
        (cpu_name(), tuple(cpu_flags()), "cpu")}
    assert info["checks"][0]["machine"]["cpu"] == cpu_name()
    from trainer.experiment_plots import machine_label

    assert f"Finetuning runs by machine: {machine_label(saved['runs'][0]['machine'])}: {len(saved['runs'])}." in md
    assert cpu_name() in machine_label(saved["runs"][0]["machine"])
    assert "| pairwise+pointwise@0.5 |" in md and "w = 0.1" in md and "Majority class" in md
    assert md.splitlines()[0] == (f"### jsonl act:question — teacher: fewshot "
                                  f"(accuracy on train {info['accuracy_on_train']:.3f})")
    png = tmp_path / "table1-jsonl-act-question-fewshot.png"
    assert png.stat().st_size > 1000
    png.unlink()
    assert render_outputs(tmp_path / "table1-jsonl-act-question-fewshot.json").read_text() == md
    assert png.stat().st_size > 1000


def test_budget_check_reports_the_full_gold_accuracy(tmp_path, tiny_backbone, samples_dir):
    cfg = tiny(tiny_backbone, task="act", teacher="simulated", seeds=[1, 2])
    args = dict(data=samples_dir / "dialogues.jsonl", schema=load_tasks(samples_dir / "tasks.yaml"))
    ok, acc, result = budget_check(cfg, tmp_path, min_accuracy=0.0, **args)
    assert ok and result["gold_fractions"] == [1.0] and set(result["methods"]) == {"finetune_only"}
    assert result["config"]["seeds"] == [1] and acc == result["runs"][0]["accuracy"]
    assert result["runs"][0]["settings"]["gold_fraction"] == 1.0
    # apart from the tables a shared results folder holds
    assert (tmp_path / "budget-check" / "table1-jsonl-simulated.json").exists()
    assert not (tmp_path / "table1-jsonl-simulated.json").exists()
    title = (tmp_path / "budget-check" / "table1-jsonl-simulated.md").read_text().splitlines()[0]
    assert title == "### jsonl act — teacher: none (finetune-only)"  # the check never runs its teacher
    ok, _, _ = budget_check(cfg, tmp_path / "again", min_accuracy=1.01, **args)  # no accuracy reaches it
    assert not ok


def test_budget_check_command_exits_1_below_the_bar(tmp_path, tiny_backbone, samples_dir):
    from typer.testing import CliRunner

    from cli.main import app

    args = ["experiment", "table1", "--dataset", "jsonl", "--task", "act",
            "--data", str(samples_dir / "dialogues.jsonl"), "--tasks", str(samples_dir / "tasks.yaml"),
            "--out", str(tmp_path), "--preset", "round2",
            "--train-dialogues", "8", "--val-dialogues", "2", "--test-dialogues", "3", "--max-finetune-steps", "2",
            "--backbone", str(tiny_backbone), "--device", "cpu", "--budget-check", "1.0", "--seeds", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "NOT enough" in r.output and "100% gold" in r.output
    saved = json.loads((tmp_path / "budget-check" / "table1-jsonl-simulated.json").read_text())
    assert saved["config"]["preset"] == "round2" and saved["config"]["encoder"] == "streaming"
    assert saved["config"]["pretrain_epochs"] == 1 and saved["config"]["max_context_tokens"] >= 128


def test_round2_preset_has_the_round_budget_and_cpu_stays_cheap():
    r2 = preset_config("round2")
    assert r2.encoder == "streaming" and r2.max_context_tokens >= 128
    assert r2.train_dialogues == 0  # every training dialogue: 4,000 DailyDialog dialogues stayed below the bar
    assert r2.pretrain_epochs == 1 and r2.max_finetune_steps is None and r2.min_finetune_steps >= 150
    assert (r2.finetune_lr, r2.finetune_epochs) == (1e-4, 4)  # the budget the committed check passed with
    assert r2.test_dialogues is None and r2.preset == "round2"
    assert "pairwise+pointwise" in r2.methods and "pairwise+pointwise@0.5" in r2.methods
    cpu = preset_config("cpu")
    assert cpu.methods == ["finetune_only", "pointwise", "pairwise"] and cpu.max_finetune_steps == 60
    assert PRESETS["cpu"] == {}
    with pytest.raises(ValueError, match="unknown method"):
        pretraining_variants(Table1Config(methods=["listwise"]))
    v = dict(pretraining_variants(Table1Config(methods=["pairwise+pointwise@0.5", "pairwise+pointwise"],
                                               ablations=False)))
    assert v == {"pairwise+pointwise@0.5": {"objective": "pairwise+pointwise", "pointwise_weight": 0.5},
                 "pairwise+pointwise": {"objective": "pairwise+pointwise", "pointwise_weight": 0.1}}


def test_one_vs_rest_views(samples_dir):
    from turnwise.tasks import TaskSchema

    ds = read_jsonl(samples_dir / "dialogues.jsonl")[:6]
    schema: TaskSchema = load_tasks(samples_dir / "tasks.yaml").select(["act"])
    binary = one_vs_rest_dialogues(ds, "act:question")
    for d, b in zip(ds, binary, strict=True):
        for t, u in zip(d.turns, b.turns, strict=True):
            assert u.text == t.text
            want = None if "act" not in t.labels else ("question" if t.labels["act"] == "question" else "not_question")
            assert u.labels.get("act:question") == want and "act" not in u.labels
    recs = {(r.dialogue_id, r.task): r for r in SimulatedTeacher({"accuracy": 0.7}).label(ds, schema, 8)}
    bin_recs = one_vs_rest_records(recs, "act:question")
    for (did, _), r in recs.items():
        b = bin_recs[(did, "act:question")]
        assert b.labels == ["not_question", "question"] and b.task_type.value == "binary"
        np.testing.assert_allclose(b.array()[:, 1], r.array()[:, r.labels.index("question")], atol=1e-6)


def test_teacher_labelling_logs_its_progress_without_a_terminal(samples_dir, capsys):
    from trainer.experiment_teacher import teacher_scores

    ds = read_jsonl(samples_dir / "dialogues.jsonl")
    schema = load_tasks(samples_dir / "tasks.yaml").select(["act"])
    records, _ = teacher_scores("simulated", ds, schema, 4, 0, {"accuracy": 0.7})
    turns = sum(len(d.turns) for d in ds)
    shown = f"teacher simulated on {len(ds)} dialogues (turns): "
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(shown)]
    assert lines and lines[-1].endswith(f": {turns}/{turns}")  # a log file sees labelling reach its end
    assert len(records) == len(ds)


def test_a_table_titles_the_teacher_it_plans_to_use_before_any_pretrained_run():
    from trainer.experiment_plots import teacher_title

    partial = {"methods": {"finetune_only": {}}, "teacher_label": "fewshot", "teacher_info": {},
               "config": {"methods": ["finetune_only", "pairwise"]}}
    assert teacher_title(partial) == "teacher: fewshot (not run yet)"  # only finetune-only has finished
    measured = {**partial, "teacher_info": {"accuracy_on_train": 0.5234}}
    assert teacher_title(measured) == "teacher: fewshot (accuracy on train 0.523)"
    check = {**partial, "config": {"methods": ["finetune_only"]}}
    assert teacher_title(check) == "teacher: none (finetune-only)"


def test_majority_and_names():
    from turnwise.dialogue import Dialogue, Turn

    d = Dialogue(dialogue_id="x", turns=[Turn(speaker="a", text=str(i), labels={"act": lab})
                                         for i, lab in enumerate(["inform", "inform", "inform", "question"])])
    m = majority([d], "act")
    assert m["label"] == "inform" and m["accuracy"] == 0.75
    assert m["macro_f1"] == pytest.approx((2 * 0.75 / 1.75) / 2)  # F1 of inform, 0 for question, over 2 labels
    assert stem({"dataset": "dailydialog", "task": "act", "teacher": "fewshot"}) == "table1-dailydialog-fewshot"
    assert stem({"dataset": "meld", "task": "sentiment:negative", "teacher": "zeroshot"}) == (
        "table1-meld-sentiment-negative-zeroshot")
    assert len(set(COLOURS.values())) == len(COLOURS)  # one colour per method, never shared


def test_combined_objective_by_hand():
    f_i, f_j = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    s_i, s_j = torch.tensor([0.8, 0.6]), torch.tensor([0.2, 0.4])
    logits, s = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.5, 1.0]])
    # pairs: z = (1 - 0.5*0.6, -1 - 0.5*0.2) = (0.7, -1.1); softplus(-z) = (0.403186, 1.387335)
    pair = (np.log1p(np.exp(-0.7)) + np.log1p(np.exp(1.1))) / 2
    # pointwise: BCE(0; 0.5) = log 2; BCE(2; 1) = softplus(-2)
    point = (np.log(2) + np.log1p(np.exp(-2.0))) / 2
    got = pairwise_plus_pointwise_loss(f_i, f_j, s_i, s_j, logits, s, alpha=0.5, pointwise_weight=0.5)
    assert float(got) == pytest.approx(pair + 0.5 * point, rel=1e-6)
    w0 = pairwise_plus_pointwise_loss(f_i, f_j, s_i, s_j, logits, s, alpha=0.5, pointwise_weight=0.0)
    assert float(w0) == pytest.approx(pair, rel=1e-6)
    assert combine_pairwise_pointwise(None, torch.tensor(2.0), 0.5).item() == 1.0  # a batch without pairs
    assert combine_pairwise_pointwise(torch.tensor(1.0), None, 0.5).item() == 1.0
    with pytest.raises(ValueError, match="pointwise_weight"):
        combine_pairwise_pointwise(torch.tensor(1.0), torch.tensor(1.0), -0.1)


def test_training_step_uses_both_terms(tiny_backbone, samples_dir):
    """The training loop's combined loss is its pairwise loss plus w times its pointwise loss, on a real batch."""
    from dataclasses import replace

    from trainer.config import TrainConfig
    from trainer.model import build_model
    from trainer.segments import build_segments
    from trainer.steps import pretrain_loss
    from trainer.train import objective_loss

    ds = read_jsonl(samples_dir / "dialogues.jsonl")[:4]
    schema = load_tasks(samples_dir / "tasks.yaml").select(["act"])
    recs = {(r.dialogue_id, r.task): r for r in SimulatedTeacher({"accuracy": 0.7}).label(ds, schema, 8)}
    cfg = TrainConfig(objective="pairwise+pointwise", pointwise_weight=0.5, backbone=str(tiny_backbone),
                      encoder="flat", max_tokens=32, max_turns=2, tasks=["act"])
    built = build_model(cfg.backbone, schema, seed=0)
    seg = build_segments(ds, schema, built.tokenizer, cfg.window(), teacher=recs)
    rows = np.arange(len(seg.dialogue))
    logits = {"act": torch.randn(len(rows), 4, generator=torch.Generator().manual_seed(0))}
    got, n = objective_loss(logits, seg, rows, cfg, np.random.default_rng(5))
    pair, n_pairs = pretrain_loss(logits, seg, rows, replace(cfg, objective="pairwise"), np.random.default_rng(5))
    point, _ = pretrain_loss(logits, seg, rows, replace(cfg, objective="pointwise"), np.random.default_rng(5))
    assert n == n_pairs > 0
    assert got is not None and pair is not None and point is not None
    assert float(got) == pytest.approx(float(pair) + 0.5 * float(point), rel=1e-6)
    assert float(point) > 0 and float(got) > float(pair)
