"""The adapter registry: sources, their task schemas, splits, the data root and the load report."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data import SOURCES, LoadReport, default_data_root, load_source, normalise_split, source_tasks
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema

# --------------------------------------------------------------------------- registry


def test_source_tasks_and_unknown_source() -> None:
    assert SOURCES == ("dailydialog", "meld", "multiwoz", "sgd", "multidogo", "jsonl")
    assert source_tasks("dailydialog").names() == ["act", "emotion"]
    assert source_tasks("meld").names() == ["sentiment", "emotion"]
    assert source_tasks("multiwoz").names() == ["user_act", "slots", "action"]
    assert source_tasks("sgd").names() == ["active_intent", "user_act", "slots", "action"]
    assert source_tasks("multidogo").names() == ["intent", "slots"]
    assert source_tasks("meld")["sentiment"].labels == ["negative", "neutral", "positive"]
    assert len(source_tasks("multiwoz")["slots"].labels) == 38
    with pytest.raises(DataError, match="--tasks"):
        source_tasks("jsonl")
    with pytest.raises(DataError, match="unknown source 'woz'"):
        load_source("woz", ".")
    with pytest.raises(DataError, match="unknown source"):
        source_tasks("woz")


def test_normalise_split() -> None:
    assert [normalise_split(s) for s in ("train", "dev", "val", "Validation", "test")] == [
        "train", "validation", "validation", "validation", "test"
    ]  # fmt: skip
    with pytest.raises(DataError, match="unknown split 'eval'"):
        normalise_split("eval")


def test_load_jsonl_ignores_split(samples_dir: Path) -> None:
    dias = load_source("jsonl", samples_dir / "dialogues.jsonl", "test", max_dialogues=3)
    assert len(dias) == 3
    with pytest.raises(DataError, match="file not found"):
        load_source("jsonl", samples_dir / "missing.jsonl")


def test_domains_only_for_multidogo(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="multidogo only"):
        load_source("meld", tmp_path, "test", domains=["airline"])
    with pytest.raises(DataError, match="max_dialogues"):
        load_source("meld", tmp_path, "test", max_dialogues=-1)


def test_default_data_root_env_and_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNWISE_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.setenv("TURNWISE_DATA_ROOT", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="TURNWISE_DATA_ROOT"):
        default_data_root()
    monkeypatch.delenv("TURNWISE_DATA_ROOT")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "main" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "main" / "sub")
    assert default_data_root() == (tmp_path / "shared" / "data").resolve()


def test_load_report_summary() -> None:
    report = LoadReport()
    assert report.summary() == "no defects found" and not report
    for i in range(5):
        report.add("multi_intent", f"f.tsv:{i}")
    report.add("empty_utterance")
    assert report.counts == {"multi_intent": 5, "empty_utterance": 1}
    assert report.total == 6
    text = report.summary()
    assert "multi_intent: 5" in text and "f.tsv:0" in text and "f.tsv:4" not in text and "..." in text


def test_every_source_has_a_schema_of_valid_tasks() -> None:
    for source in SOURCES[:-1]:
        schema = source_tasks(source)
        assert isinstance(schema, TaskSchema) and schema.names()
        for task in schema.tasks.values():
            assert len(set(task.labels)) == len(task.labels)
