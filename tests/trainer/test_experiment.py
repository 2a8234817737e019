"""A miniature Table 1 so the experiment pipeline cannot rot: two methods, one gold fraction,
a handful of sample dialogues, the tiny backbone and the simulated teacher."""

import json

from trainer.experiment import Table1Config, run_table1
from turnwise.tasks import load_tasks


def test_miniature_table1(tmp_path, tiny_backbone, samples_dir):
    cfg = Table1Config(dataset="jsonl", task="act", teacher="simulated", gold_fractions=[0.5], seeds=[0],
                       methods=["finetune_only", "pairwise"], ablations=False, train_dialogues=10, val_dialogues=3,
                       test_dialogues=4, backbone=str(tiny_backbone), max_tokens=32, max_turns=2, pretrain_steps=3,
                       pretrain_dialogues=3, max_finetune_steps=2, batch_size=8, precision="fp32",
                       noise={"accuracy": 0.7})
    result = run_table1(cfg, tmp_path, data=samples_dir / "dialogues.jsonl",
                        schema=load_tasks(samples_dir / "tasks.yaml"))
    saved = json.loads((tmp_path / "table1-jsonl-simulated.json").read_text())
    assert saved["gold_fractions"] == [0.5]
    assert set(saved["methods"]) == {"finetune_only", "pairwise"}
    for m in saved["methods"].values():
        assert len(m["mean"]) == 1 and 0.0 <= m["mean"][0] <= 1.0
    assert len(saved["runs"]) == 2 and {r["seed"] for r in saved["runs"]} == {0}
    assert saved["teacher_label"] == "simulated teacher"
    assert "simulated" in saved["teacher_info"]["note"]
    assert (tmp_path / "table1-jsonl-simulated.png").stat().st_size > 1000
    assert "pairwise" in (tmp_path / "table1-jsonl-simulated.md").read_text()
    assert result["runs"][0]["settings"]["gold_fraction"] == 0.5
    assert not (tmp_path / "work-jsonl-simulated").exists()
