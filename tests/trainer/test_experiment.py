"""A miniature Table 1 so the experiment pipeline cannot rot: two methods, one gold fraction,
a handful of sample dialogues, the tiny backbone and the simulated teacher."""

import json

import pytest

from trainer.experiment import Table1Config, run_table1
from turnwise.tasks import load_tasks


def test_miniature_table1(tmp_path, tiny_backbone, samples_dir):
    cfg = Table1Config(dataset="jsonl", task="act", teacher="simulated", gold_fractions=[0.5], seeds=[0],
                       methods=["finetune_only", "pairwise"], ablations=True, train_dialogues=10, val_dialogues=3,
                       test_dialogues=4, backbone=str(tiny_backbone), max_tokens=32, max_turns=2, pretrain_steps=3,
                       pretrain_dialogues=3, max_finetune_steps=2, batch_size=8, precision="fp32",
                       noise={"accuracy": 0.7})
    result = run_table1(cfg, tmp_path, data=samples_dir / "dialogues.jsonl",
                        schema=load_tasks(samples_dir / "tasks.yaml"))
    saved = json.loads((tmp_path / "table1-jsonl-simulated.json").read_text())
    assert saved["gold_fractions"] == [0.5]
    # the two methods plus the pairwise ablations (alpha 0 and 1, inter-session pairs)
    assert set(saved["methods"]) == {"finetune_only", "pairwise", "pairwise_alpha0", "pairwise_alpha1",
                                     "pairwise_inter"}
    for name, m in saved["methods"].items():
        runs = [r for r in saved["runs"] if r["method"] == name]
        # the summary is in percent, the runs keep the evaluator's fractions
        assert saved["unit"] == "percent" and m["n"] == [len(runs)]
        assert len(m["mean"]) == 1 and m["mean"][0] == pytest.approx(100 * sum(r["accuracy"] for r in runs) / len(runs))
        assert m["macro_f1_mean"][0] == pytest.approx(100 * sum(r["macro_f1"] for r in runs) / len(runs))
    assert len(saved["runs"]) == 5 and {r["seed"] for r in saved["runs"]} == {0}
    assert saved["complete"] is True and saved["planned_runs"] == 5 and saved["resumed_runs"] == 0
    by_method = {r["method"]: r["settings"] for r in saved["runs"]}
    assert by_method["pairwise"]["init_from"] != by_method["pairwise_inter"]["init_from"]
    assert by_method["finetune_only"]["init_from"] is None
    assert saved["teacher_label"] == "simulated teacher"
    assert "simulated" in saved["teacher_info"]["note"]
    assert (tmp_path / "table1-jsonl-simulated.png").stat().st_size > 1000
    md = (tmp_path / "table1-jsonl-simulated.md").read_text()
    assert "| pairwise |" in md and "Macro-F1" in md
    assert result["runs"][0]["settings"]["gold_fraction"] == 0.5
    # a finished run deletes its checkpoints and keeps its log
    assert sorted(p.name for p in (tmp_path / "work-jsonl-simulated").iterdir()) == ["lock", "runs.jsonl"]

    # the report re-renders from the JSON alone (no training)
    from trainer.experiment import render_outputs

    (tmp_path / "table1-jsonl-simulated.md").unlink()
    (tmp_path / "table1-jsonl-simulated.png").unlink()
    assert render_outputs(tmp_path / "table1-jsonl-simulated.json").read_text() == md
    assert (tmp_path / "table1-jsonl-simulated.png").stat().st_size > 1000
    (tmp_path / "other.json").write_text('{"runs": []}')
    with pytest.raises(ValueError, match="not a table1 result"):
        render_outputs(tmp_path / "other.json")


