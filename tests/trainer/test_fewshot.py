"""The few-shot teacher on a toy set whose classes the bundled MiniLM separates (the real encoder, PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.teachers.cli import gold_accuracy
from trainer.teachers.fewshot import FewshotConfig, FewshotTeacher, choose_shots, class_similarity
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.tasks import parse_tasks

TOPICS = {
    "food": ["I cooked pasta with tomato sauce tonight.", "This pizza has too much cheese.",
             "Let's bake a chocolate cake for dessert.", "The soup needs more salt and pepper.",
             "We ate fresh sushi and rice for lunch.", "I love grilled chicken with vegetables."],
    "sport": ["Our team won the football match yesterday.", "He scored a goal in the final minute.",
              "The tennis player served an ace.", "She runs a marathon every spring.",
              "The basketball game went into overtime.", "The swimmer broke the world record."],
    "money": ["My bank charged a fee on my account.", "I need to pay the credit card bill.",
              "The interest rate on the loan went up.", "He deposited his salary into savings.",
              "The stock market fell sharply today.", "Can I transfer money to another account?"],
}
SCHEMA = parse_tasks({"tasks": {"topic": {"type": "multiclass", "labels": list(TOPICS)}}})


def toy(n: int, offset: int = 0, prefix: str = "d") -> list[Dialogue]:
    """``n`` dialogues of 3 turns, each turn from a topic, cycling through the sentences."""
    out = []
    labels = list(TOPICS)
    for i in range(n):
        turns = []
        for j in range(3):
            lab = labels[(i + j) % 3]
            text = TOPICS[lab][(i * 3 + j + offset) % len(TOPICS[lab])]
            turns.append(Turn(speaker="user" if j % 2 == 0 else "agent", text=text, labels={"topic": lab}))
        out.append(Dialogue(dialogue_id=f"{prefix}{i}", turns=turns))
    return out


pytestmark = pytest.mark.usefixtures("encoder_cache_in_tmp")


def teacher(pool, **kw) -> FewshotTeacher:
    return FewshotTeacher(pool, FewshotConfig(backend="torch", **{"shots": 2, **kw}))


@pytest.mark.parametrize("method", ["prototype", "knn"])
def test_beats_chance_on_a_separable_toy_set(method):
    pool, evaluated = toy(4, prefix="pool"), toy(6, offset=1, prefix="eval")
    # each toy turn changes topic, so the context would only blur it: the turn alone here
    t = teacher(pool, method=method, neighbours=2, context_weight=0.0)
    recs = t.label(evaluated, SCHEMA, 20)
    assert len(recs) == len(evaluated) and all(r.teacher.kind == "fewshot" for r in recs)
    acc = gold_accuracy(evaluated, recs, SCHEMA)["topic"]["accuracy"]
    assert acc > 0.8  # chance is 1/3
    assert t.summary()["shots_per_class"] == {"topic": {"food": 2, "sport": 2, "money": 2}}
    for r in recs:
        np.testing.assert_allclose(r.array().sum(axis=1), 1.0, atol=1e-6)


def test_votes_follow_the_temperature():
    pool, evaluated = toy(4, prefix="pool"), toy(6, offset=1, prefix="eval")

    def mean_max(temp: float) -> float:
        recs = teacher(pool, temperature=temp).label(evaluated, SCHEMA, 40)
        return float(np.mean([r.array().max(axis=1).mean() for r in recs]))

    cold, mid, hot = mean_max(0.2), mean_max(1.0), mean_max(20.0)
    assert cold > mid > hot
    assert hot < 0.6  # near uniform over 3 classes: votes spread out


def test_uses_only_the_gold_pool_it_is_given():
    pool, evaluated = toy(4, prefix="pool"), toy(6, offset=1, prefix="eval")
    base = teacher(pool).label(evaluated, SCHEMA, 20)
    # the evaluated dialogues' own labels play no part: stripped, the votes are the same
    stripped = [Dialogue(dialogue_id=d.dialogue_id, turns=[Turn(speaker=t.speaker, text=t.text) for t in d.turns])
                for d in evaluated]
    assert [r.votes for r in teacher(pool).label(stripped, SCHEMA, 20)] == [r.votes for r in base]
    # ... while the pool's labels are everything: a pool with food and sport swapped swaps the answers
    swap = {"food": "sport", "sport": "food", "money": "money"}
    lying = [Dialogue(dialogue_id=d.dialogue_id, turns=[Turn(speaker=t.speaker, text=t.text,
                                                             labels={"topic": swap[t.labels["topic"]]})
                                                        for t in d.turns]) for d in pool]
    acc = gold_accuracy(evaluated, teacher(lying).label(evaluated, SCHEMA, 20), SCHEMA)["topic"]["accuracy"]
    assert acc < 0.5
    # a pool without labels for the task cannot teach it
    with pytest.raises(DataError, match="no turn labelled"):
        teacher(stripped).label(evaluated, SCHEMA, 5)


def test_a_class_missing_from_the_pool_gets_no_votes():
    pool = [d for d in toy(6, prefix="pool")]
    pool = [Dialogue(dialogue_id=d.dialogue_id, turns=[t for t in d.turns if t.labels["topic"] != "money"])
            for d in pool]
    t = teacher(pool)
    recs = t.label(toy(3, offset=2), SCHEMA, 10)
    assert all(r.array()[:, 2].sum() == 0 for r in recs)
    assert t.summary()["missing_classes"] == {"topic": ["money"]}


def test_deterministic_with_a_seed_and_per_dialogue():
    pool, evaluated = toy(4, prefix="pool"), toy(6, offset=1, prefix="eval")
    a = teacher(pool, seed=3, temperature=3.0).label(evaluated, SCHEMA, 20)
    b = teacher(pool, seed=3, temperature=3.0).label(evaluated[2:4], SCHEMA, 20)
    assert [r.votes for r in a[2:4]] == [r.votes for r in b]
    c = teacher(pool, seed=4, temperature=3.0).label(evaluated, SCHEMA, 20)
    assert any(x.votes != y.votes for x, y in zip(a, c, strict=True))
    # the shots are drawn from the pool with the seed too
    big = toy(12, prefix="pool")
    assert choose_shots(big, "topic", SCHEMA["topic"], 2, 0) == choose_shots(big, "topic", SCHEMA["topic"], 2, 0)
    assert choose_shots(big, "topic", SCHEMA["topic"], 2, 0) != choose_shots(big, "topic", SCHEMA["topic"], 2, 1)


def test_class_similarity_by_hand():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    shots = [np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([[0.0, 1.0]]), np.zeros((0, 2))]
    proto = class_similarity(q, shots, "prototype", 1)
    # prototype of class 0: mean (0.8, 0.4), normalised (0.894, 0.447)
    np.testing.assert_allclose(proto[:, :2], [[0.8 / np.sqrt(0.8), 0.0], [0.4 / np.sqrt(0.8), 1.0]], atol=1e-9)
    assert np.isnan(proto[:, 2]).all()
    knn = class_similarity(q, shots, "knn", 1)  # the single nearest shot
    np.testing.assert_allclose(knn[:, :2], [[1.0, 0.0], [0.8, 1.0]])


def test_config_validation():
    with pytest.raises(ValueError, match="method"):
        FewshotConfig(method="svm")
    with pytest.raises(ValueError, match="temperature"):
        FewshotConfig(temperature=0)
    with pytest.raises(ValueError, match="shots"):
        FewshotConfig(shots=0)


def test_label_command_with_the_fewshot_teacher(tmp_path, samples_dir, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from trainer.teachers.scores import read_scores
    from turnwise.dialogue import read_jsonl, write_jsonl

    pool = tmp_path / "pool.jsonl"
    write_jsonl(read_jsonl(samples_dir / "dialogues.jsonl")[-20:], pool)
    out = tmp_path / "fs.jsonl"
    args = ["label", "--data", str(samples_dir / "dialogues.jsonl"), "--tasks", str(samples_dir / "tasks.yaml"),
            "--teacher", "fewshot", "--gold-pool", str(pool), "--gold-pool-dialogues", "12", "--shots", "3",
            "--samples", "5", "--max-dialogues", "4", "--out", str(out), "--temperature", "0.5"]
    monkeypatch.setenv("TURNWISE_CACHE_DIR", str(tmp_path / "enc"))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = read_scores(out)
    assert len(recs) == 4 * 3 and {r.teacher.kind for r in recs.values()} == {"fewshot"}
    summary = json_load(tmp_path / "fs.summary.json")
    assert summary["gold_pool_dialogues"] == 12 and summary["config"]["shots"] == 3
    assert summary["config"]["temperature"] == 0.5
    assert all(0 < n <= 3 for per in summary["shots_per_class"].values() for n in per.values())
    r = CliRunner().invoke(app, args[:7] + args[11:])  # without --gold-pool
    assert r.exit_code != 0 and isinstance(r.exception, DataError) and "--gold-pool" in str(r.exception)


def json_load(path):
    import json

    return json.loads(path.read_text())


def test_the_class_prior_comes_from_the_pool_and_shifts_the_votes():
    from trainer.teachers.fewshot import class_prior, sample_votes

    task = parse_tasks({"tasks": {"a": {"type": "multiclass", "labels": ["x", "y"]}}})["a"]
    pool = [Dialogue(dialogue_id="p", turns=[Turn(speaker="u", text=str(i), labels={"a": lab})
                                             for i, lab in enumerate(["x", "x", "x", "y"])])]
    np.testing.assert_allclose(class_prior(pool, "a", task), [4 / 6, 2 / 6])  # add-one smoothed counts
    # equal similarities: the votes follow the prior alone
    votes = sample_votes(np.zeros((1, 2)), 4000, FewshotConfig(), False, np.random.default_rng(0),
                         bias=np.log([0.8, 0.2]))
    assert abs((votes == 0).mean() - 0.8) < 0.03
    assert abs((sample_votes(np.zeros((1, 2)), 4000, FewshotConfig(), False, np.random.default_rng(0)) == 0).mean()
               - 0.5) < 0.03
