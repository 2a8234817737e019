"""The prompt bank: coverage of the tasks, rendering through the window formatter, parsers that never crash."""

from __future__ import annotations

import json
import random
import string

import pytest

from trainer.teachers.parsers import ABSTAIN, parse_choice, parse_label_json, parse_lines_json
from trainer.teachers.prompts import PromptBank, render_dialogue, render_turn
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskType, parse_tasks
from turnwise.window import WindowConfig

ACT = ["inform", "question", "directive", "commissive"]


@pytest.fixture(scope="module")
def bank() -> PromptBank:
    return PromptBank.load()


def _schemas():
    from trainer.data import source_tasks

    return [("samples", parse_tasks({"tasks": {
        "intent": {"type": "binary", "labels": ["no_intent", "has_intent"]},
        "act": {"type": "multiclass", "labels": ACT},
        "sentiment": {"type": "multiclass", "labels": ["negative", "neutral", "positive"]},
    }})), ("dailydialog", source_tasks("dailydialog")), ("meld", source_tasks("meld"))]


@pytest.mark.parametrize(("where", "schema"), _schemas())
def test_every_task_has_three_different_prompts(bank, where, schema):
    for name in schema.names():
        tp = bank.for_task(name, schema[name])
        assert tp.path is not None  # a written bank file, not the generic fallback
        assert len(tp.prompts) >= 3
        assert {"choice", "lines_json", "label_json"} <= {p.style for p in tp.prompts}
        assert len({p.user for p in tp.prompts}) == len(tp.prompts)
        for lab in schema[name].labels:
            assert len(tp.label_descriptions[lab]) >= 2  # a definition and at least one paraphrase


def test_emotion_files_are_told_apart_by_labels(bank):
    from trainer.data import source_tasks

    dd = bank.for_task("emotion", source_tasks("dailydialog")["emotion"])
    meld = bank.for_task("emotion", source_tasks("meld")["emotion"])
    assert dd.path != meld.path
    strict = PromptBank.load(fallback=False)
    with pytest.raises(DataError, match="no prompts for task"):
        strict.for_task("emotion", Task(type=TaskType.multiclass, labels=["calm", "upset"]))


@pytest.mark.parametrize("source", ["multiwoz", "sgd", "multidogo"])
def test_tasks_without_a_bank_file_get_generic_prompts_that_render_and_parse(bank, source):
    from trainer.data import source_tasks
    from trainer.teachers.parsers import parse_turn_answer
    from trainer.teachers.scores import MAX_MULTILABEL_CLASSES

    schema = source_tasks(source)
    turns = _dialogue(4).turns
    for name in schema.names():
        task = schema[name]
        if task.type is TaskType.multilabel and len(task.labels) > MAX_MULTILABEL_CLASSES:
            continue  # refused by the teachers with a clear error (see test_teachers_scores)
        tp = bank.for_task(name, task)
        if tp.path is not None:  # a task with its own bank file (action.yaml)
            continue
        assert len(tp.prompts) == 3 and len({p.user for p in tp.prompts}) == 3
        assert {p.style for p in tp.prompts} >= {"label_json", "lines_json"}
        multi = task.type is TaskType.multilabel
        a, b = task.labels[1], task.labels[-1]
        for prompt in tp.prompts:
            if prompt.style == "lines_json":
                text = render_dialogue(tp, prompt, turns)[-1]["content"]
                assert "4. " in text and a in text
                votes = parse_lines_json(json.dumps({a: [1, 2], b: [2]}), task.labels, 4, multilabel=multi)
                assert votes[0] == ((1 << 1) if multi else 1)
                continue
            text = render_turn(tp, prompt, turns, 2, WindowConfig(max_turns=3, max_tokens=64))[-1]["content"]
            assert "utterance number 2" in text and "$" not in text
            if prompt.style == "label_json":
                answer = json.dumps({"labels": [a, b]} if multi else {"label": b})
                expected = (1 << 1) | (1 << (len(task.labels) - 1)) if multi else len(task.labels) - 1
            else:
                answer, expected = ("B", 1 << 1) if multi else ("B", 1)
            assert parse_turn_answer(prompt, answer, task.labels, task.type) == expected


def _dialogue(n: int) -> Dialogue:
    return Dialogue(dialogue_id="d", turns=[
        Turn(speaker="agent" if i % 2 == 0 else "customer", text=f"utterance number {i}") for i in range(n)])


