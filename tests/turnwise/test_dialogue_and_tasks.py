import json

import pytest

from turnwise.dialogue import Dialogue, read_jsonl, write_jsonl
from turnwise.errors import DataError
from turnwise.tasks import TaskType, load_tasks, parse_tasks


def test_roundtrip(tmp_path):
    d = Dialogue(dialogue_id="c1", turns=[{"speaker": "agent", "text": " hi ", "labels": {"act": "inform"}}])
    p = tmp_path / "d.jsonl"
    assert write_jsonl([d], p) == 1
    (back,) = read_jsonl(p)
    assert back == d and back.turns[0].text == "hi"


def test_bad_line_names_file_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = {"dialogue_id": "a", "turns": [{"speaker": "agent", "text": "hi"}]}
    bad = {"dialogue_id": "b", "turns": [{"speaker": "agent"}]}
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as err:
        read_jsonl(p)
    msg = str(err.value)
    assert f"{p}:2" in msg and "turns.0.text" in msg


def test_invalid_json_and_duplicates(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("{not json\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: invalid JSON"):
        read_jsonl(p)
    row = json.dumps({"dialogue_id": "a", "turns": []})
    p.write_text(row + "\n" + row + "\n")
    with pytest.raises(DataError, match="duplicate dialogue_id 'a'"):
        read_jsonl(p)


def test_task_schema(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("tasks:\n  intent: {type: binary, labels: [neg, pos]}\n  slots: {type: multilabel, labels: [a, b]}\n")
    schema = load_tasks(p)
    assert schema["intent"].type is TaskType.binary
    assert schema["slots"].encode(["b"]) == [0.0, 1.0]
    assert schema["intent"].encode("pos") == [0.0, 1.0]
    with pytest.raises(DataError, match="unknown label 'maybe'"):
        schema["intent"].encode("maybe")
    with pytest.raises(DataError, match="unknown task"):
        schema["act"]


def test_task_schema_errors():
    with pytest.raises(DataError, match=r"binary task has exactly two labels"):
        parse_tasks({"tasks": {"x": {"type": "binary", "labels": ["a", "b", "c"]}}})
    with pytest.raises(DataError, match=r"tasks\.x\.type"):
        parse_tasks({"tasks": {"x": {"type": "ranking", "labels": ["a", "b"]}}})
