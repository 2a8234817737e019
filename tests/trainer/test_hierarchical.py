"""Hierarchical tasks and the response-ranking loss: schema, beam-search decode, losses, training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_checkpoint
from trainer.evaluate import compute_metrics, evaluate_path, predict_rows
from trainer.losses import hierarchical_loss, response_ranking_loss
from trainer.model import build_model
from trainer.ranking import build_rank_set, pair_inputs, rank_batch
from trainer.segments import build_segments, collate
from trainer.steps import add_rank_loss, finetune_loss, path_table
from trainer.train import TrainConfig, train
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.scoring import beam_search, decode, decode_paths, level_parents
from turnwise.tasks import Task, TaskType, parse_tasks
from turnwise.window import WindowConfig

ROUTE = {"type": "hierarchical", "levels": ["domain", "intent"],
         "labels": ["bank/balance", "bank/transfer", "travel/book", "travel/cancel", "travel/balance"]}
SCHEMA = parse_tasks({"tasks": {"route": ROUTE}})

TEXTS = {"bank/balance": "how much money is in my account", "bank/transfer": "send fifty dollars to my sister",
         "travel/book": "i need a flight to paris", "travel/cancel": "please cancel my hotel booking",
         "travel/balance": "how many miles do i have left"}


def dialogues(n: int = 10) -> list[Dialogue]:
    paths = list(TEXTS)
    out = []
    for i in range(n):
        a, b = paths[i % 5], paths[(i + 2) % 5]
        turns = [Turn(speaker="customer", text=TEXTS[a], labels={"route": a}),
                 Turn(speaker="agent", text="sure , one moment"),
                 Turn(speaker="customer", text=TEXTS[b], labels={"route": b})]
        out.append(Dialogue(dialogue_id=f"d{i}", turns=turns))
    return out


# --- schema -------------------------------------------------------------------------------------------

def test_schema_derives_levels_nodes_and_width():
    task = SCHEMA["route"]
    assert task.type is TaskType.hierarchical and task.depth == 2
    assert task.level_nodes() == [["bank", "travel"], list(ROUTE["labels"])]
    assert task.num_labels == 7  # one logit per node of every level
    assert task.path_nodes("travel/balance") == [1, 4]
    assert task.level_names() == ["domain", "intent"]
    unnamed = Task(type="hierarchical", labels=["a/x/1", "a/y/2", "b/x/3"])
    assert unnamed.level_names() == ["level1", "level2", "level3"]
    assert unnamed.level_nodes()[1] == ["a/x", "a/y", "b/x"]  # the same name under two parents is two nodes


@pytest.mark.parametrize(("labels", "levels", "message"), [
    (["a/b/c/d", "a/b/c/e"], None, "at most 3"),
    (["a//b", "a/c"], None, "not a path"),
    (["/a", "b/c"], None, "not a path"),
    (["a/ b", "a/c"], None, "not a path"),
    (["a", "b"], None, "single level is a multiclass"),
    (["a/b", "a/b/c"], None, "same number of levels"),
    (["a/b", "a/c"], ["domain"], "'levels' names 1 levels"),
    (["a/b", "a/c"], ["x", "x"], "unique"),
])
def test_bad_hierarchical_schemas_are_clear_errors(labels, levels, message):
    raw = {"tasks": {"route": {"type": "hierarchical", "labels": labels, **({"levels": levels} if levels else {})}}}
    with pytest.raises(DataError, match=message):
        parse_tasks(raw)


def test_levels_only_on_hierarchical_tasks():
    with pytest.raises(DataError, match="'levels' is for hierarchical tasks only"):
        parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ["a", "b"], "levels": ["x"]}}})
    flat = parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ["a", "b"]}}})
    assert flat.to_dict() == {"tasks": {"act": {"type": "multiclass", "labels": ["a", "b"]}}}  # no new keys


# --- decode ---------------------------------------------------------------------------------------------

def test_beam_search_prefers_the_best_consistent_path_over_greedy_levels():
    # Level 1 prefers "bank", level 2 prefers a "travel" intent: greedy per level gives an inconsistent pair.
    logp = [np.log([0.6, 0.4]), np.log([0.05, 0.05, 0.8, 0.05, 0.05])]
    parents = level_parents(SCHEMA["route"])
    best = beam_search(logp, parents, width=2)
    assert best[0][0] == [1, 2]  # travel/book: 0.4 * 0.8 = 0.32 > bank/*: 0.6 * 0.05
    assert math.isclose(best[0][1], math.log(0.32))
    assert beam_search(logp, parents, width=1)[0][0][0] == 0  # a beam of one keeps only the greedy domain


def test_beam_search_matches_brute_force_and_stays_consistent():
    rng = np.random.default_rng(0)
    labels = [f"{a}/{b}/{c}" for a in "pq" for b in "xyz" for c in "01" if rng.random() > 0.2]
    task = Task(type="hierarchical", labels=labels)
    nodes, parents = task.level_nodes(), level_parents(task)
    for _ in range(20):
        logp = [np.log(rng.dirichlet(np.ones(len(n)))) for n in nodes]
        got = beam_search(logp, parents, width=len(labels))
        for path, _ in got:  # every path is a chain of the taxonomy: each node under the previous one
            assert all(parents[lv - 1][path[lv]] == path[lv - 1] for lv in range(1, len(path)))
        brute = max((sum(logp[lv][k] for lv, k in enumerate(p)), p) for p in
                    (task.path_nodes(lab) for lab in labels))
        assert got[0][0] == brute[1] and math.isclose(got[0][1], brute[0])
        scores = [score for _, score in got]
        assert scores == sorted(scores, reverse=True)  # best first


def test_decode_row_shape_for_a_hierarchical_task():
    logits = np.array([[2.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.0]])
    row = decode(SCHEMA, {"route": logits})[0]
    assert list(row["scores"]["route"]) == ["bank", "travel", *ROUTE["labels"]]
    assert math.isclose(row["scores"]["route"]["bank"] + row["scores"]["route"]["travel"], 1.0, abs_tol=1e-5)
    assert row["labels"]["route"] == "travel/book"
    assert [(lv["level"], lv["label"]) for lv in row["levels"]["route"]] == [("domain", "travel"),
                                                                            ("intent", "travel/book")]
    assert all(lv["p"] == row["scores"]["route"][lv["label"]] for lv in row["levels"]["route"])
    flat = parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ["a", "b"]}}})
    assert set(decode(flat, {"act": np.array([[0.0, 1.0]])})[0]) == {"scores", "labels"}  # no levels key


# --- losses -------------------------------------------------------------------------------------------

def test_ranking_loss_value_and_gradient_direction():
    s_pos = torch.tensor([2.0, -1.0], requires_grad=True)
    s_neg = torch.tensor([0.5, 1.0], requires_grad=True)
    loss = response_ranking_loss(s_pos, s_neg)
    value = float(loss.detach())
    expected = np.mean([-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5))),
                        -math.log(math.exp(-1.0) / (math.exp(-1.0) + math.exp(1.0)))])
    assert math.isclose(value, expected, rel_tol=1e-6)  # 0.2014 and 2.1269 -> 1.1641
    assert math.isclose(value, 1.16415, abs_tol=1e-4)
    loss.backward()
    assert (s_pos.grad < 0).all() and (s_neg.grad > 0).all()  # descent raises s+ and lowers s-
    assert torch.allclose(s_pos.grad, -s_neg.grad)
    assert float(response_ranking_loss(torch.tensor([50.0]), torch.tensor([-50.0]))) < 1e-20


def test_hierarchical_loss_is_the_sum_of_level_cross_entropies():
    f0, f1 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    got = hierarchical_loss([f0, f1], torch.tensor([[0, 1]]))
    want = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (math.e + 2))
    assert math.isclose(float(got), want, rel_tol=1e-6)


# --- model and training -----------------------------------------------------------------------------------

def test_a_training_step_with_hierarchical_heads_and_ranking_lowers_the_loss(tiny_backbone: Path):
    built = build_model(str(tiny_backbone), SCHEMA, seed=0)
    model, tok = built.model, built.tokenizer
    window = WindowConfig(max_turns=3, max_tokens=32)
    dias = dialogues()
    seg = build_segments(dias, SCHEMA, tok, window)
    rows = np.flatnonzero(seg.has_gold("route"))
    ranks = build_rank_set(dias, "route", tok)
    cfg = TrainConfig(objective="none", rank_weight=0.3, rank_batch=4, max_tokens=32, max_turns=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, rank_losses = [], []
    model.eval()  # no dropout: the same batch must give a lower loss after the steps
    for step in range(12):
        logits = model.logits_dict(**collate(seg, rows, tok.pad_token_id))
        assert logits["route"].shape == (len(rows), 7)
        task_loss, _ = finetune_loss(logits, seg, rows)
        loss = add_rank_loss(task_loss, model, ranks, cfg, np.random.default_rng(0), tok, bf16=False)
        rank_losses.append((float(loss.detach()) - float(task_loss.detach())) / 0.3)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert model.ranker.weight.grad is not None and model.ranker.weight.grad.abs().sum() > 0
        opt.step()
    assert losses[-1] < losses[0] and rank_losses[-1] < rank_losses[0]


def test_rank_inputs_pair_context_and_response(tiny_backbone: Path):
    tok = build_model(str(tiny_backbone), SCHEMA).tokenizer
    ids, types = pair_inputs([[5, 6], [7, 8, 9]], [11, 12], tok, max_tokens=8, max_turns=2)
    assert ids == [tok.cls_token_id, 7, 8, 9, tok.sep_token_id, 11, 12, tok.sep_token_id]  # context cut left
    assert types == [0, 0, 0, 0, 0, 1, 1, 1]
    dias = dialogues(6)
    rs = build_rank_set(dias, "route", tok)
    assert len(rs) == 6 * 2  # one candidate per turn after the first
    batch = rank_batch(rs, 4, np.random.default_rng(1), tok, 32, 3)
    assert batch["input_ids"].shape[0] == 8
    for b, w in zip(batch["input_ids"][:4], batch["input_ids"][4:], strict=True):
        assert not torch.equal(b, w)  # the negative is another dialogue's turn


def test_ranked_pairs_from_meta_replace_sampled_negatives(tiny_backbone: Path):
    tok = build_model(str(tiny_backbone), SCHEMA).tokenizer
    d = dialogues(2)
    d[0] = d[0].model_copy(update={"meta": {"ranked_pairs": [
        {"context_turns": 1, "better": "let me check your balance", "worse": "your flight is booked"}]}})
    rs = build_rank_set(d, "route", tok)
    own = [c for c in rs.candidates if c[0] == 0]
    assert len(own) == 1 and own[0][1] == 1 and own[0][3] is not None
    bad = d[0].model_copy(update={"meta": {"ranked_pairs": [{"context_turns": 9, "better": "a", "worse": "b"}]}})
    with pytest.raises(DataError, match="ranked_pairs\\[0\\]"):
        build_rank_set([bad], "route", tok)


def test_rank_weight_needs_a_hierarchical_task(tiny_backbone: Path, tmp_path: Path):
    flat = parse_tasks({"tasks": {"route": {"type": "multiclass", "labels": ROUTE["labels"]}}})
    cfg = TrainConfig(objective="none", backbone=str(tiny_backbone), encoder="flat", rank_weight=0.3, max_steps=1)
    with pytest.raises(ValueError, match="needs a hierarchical task"):
        train(cfg, dialogues(), flat, tmp_path / "x")


@pytest.mark.parametrize("encoder", ["flat", "streaming"])
def test_train_with_ranking_writes_a_checkpoint_with_level_metrics(tiny_backbone: Path, tmp_path: Path, encoder):
    cfg = TrainConfig(objective="none", backbone=str(tiny_backbone), encoder=encoder, max_tokens=32, max_turns=3,
                      max_context_tokens=64, finetune_epochs=2, batch_size=8, rank_weight=0.3, rank_batch=4,
                      precision="fp32", save_every=1000)
    res = train(cfg, dialogues(), SCHEMA, tmp_path / "ck", val_dialogues=dialogues(4))
    assert res.steps > 0 and all(math.isfinite(h["loss"]) for h in res.history)
    ckpt = load_checkpoint(tmp_path / "ck")  # the ranker is part of the weights: a strict load works
    assert hasattr(ckpt.model, "ranker")
    report = evaluate_path(tmp_path / "ck", dialogues(4))
    m = report["tasks"]["route"]
    assert set(m["levels"]) == {"domain", "intent"} and m["n"] == 8
    # The path is right only where every level is: path accuracy never exceeds a level's.
    assert m["accuracy"] <= min(lv["accuracy"] for lv in m["levels"].values()) + 1e-12
    seg = build_segments(dialogues(4), SCHEMA, ckpt.tokenizer, WindowConfig(max_turns=3, max_tokens=32))
    if encoder == "flat":
        logits = predict_rows(ckpt.model, seg, ckpt.tokenizer.pad_token_id)
        paths, _ = decode_paths(SCHEMA["route"], logits["route"][seg.has_gold("route")])
        table = path_table(SCHEMA["route"])
        gold = table[seg.gold["route"][seg.has_gold("route")]]
        assert math.isclose(m["levels"]["domain"]["accuracy"], float((paths[:, 0] == gold[:, 0]).mean()))
        assert compute_metrics(SCHEMA, seg, logits)["tasks"]["route"]["confusion"] == m["confusion"]


def test_multidogo_intent_paths(data_root: Path):
    from trainer.data import multidogo

    if not (data_root / "multidogo").is_dir():
        pytest.skip("MultiDoGO not available")
    dias = multidogo.with_intent_paths(multidogo.load(data_root / "multidogo", "test", max_dialogues=20))
    task = multidogo.PATH_TASK
    seen = [t.labels["intent_path"] for d in dias for t in d.turns if "intent_path" in t.labels]
    assert seen and all(p in task.labels for p in seen)
    assert all(p.startswith(d.meta["domain"] + "/") for d in dias for t in d.turns
               for p in [t.labels.get("intent_path", d.meta["domain"] + "/")])
    assert task.level_nodes()[0] == list(multidogo.DOMAINS) and task.num_labels == 6 + 85