def test_turn_prompt_sees_the_student_window(bank):
    tp = bank.for_task("act", Task(type=TaskType.multiclass, labels=ACT))
    choice = next(p for p in tp.prompts if p.style == "choice")
    msgs = render_turn(tp, choice, _dialogue(10).turns, 7, WindowConfig(max_turns=3))
    user = msgs[-1]["content"]
    assert "[usr] utterance number 7" in user  # the scored turn, tagged by the window formatter
    assert "[sys] utterance number 6" in user and "[usr] utterance number 5" in user
    assert "utterance number 4" not in user  # outside max_turns
    assert "utterance number 8" not in user  # the future is never shown
    assert "A) inform:" in user and "D) commissive:" in user
    assert "$" not in user
    first = render_turn(tp, choice, _dialogue(3).turns, 0, WindowConfig())[-1]["content"]
    assert "(start of the conversation)" in first


def test_dialogue_prompt_numbers_every_line(bank):
    tp = bank.for_task("act", Task(type=TaskType.multiclass, labels=ACT))
    lines = next(p for p in tp.prompts if p.style == "lines_json")
    user = render_dialogue(tp, lines, _dialogue(4).turns)[-1]["content"]
    assert "1. [sys] utterance number 0" in user and "4. [usr] utterance number 3" in user
    assert "from 1 to 4" in user


@pytest.mark.parametrize(("text", "vote"), [
    ("B", 1), (" (c) ", 2), ("a", 0), ("C)", 2), ("D. commissive", 3), ("**A**", 0), ("Answer: B", 1),
    ("The answer is D", 3), ("question", 1), ("It is a directive.", 2), ("inform or question", ABSTAIN),
    ("E", ABSTAIN), ("", ABSTAIN), (None, ABSTAIN), ("I think so", ABSTAIN), ("A question", 1),
])
def test_parse_choice(text, vote):
    assert parse_choice(text, ACT) == vote


def test_parse_choice_multilabel():
    labels = ["date", "city", "hotel"]
    assert parse_choice("A, C", labels, multilabel=True) == 0b101
    assert parse_choice("NONE", labels, multilabel=True) == 0
    assert parse_choice("city and hotel", labels, multilabel=True) == 0b110
    assert parse_choice("A, Z", labels, multilabel=True) == ABSTAIN


@pytest.mark.parametrize(("text", "vote"), [
    ('{"reason": "asks", "label": "question"}', 1),
    ('```json\n{"label": "Directive"}\n```', 2),
    ('Sure! {"reason": "x", "label": "commissive"} hope that helps', 3),
    ('{"reason": "x", "label": "greeting"}', ABSTAIN),
    ('{"reason": "cut off', ABSTAIN),
    ('{"reason": "the user asks, "label": "question"', 1),  # broken JSON, readable pair
    ("[1, 2]", ABSTAIN), ("null", ABSTAIN),
])
def test_parse_label_json(text, vote):
    assert parse_label_json(text, ACT) == vote


def test_parse_lines_json():
    text = json.dumps({"question": [1, 3], "inform": [2, 3, "4"], "nonsense": [5], "directive": [99]})
    assert parse_lines_json(text, ACT, 5) == [1, 0, ABSTAIN, 0, ABSTAIN]  # 3 listed twice, 5 unlisted
    assert parse_lines_json(json.dumps({"has_intent": [2]}), ["no_intent", "has_intent"], 3,
                            default_label="no_intent") == [0, 1, 0]
    assert parse_lines_json(json.dumps({"question": [1, 2]}), ACT, 2, multilabel=True) == [2, 2]
    assert parse_lines_json("no json here", ACT, 3) == [ABSTAIN] * 3
    assert parse_lines_json(json.dumps({"question": "1,2"}), ACT, 2) == [ABSTAIN] * 2
    assert parse_lines_json(json.dumps({"foo": [1]}), ACT, 2) == [ABSTAIN] * 2


def test_parsers_never_crash_on_random_answers():
    rng = random.Random(0)
    alphabet = string.printable + "{}[]\":,éß—"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for ml in (False, True):
            assert isinstance(parse_choice(text, ACT, ml), int)
            assert isinstance(parse_label_json(text, ACT, ml), int)
            assert len(parse_lines_json(text, ACT, 4, ml)) == 4


def test_bad_bank_file_is_a_data_error(tmp_path):
    (tmp_path / "x.yaml").write_text(
        "task: act\nlabels: [a, b]\nlabel_descriptions: {a: [x], b: [y]}\n"
        "prompts:\n  - {id: p, style: choice, unit: turn, user: 'hello $unknown'}\n")
    with pytest.raises(DataError, match="bad placeholder"):
        PromptBank.load(tmp_path)
    (tmp_path / "x.yaml").write_text(
        "task: act\nlabels: [a, b]\nlabel_descriptions: {a: [x], b: [y]}\n"
        "prompts:\n  - {id: p, style: lines_json, unit: turn, user: 'hi'}\n")
    with pytest.raises(DataError, match="works on unit 'dialogue'"):
        PromptBank.load(tmp_path)