def test_presets_and_overrides():
    from trainer.experiment import PRESETS, preset_config

    cpu = preset_config("cpu")
    assert cpu == Table1Config()  # the dataclass defaults are the cpu preset
    assert cpu.encoder == "flat"  # the setting docs/evidence.md reports
    full = preset_config("full", max_tokens=64, test_dialogues=None)
    assert full.encoder == "streaming"
    assert full.train_dialogues is None and full.pretrain_steps == PRESETS["full"]["pretrain_steps"]
    assert full.max_tokens == 64  # an explicit setting wins over the preset
    assert full.test_dialogues is None  # None = not given: the preset's value stays
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("huge")


def test_the_plan_runs_the_first_fraction_first_then_each_pretraining_through_its_other_fractions():
    from trainer.experiment import _finetune_plan, pretraining_variants

    cfg = Table1Config(gold_fractions=[0.05, 0.01, 0.10], seeds=[0, 1], methods=["finetune_only", "pairwise"],
                       ablations=True)
    plan = _finetune_plan(cfg, pretraining_variants(cfg))
    first = [(0.05, s, m) for s in (0, 1) for m in ("finetune_only", "pairwise")]
    assert plan[:4] == first  # whole seeds at the fraction that matters, before any other fraction
    rest = plan[4:]
    assert rest[:5] == [(0.01, 0, "finetune_only"), (0.10, 0, "finetune_only"), (0.01, 0, "pairwise"),
                        (0.10, 0, "pairwise"), (0.01, 0, "pairwise_alpha0")]
    # each pretrained student (method, seed) is used by one unbroken stretch of the rest of the plan
    users = [(m, s) for _, s, m in rest if m != "finetune_only"]
    stretches = [u for i, u in enumerate(users) if i == 0 or users[i - 1] != u]
    assert len(stretches) == len(set(stretches)) == 2 * 4  # pairwise and three ablations, two seeds
    assert {(f, m) for f, _, m in plan if m.startswith("pairwise_")} == {
        (0.01, m) for m in ("pairwise_alpha0", "pairwise_alpha1", "pairwise_inter")}  # ablations: smallest only
    assert len(plan) == len(set(plan)) == 2 * (3 * 2 + 3)


def test_table1_command_line(tmp_path, tiny_backbone, samples_dir):
    """`turnwise experiment table1` wires its options over the preset (here: the miniature, via JSONL)."""
    from typer.testing import CliRunner

    from cli.main import app

    args = ["experiment", "table1", "--dataset", "jsonl", "--task", "act", "--teacher", "simulated",
            "--data", str(samples_dir / "dialogues.jsonl"), "--tasks", str(samples_dir / "tasks.yaml"),
            "--out", str(tmp_path), "--seeds", "3", "--gold-fractions", "0.5", "--methods", "finetune_only,pointwise",
            "--no-ablations", "--train-dialogues", "8", "--val-dialogues", "2", "--test-dialogues", "3",
            "--pretrain-steps", "2", "--max-finetune-steps", "2", "--backbone", str(tiny_backbone),
            "--max-tokens", "24", "--pretrain-head-lr", "1e-3", "--noise", '{"accuracy": 0.6}', "--device", "cpu",
            "--encoder", "streaming", "--finetune-lr", "2e-4", "--finetune-epochs", "7"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "table1-jsonl-simulated.json").read_text())
    cfg = saved["config"]
    assert (cfg["train_dialogues"], cfg["val_dialogues"], cfg["test_dialogues"]) == (8, 2, 3)
    assert cfg["seeds"] == [3] and cfg["pretrain_head_lr"] == 1e-3 and cfg["noise"] == {"accuracy": 0.6}
    assert cfg["pretrain_segments"] == Table1Config().pretrain_segments  # not given: the cpu preset's
    assert (cfg["finetune_lr"], cfg["finetune_epochs"]) == (2e-4, 7)
    assert {(r["settings"]["finetune_lr"], r["settings"]["finetune_epochs"]) for r in saved["runs"]} == {(2e-4, 7)}
    assert saved["sizes"] == {"train": 8, "validation": 2, "test": 3}
    assert cfg["encoder"] == "streaming" and {r["settings"]["encoder"] for r in saved["runs"]} == {"streaming"}
    assert "| pointwise |" in r.output
