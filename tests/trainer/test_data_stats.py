"""Corpus statistics and the `turnwise data stats|convert` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from trainer.data import cmd_convert, cmd_stats, dataset_stats, render_stats, source_tasks
from trainer.data.commands import tasks_path_for
from turnwise.dialogue import Dialogue, Turn, read_jsonl
from turnwise.errors import DataError
from turnwise.tasks import load_tasks, parse_tasks

SCHEMA = parse_tasks(
    {
        "tasks": {
            "act": {"type": "multiclass", "labels": ["inform", "question"]},
            "slots": {"type": "multilabel", "labels": ["date", "city"]},
        }
    }
)


def _dialogues() -> list[Dialogue]:
    return [
        Dialogue(
            dialogue_id="a",
            turns=[
                Turn(
                    speaker="user",
                    text="to paris on monday",
                    labels={"act": "inform", "slots": ["city", "date"]},
                ),
                Turn(speaker="system", text="ok", labels={"act": "inform", "slots": []}),
                Turn(speaker="user", text="when?", labels={"act": "question"}),
            ],
        ),
        Dialogue(
            dialogue_id="b",
            turns=[
                Turn(speaker="user", text="hm", labels={"act": "greet", "mood": "calm"}),
                Turn(speaker="system", text="hi"),
            ],
        ),
    ]


def _console() -> Console:
    return Console(record=True, width=140, force_terminal=False, color_system=None)


def test_dataset_stats_with_schema() -> None:
    stats = dataset_stats(_dialogues(), SCHEMA)
    assert stats["dialogues"] == 2 and stats["turns"] == 5 and stats["max_turns"] == 3
    assert stats["speakers"] == {"user": 3, "system": 2}
    act = stats["tasks"]["act"]
    assert act["type"] == "multiclass"
    assert act["labelled_turns"] == 4
    assert act["labels"] == {"inform": 2, "question": 1}
    assert act["unknown"] == {"greet": 1}
    slots = stats["tasks"]["slots"]
    assert slots["labelled_turns"] == 2
    assert slots["labels"] == {"date": 1, "city": 1, "(none)": 1}
    assert stats["unlisted_tasks"] == {"mood": 1}


def test_dataset_stats_without_schema_infers_tasks() -> None:
    stats = dataset_stats(_dialogues())
    assert stats["tasks"]["act"]["type"] == "multiclass"
    assert stats["tasks"]["act"]["labels"] == {"inform": 2, "question": 1, "greet": 1}
    assert stats["tasks"]["slots"]["type"] == "multilabel"
    assert stats["tasks"]["slots"]["labels"]["(none)"] == 1
    assert stats["tasks"]["mood"]["labels"] == {"calm": 1}
    assert stats["unlisted_tasks"] == {}


def test_dataset_stats_empty() -> None:
    stats = dataset_stats([], SCHEMA)
    assert stats["dialogues"] == stats["turns"] == 0
    assert stats["tasks"]["act"]["labels"] == {"inform": 0, "question": 0}
    render_stats(stats)  # no division by zero


def test_render_stats_table() -> None:
    table = render_stats(dataset_stats(_dialogues(), SCHEMA), title="demo validation")
    assert isinstance(table, Table)
    console = _console()
    console.print(table)
    text = console.export_text()
    assert "demo validation" in text and "2 dialogues" in text and "5 turns" in text
    assert (
        "inform" in text
        and "(none)" in text
        and "greet (not in schema)" in text
        and "mood (not in schema)" in text
    )
    many = parse_tasks({"tasks": {"slots": {"type": "multilabel", "labels": [f"s{i}" for i in range(50)]}}})
    console = _console()
    console.print(render_stats(dataset_stats(_dialogues(), many), max_labels=10))
    text = console.export_text()
    assert "(50 labels with no turns)" in text and "more labels" not in text  # only "(none)" was used
    console = _console()
    console.print(render_stats(dataset_stats(_dialogues(), SCHEMA), max_labels=1))
    text = console.export_text()
    assert "... 1 more labels" in text and "... 2 more labels" in text and "no turns" not in text


def _tiny_dailydialog(root: Path) -> Path:
    for split, n in (("train", 3), ("validation", 1), ("test", 2)):
        d = root / split
        d.mkdir(parents=True)
        (d / f"dialogues_{split}.txt").write_text("Hi . __eou__ Hello ? __eou__\n" * n, encoding="utf-8")
        (d / f"dialogues_act_{split}.txt").write_text("1 2 \n" * n, encoding="utf-8")
        (d / f"dialogues_emotion_{split}.txt").write_text("0 4 \n" * n, encoding="utf-8")
    return root


def test_cmd_stats_prints_every_split(tmp_path: Path) -> None:
    root = _tiny_dailydialog(tmp_path / "dd")
    console = _console()
    result = cmd_stats("dailydialog", root, None, console=console)
    assert list(result) == ["train", "validation", "test"]
    assert result["train"]["dialogues"] == 3
    assert result["test"]["tasks"]["emotion"]["labels"]["happiness"] == 2
    text = console.export_text()
    assert "dailydialog train" in text and "dailydialog test" in text and "no defects found" in text
    only = cmd_stats("dailydialog", root, "dev", console=_console())
    assert list(only) == ["validation"]


def test_cmd_stats_jsonl_without_and_with_tasks(samples_dir: Path) -> None:
    console = _console()
    result = cmd_stats("jsonl", samples_dir / "dialogues.jsonl", console=console)
    assert list(result) == ["all"]
    assert {"intent", "act", "sentiment"} <= set(result["all"]["tasks"])
    with_tasks = cmd_stats(
        "jsonl", samples_dir / "dialogues.jsonl", tasks=samples_dir / "tasks.yaml", console=_console()
    )
    assert with_tasks["all"]["tasks"]["intent"]["unknown"] == {}


def test_cmd_convert_writes_jsonl_and_schema(tmp_path: Path) -> None:
    root = _tiny_dailydialog(tmp_path / "dd")
    out = tmp_path / "out" / "dd-train.jsonl"
    console = _console()
    result = cmd_convert("dailydialog", root, "train", out, 2, console=console)
    assert result["dialogues"] == 2 and result["turns"] == 4
    assert result["tasks"] == tmp_path / "out" / "dd-train.tasks.yaml"
    back = read_jsonl(out)
    assert [d.dialogue_id for d in back] == ["dailydialog-train-00001", "dailydialog-train-00002"]
    assert back[0].turns[1].labels == {"act": "question", "emotion": "happiness"}
    assert load_tasks(result["tasks"]) == source_tasks("dailydialog")
    text = console.export_text()
    assert "wrote 2 dialogues (4 turns)" in text and "no defects found" in text


def test_cmd_convert_jsonl_needs_tasks(tmp_path: Path, samples_dir: Path) -> None:
    with pytest.raises(DataError, match="--tasks"):
        cmd_convert("jsonl", samples_dir / "dialogues.jsonl", None, tmp_path / "x.jsonl", console=_console())
    result = cmd_convert(
        "jsonl", samples_dir / "dialogues.jsonl", None, tmp_path / "x.jsonl", 5,
        tasks=samples_dir / "tasks.yaml", console=_console(),
    )  # fmt: skip
    assert result["dialogues"] == 5
    assert load_tasks(tmp_path / "x.tasks.yaml") == load_tasks(samples_dir / "tasks.yaml")


def test_cmd_convert_rejects_labels_outside_the_schema(tmp_path: Path, samples_dir: Path) -> None:
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  act: {type: multiclass, labels: [inform, question]}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dialogue 'call-0001' turn 0 task 'intent': unknown task"):
        cmd_convert(
            "jsonl",
            samples_dir / "dialogues.jsonl",
            None,
            tmp_path / "x.jsonl",
            tasks=tasks,
            console=_console(),
        )
    assert not (tmp_path / "x.jsonl").exists()


def test_tasks_path_for() -> None:
    assert tasks_path_for("a/b.jsonl") == Path("a/b.tasks.yaml")
    assert tasks_path_for("a/b") == Path("a/b.tasks.yaml")
    assert tasks_path_for("a/b.json") == Path("a/b.json.tasks.yaml")


def test_stats_on_real_meld_match_readme(data_root: Path) -> None:
    path = data_root / "meld"
    if not path.is_dir():
        pytest.skip("meld not present")
    result = cmd_stats("meld", path, console=_console())
    assert {s: (r["dialogues"], r["turns"]) for s, r in result.items()} == {
        "train": (1038, 9989), "validation": (114, 1109), "test": (280, 2610)
    }  # fmt: skip
    assert result["validation"]["tasks"]["sentiment"]["labels"] == {
        "negative": 406,
        "neutral": 470,
        "positive": 233,
    }


def test_stats_on_real_dailydialog_validation(data_root: Path) -> None:
    path = data_root / "dailydialog"
    if not path.is_dir():
        pytest.skip("dailydialog not present")
    result = cmd_stats("dailydialog", path, "validation", console=_console())
    emotion = result["validation"]["tasks"]["emotion"]
    assert emotion["labelled_turns"] == 8069
    assert emotion["labels"] == {
        "no_emotion": 7108, "anger": 77, "disgust": 3, "fear": 11,
        "happiness": 684, "sadness": 79, "surprise": 107,
    }  # fmt: skip
