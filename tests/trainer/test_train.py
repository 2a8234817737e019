"""Training end to end on the tiny backbone, flat and streaming encoders: finetune-only, pairwise and
pointwise pretraining, resume after a kill."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_checkpoint, load_training_state
from trainer.evaluate import evaluate_path
from trainer.segments import build_segments
from trainer.spans import build_spans
from trainer.train import TrainConfig, pick_gold_dialogues, train
from turnwise.dialogue import read_jsonl


@pytest.fixture(scope="module")
def dialogues(samples_dir):
    return read_jsonl(samples_dir / "dialogues.jsonl")


ENCODERS = ["flat", "streaming"]


def quick_cfg(backbone, **kw) -> TrainConfig:
    base = dict(backbone=str(backbone), max_tokens=48, max_turns=4, batch_size=16, pretrain_steps=0,
                finetune_epochs=1, precision="fp32", save_every=1000, finetune_lr=1e-3, head_lr=3e-3,
                encoder="flat", max_context_tokens=96, token_budget=768)
    base.update(kw)
    return TrainConfig(**base)


def rows_for(cfg, dialogues, schema, tokenizer, teacher=None):
    build = build_spans if cfg.encoder == "streaming" else build_segments
    return build(dialogues, schema, tokenizer, cfg.window(), teacher=teacher)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_finetune_only_writes_a_loadable_checkpoint_that_evaluates(tmp_path, tiny_backbone, sample_schema, dialogues,
                                                                   encoder):
    cfg = quick_cfg(tiny_backbone, objective="none", max_steps=6, encoder=encoder)
    res = train(cfg, dialogues[:20], sample_schema, tmp_path / "ck", val_dialogues=dialogues[20:26])
    assert res.steps == 6 and res.best_metric is not None
    ckpt = load_checkpoint(tmp_path / "ck")
    assert ckpt.schema.names() == ["intent", "act", "sentiment"]
    if encoder == "flat":
        assert ckpt.window.format == "todbert-v1" and ckpt.window.max_tokens == 48
    else:
        assert ckpt.window.format == "turn-causal-v1" and ckpt.window.max_context_tokens == 96
        assert ckpt.window.reanchor_tokens == 48
    assert ckpt.meta["train_config"]["objective"] == "none" and ckpt.meta["encoder"] == encoder
    report = evaluate_path(tmp_path / "ck", dialogues[26:30])
    assert set(report["tasks"]) == {"intent", "act", "sentiment"}
    act = report["tasks"]["act"]
    assert act["n"] == sum(len(d.turns) for d in dialogues[26:30])
    assert np.asarray(act["confusion"]).sum() == act["n"]
    assert report["window_format"] == ckpt.window.format


@dataclass
class Rec:
    scores: list


def keyword_teacher(dialogues):
    """A teacher whose 'has_intent' score is 1 exactly on turns that mention a refund or cancel."""
    out = {}
    for d in dialogues:
        s = []
        for t in d.turns:
            hit = any(w in t.text.lower() for w in ("refund", "cancel", "charged"))
            s.append([0.0, 1.0] if hit else [1.0, 0.0])
        out[(d.dialogue_id, "intent")] = Rec(s)
    return out


def concordance(model, seg, pad_id):
    """Fraction of intra-dialogue pairs the student orders like the teacher (class has_intent)."""
    from trainer.evaluate import predict_rows

    f = predict_rows(model, seg, pad_id)["intent"][:, 1]
    s = seg.teacher["intent"][:, 1]
    dlg = np.asarray(seg.dialogue)
    good = total = 0
    for d in np.unique(dlg):
        idx = np.flatnonzero(dlg == d)
        for a in idx:
            for b in idx:
                if s[a] > s[b]:
                    total += 1
                    good += f[a] > f[b]
    return good / total


@pytest.mark.parametrize("encoder", ENCODERS)
def test_min_steps_runs_more_epochs_over_a_small_gold_set_and_early_stopping_waits(tmp_path, tiny_backbone,
                                                                                   sample_schema, dialogues, encoder):
    # learning rates of 0: validation never improves, so early stopping stops at the first chance it gets
    frozen = dict(objective="none", encoder=encoder, finetune_lr=0.0, head_lr=0.0, eval_every=1, patience=1)
    train_d, val_d = dialogues[:20], dialogues[20:26]
    plain = train(quick_cfg(tiny_backbone, **frozen), train_d, sample_schema, tmp_path / "a", val_dialogues=val_d)
    assert plain.steps == 2  # one validation to set the best, one without improvement
    floor = train(quick_cfg(tiny_backbone, **frozen, min_steps=9), train_d, sample_schema, tmp_path / "b",
                  val_dialogues=val_d)
    assert floor.steps == 9 and floor.best_step == 1
    # without validation the schedule itself runs to the floor: more epochs than finetune_epochs (1) has
    one_epoch = train(quick_cfg(tiny_backbone, objective="none", encoder=encoder), train_d, sample_schema,
                      tmp_path / "c")
    longer = train(quick_cfg(tiny_backbone, objective="none", encoder=encoder, min_steps=one_epoch.steps * 3 + 1),
                   train_d, sample_schema, tmp_path / "d")
    assert longer.steps >= one_epoch.steps * 3 + 1 and longer.steps <= one_epoch.steps * 5


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("objective", ["pairwise", "pointwise"])
def test_pretraining_learns_the_teachers_ordering(tmp_path, tiny_backbone, sample_schema, dialogues, objective,
                                                  encoder):
    schema = sample_schema.select(["intent"])
    teacher = keyword_teacher(dialogues)
    # streaming: the turn is read with its whole context (flat: max_turns=1), so it gets bigger batches
    lr = 5e-4 if encoder == "flat" else 1e-3
    cfg = quick_cfg(tiny_backbone, objective=objective, pretrain_steps=40, pretrain_lr=lr, finetune_epochs=0,
                    tasks=["intent"], alpha=0.5, max_turns=1, encoder=encoder, token_budget=1024)
    from trainer.model import build_model

    built = build_model(str(tiny_backbone), schema, seed=cfg.seed)
    seg = rows_for(cfg, dialogues[:24], schema, built.tokenizer, teacher=teacher)
    before = concordance(built.model, seg, built.tokenizer.pad_token_id)
    res = train(cfg, dialogues[:24], schema, tmp_path / "ck", teacher=teacher)
    assert res.steps == 40
    after = concordance(load_checkpoint(tmp_path / "ck").model, seg, built.tokenizer.pad_token_id)
    assert after > max(before, 0.5) + 0.2, (before, after)


class Killed(Exception):
    pass


@pytest.mark.parametrize("encoder", ENCODERS)
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, tiny_backbone, sample_schema, dialogues, encoder):
    teacher = keyword_teacher(dialogues)
    schema = sample_schema.select(["intent"])
    cfg = quick_cfg(tiny_backbone, objective="pairwise", pretrain_steps=4, tasks=["intent"], max_steps=4,
                    save_every=2, pretrain_lr=1e-3, encoder=encoder, token_budget=256)
    full = train(cfg, dialogues[:16], schema, tmp_path / "full", val_dialogues=dialogues[16:20], teacher=teacher)

    def kill_at_5(phase, step, total, info):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, dialogues[:16], schema, tmp_path / "part", val_dialogues=dialogues[16:20], teacher=teacher,
              progress=kill_at_5)
    assert load_training_state(tmp_path / "part")["step"] == 4
    resumed = train(cfg, dialogues[:16], schema, tmp_path / "part", val_dialogues=dialogues[16:20], teacher=teacher)
    assert resumed.resumed_from == 4 and resumed.steps == full.steps == 8
    a = load_training_state(tmp_path / "full")["model"]
    b = load_training_state(tmp_path / "part")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # a finished run is not trained again
    again = train(cfg, dialogues[:16], schema, tmp_path / "part", val_dialogues=dialogues[16:20], teacher=teacher)
    assert again.resumed_from == 8
    with pytest.raises(ValueError, match="different configuration"):
        train(quick_cfg(tiny_backbone, objective="pairwise", pretrain_steps=5, tasks=["intent"], encoder=encoder),
              dialogues[:16], schema, tmp_path / "part", teacher=teacher)


def test_gold_fraction_is_seeded(dialogues):
    a = pick_gold_dialogues(dialogues, ["act"], 0.1, seed=3)
    assert a == pick_gold_dialogues(dialogues, ["act"], 0.1, seed=3)
    assert len(a) == round(0.1 * len(dialogues))
    assert a != pick_gold_dialogues(dialogues, ["act"], 0.1, seed=4)


def test_cli_train_and_evaluate(tmp_path, tiny_backbone, samples_dir):
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(samples_dir / "dialogues.jsonl"), "--tasks",
                              str(samples_dir / "tasks.yaml"), "--objective", "none", "--backbone", str(tiny_backbone),
                              "--out", str(tmp_path / "ck"), "--max-steps", "3", "--max-dialogues", "12",
                              "--max-tokens", "32", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["steps"] == 3
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "ck"), "--data",
                              str(samples_dir / "dialogues.jsonl"), "--max-dialogues", "3", "--out",
                              str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["tasks"]["sentiment"]["n"] > 0


def test_a_backbone_without_role_tags_gets_them_as_single_tokens(tmp_path, sample_schema):
    """A plain BERT directory (as ToD-BERT or any local path is loaded): [sys]/[usr] are added as special
    tokens, the embedding matrix grows to match, and a formatted window encodes each tag as one id."""
    from transformers import AutoModel, BertConfig, BertTokenizerFast

    from trainer.model import build_model, resolve_backbone
    from turnwise.window import ROLE_TAGS

    plain = tmp_path / "plain-bert"
    tok = BertTokenizerFast(vocab_file=str(Path(resolve_backbone("minilm")) / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(plain)
    assert not any(t in tok.get_vocab() for t in ROLE_TAGS)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(plain)

    built = build_model(str(plain), sample_schema)
    ids = [built.tokenizer.convert_tokens_to_ids(t) for t in ROLE_TAGS]
    assert all(i >= len(tok) for i in ids)  # new ids past the original vocabulary
    assert built.model.encoder.get_input_embeddings().num_embeddings == len(built.tokenizer) == len(tok) + 2
    enc = built.tokenizer("[usr] my card is blocked [sys] let me check")
    assert set(ids) <= set(enc["input_ids"])


def test_precision_auto_keeps_the_faster_measured_option(tmp_path, tiny_backbone, sample_schema, dialogues,
                                                         monkeypatch):
    """--precision auto trains in bf16 exactly when bf16 measured faster (the measurement is replaced here)."""
    import trainer.train as tr

    for timings, expected in (({"fp32": 2.0, "bf16": 1.0}, "bf16"), ({"fp32": 1.0, "bf16": 2.0}, "fp32")):
        monkeypatch.setattr(tr, "measure_precision", lambda *a, t=timings, **k: dict(t))
        cfg = TrainConfig(objective="none", backbone=str(tiny_backbone), max_tokens=32, max_turns=2, batch_size=8,
                          max_steps=1, finetune_epochs=1, precision="auto")
        res = train(cfg, dialogues[:4], sample_schema, tmp_path / expected)
        assert res.precision == expected


def test_device_selection(monkeypatch):
    from trainer.model import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.gpu
def test_training_and_evaluation_run_on_cuda(tmp_path, tiny_backbone, sample_schema, dialogues):
    cfg = TrainConfig(objective="none", backbone=str(tiny_backbone), max_tokens=32, max_turns=2, batch_size=8,
                      max_steps=2, finetune_epochs=1, precision="bf16", device="cuda")
    train(cfg, dialogues[:4], sample_schema, tmp_path / "ckpt", val_dialogues=dialogues[4:6])
    report = evaluate_path(tmp_path / "ckpt", dialogues[6:8], device="cuda")
    cpu = evaluate_path(tmp_path / "ckpt", dialogues[6:8], device="cpu")
    assert report["tasks"]["act"]["confusion"] == cpu["tasks"]["act"]["confusion"]  # same predictions on both
