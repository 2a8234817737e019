"""Chain-of-Intent: the estimated chain (eq. 1-2), sampled chains that follow it (chi-square), the ``sample``
emission, the outputs of ``turnwise generate`` and its command line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2
from typer.testing import CliRunner

from cli.main import app
from trainer.generate.emission import ExamplePool
from trainer.generate.hmm import IntentHMM
from trainer.generate.run import generate_sampled, hmm_path, run_generate
from turnwise.dialogue import Dialogue, Turn, read_jsonl, write_jsonl
from turnwise.errors import DataError


def _dialogue(did: str, intents: list[str], *, agent: bool = True) -> Dialogue:
    turns = []
    for i, intent in enumerate(intents):
        turns.append(Turn(speaker="customer", text=f"{intent} words {did} {i}", labels={"intent": intent}))
        if agent:
            turns.append(Turn(speaker="agent", text=f"reply to {intent} {did} {i}"))
    return Dialogue(dialogue_id=did, turns=turns)


FIXTURE = [
    _dialogue("d1", ["greet", "book", "book", "thanks"]),
    _dialogue("d2", ["greet", "cancel", "thanks"]),
    _dialogue("d3", ["book", "thanks"], agent=False),
    Dialogue(dialogue_id="d4", turns=[Turn(speaker="agent", text="no labels here")]),
]


def test_estimate_counts_and_smoothing_by_hand() -> None:
    hmm = IntentHMM.estimate(FIXTURE, "intent", smoothing=0.5)
    assert hmm.states == ["book", "cancel", "greet", "thanks"]
    assert hmm.dialogues == 3  # d4 has no labelled turn
    assert hmm.lengths == [2, 3, 4] and np.allclose(hmm.length_probs, [1 / 3, 1 / 3, 1 / 3])
    # first intents: greet x2, book x1 -> (n + 0.5) / (3 + 0.5 * 4)
    assert np.allclose(hmm.initial, np.array([1.5, 0.5, 2.5, 0.5]) / 5)
    # from book: book->book, book->thanks, book->thanks (d3) -> counts [1, 0, 0, 2]
    assert hmm.transition_counts[0].tolist() == [1, 0, 0, 2]
    assert np.allclose(hmm.transitions[0], np.array([1.5, 0.5, 0.5, 2.5]) / 5)
    # thanks never leads anywhere: a smoothed row is uniform
    assert np.allclose(hmm.transitions[3], 0.25)
    assert np.allclose(hmm.transitions.sum(axis=1), 1)


def test_no_smoothing_keeps_unseen_transitions_impossible() -> None:
    hmm = IntentHMM.estimate(FIXTURE, "intent", smoothing=0.0)
    greet = hmm.states.index("greet")
    assert hmm.transitions[greet].tolist() == [0.5, 0.5, 0.0, 0.0]
    for chain in hmm.sample_chains(300, seed=3):
        assert chain[0] in ("greet", "book")
        for a, b in itertools.pairwise(chain):
            if a == "greet":
                assert b in ("book", "cancel")


def test_max_turns_caps_the_turn_counts() -> None:
    hmm = IntentHMM.estimate(FIXTURE, "intent", max_turns=3)
    assert hmm.lengths == [2, 3] and np.allclose(hmm.length_probs, [1 / 3, 2 / 3])


def _random_hmm() -> IntentHMM:
    rng = np.random.default_rng(11)
    states = [f"i{k}" for k in range(5)]
    dialogues = [_dialogue(f"r{n}", [states[j] for j in rng.choice(5, size=int(rng.integers(2, 9)),
                                                                      p=[0.4, 0.3, 0.15, 0.1, 0.05])])
                 for n in range(60)]
    return IntentHMM.estimate(dialogues, "intent", smoothing=0.2)


def test_sampled_chains_follow_the_estimated_transitions() -> None:
    hmm = _random_hmm()
    chains = hmm.sample_chains(20_000, seed=5)
    stat, df = hmm.transition_chi_square(chains)
    assert df >= 15
    assert chi2.sf(stat, df) > 1e-3, f"chains do not follow A: chi2={stat:.1f} on {df} df"
    # the same statistic rejects a matrix the chains were not sampled from
    other = IntentHMM.from_dict(hmm.to_dict())
    other.transitions = np.roll(other.transitions, 1, axis=1)
    bad, bad_df = other.transition_chi_square(chains)
    assert chi2.sf(bad, bad_df) < 1e-12
    # initial intents and lengths follow pi and P(T)
    firsts = np.array([sum(c[0] == s for c in chains) for s in hmm.states])
    init_stat = float((((firsts - len(chains) * hmm.initial) ** 2) / (len(chains) * hmm.initial)).sum())
    assert chi2.sf(init_stat, len(hmm.states) - 1) > 1e-3
    lengths = np.array([sum(len(c) == t for c in chains) for t in hmm.lengths])
    exp = len(chains) * hmm.length_probs
    assert chi2.sf(float(((lengths - exp) ** 2 / exp).sum()), len(hmm.lengths) - 1) > 1e-3


def test_chains_are_seeded_and_the_hmm_round_trips() -> None:
    hmm = _random_hmm()
    assert hmm.sample_chains(50, seed=1) == hmm.sample_chains(50, seed=1)
    assert hmm.sample_chains(50, seed=1) != hmm.sample_chains(50, seed=2)
    back = IntentHMM.from_dict(json.loads(json.dumps(hmm.to_dict())))
    assert back.states == hmm.states and np.allclose(back.transitions, hmm.transitions, atol=1e-7)
    assert back.sha256() == hmm.sha256()


def test_multilabel_task_is_refused() -> None:
    d = Dialogue(dialogue_id="m", turns=[Turn(speaker="user", text="x", labels={"slots": ["a", "b"]})])
    with pytest.raises(DataError, match="multilabel"):
        IntentHMM.estimate([d], "slots")
    with pytest.raises(DataError, match="no dialogue has a gold 'intent'"):
        IntentHMM.estimate([d], "intent")


def test_sample_emission_draws_utterances_and_replies_of_the_intent() -> None:
    source = [d for d in FIXTURE if d.dialogue_id != "d3"]
    pool = ExamplePool.from_dialogues(source, "intent")
    assert pool.user_speaker == "customer" and pool.agent_speaker == "agent"
    dialogues, hmm = generate_sampled(source, "intent", 40, seed=7, hmm_file="x.hmm.json")
    texts = {(t.text, t.labels.get("intent")) for d in source for t in d.turns}
    for d in dialogues:
        users = [t for t in d.turns if t.speaker == "customer"]
        assert [t.labels["intent"] for t in users] == d.meta["intents"]
        for i, t in enumerate(d.turns):
            if t.speaker == "customer":
                assert (t.text, t.labels["intent"]) in texts
                reply = d.turns[i + 1]  # every example of this source has a reply
                assert reply.speaker == "agent" and reply.labels == {}
                assert reply.text.startswith(f"reply to {t.labels['intent']} ")
        gen = d.meta["generator"]
        assert gen["emission"] == "sample" and gen["hmm"]["sha256"] == hmm.sha256()
        assert gen["hmm"]["file"] == "x.hmm.json" and d.meta["source"] == "chain_of_intent"
    assert len({d.dialogue_id for d in dialogues}) == 40


def test_user_only_data_gives_user_only_dialogues() -> None:
    source = [_dialogue(f"u{i}", ["a", "b", "a"], agent=False) for i in range(3)]
    dialogues, _ = generate_sampled(source, "intent", 10, seed=0)
    assert all(t.speaker == "customer" and "intent" in t.labels for d in dialogues for t in d.turns)


def test_run_generate_writes_dialogues_chain_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    summary = run_generate(FIXTURE, "intent", out, 12, emission="sample", seed=4)
    back = read_jsonl(out)
    assert len(back) == summary["dialogues"] == 12
    chain = json.loads(hmm_path(out).read_text())
    assert chain["states"] == ["book", "cancel", "greet", "thanks"]
    assert back[0].meta["generator"]["hmm"]["sha256"] == IntentHMM.from_dict(chain).sha256()
    assert json.loads((tmp_path / "gen.summary.json").read_text())["turns"] == sum(len(d.turns) for d in back)
    # --plan writes nothing
    plan = run_generate(FIXTURE, "intent", tmp_path / "p.jsonl", 5, emission="sample", plan=True)
    assert plan["calls"] == 0 and not (tmp_path / "p.jsonl").exists()


def test_cli_generate_sample_and_llm_without_model(tmp_path: Path) -> None:
    data = tmp_path / "src.jsonl"
    write_jsonl(FIXTURE, data)
    out = tmp_path / "g.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["generate", "--from", str(data), "--task", "intent", "--out", str(out),
                              "--dialogues", "6", "--emission", "sample", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(out)) == 6 and hmm_path(out).exists()
    res = runner.invoke(app, ["generate", "--from", str(data), "--task", "intent", "--out", str(tmp_path / "x.jsonl"),
                              "--dialogues", "2"])
    assert res.exit_code != 0 and isinstance(res.exception, DataError) and "--model" in str(res.exception)
