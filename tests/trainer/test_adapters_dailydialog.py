"""DailyDialog: real-data counts against the corpus README (skipped without the data) and a small
synthetic corpus in the original format (mapping and error handling)."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import check_against_schema, corpus, label_counts, labelled

from trainer.data import LoadReport, load_source, source_splits, source_tasks
from turnwise.errors import DataError

# --------------------------------------------------------------------------- real data: DailyDialog


def test_dailydialog_validation_matches_readme(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("dailydialog", corpus(data_root, "dailydialog"), "validation", report=report)
    assert len(dias) == 1000
    assert sum(len(d.turns) for d in dias) == 8069
    assert labelled(dias, "act") == labelled(dias, "emotion") == 8069
    assert label_counts(dias, "act") == {
        "inform": 3125,
        "question": 2244,
        "directive": 1775,
        "commissive": 925,
    }
    assert not report
    first = dias[0]
    assert first.dialogue_id == "dailydialog-validation-00001"
    assert first.meta == {"source": "dailydialog", "split": "validation", "line": 1}
    assert first.turns[0].text == "Good morning , sir . Is there a bank near here ?"
    assert [t.speaker for t in first.turns[:3]] == ["user", "system", "user"]
    assert [t.labels["act"] for t in first.turns] == [
        "question", "inform", "directive", "question", "inform", "question", "inform"
    ]  # fmt: skip
    assert all("__eou__" not in t.text for d in dias for t in d.turns)
    check_against_schema(dias, source_tasks("dailydialog"))


def test_dailydialog_test_act_and_emotion_distribution(data_root: Path) -> None:
    dias = load_source("dailydialog", corpus(data_root, "dailydialog"), "test")
    assert len(dias) == 1000
    assert labelled(dias, "act") == 7740
    assert label_counts(dias, "act") == {
        "inform": 3534,
        "question": 2210,
        "directive": 1278,
        "commissive": 718,
    }
    emotions = label_counts(dias, "emotion")
    assert emotions["no_emotion"] == 6321
    assert emotions["happiness"] == 1019


def test_dailydialog_train_defect_counted_once(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("dailydialog", corpus(data_root, "dailydialog"), "train", report=report)
    assert len(dias) == 11_118
    assert report.counts == {"label_count_mismatch": 1}
    assert "dialogues_train.txt:7852" in report.summary()
    # the repair merges the one turn the release splits in two: every label stays aligned
    assert labelled(dias, "act") == sum(len(d.turns) for d in dias) == 87_170
    assert label_counts(dias, "act")["commissive"] == 8081
    bike = dias[7851]
    assert bike.meta["line"] == 7852
    assert len(bike.turns) == 11
    assert (
        bike.turns[4].text.startswith("I left it at my parent's house")
        and "Jim's old bike" in bike.turns[4].text
    )
    assert bike.turns[5].text == "Let's go then ." and bike.turns[5].labels["act"] == "commissive"


# --------------------------------------------------------------------------- synthetic: DailyDialog


def _write_dailydialog(root: Path, split: str, texts: list[str], acts: list[str], emos: list[str]) -> Path:
    d = root / split
    d.mkdir(parents=True)
    (d / f"dialogues_{split}.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    (d / f"dialogues_act_{split}.txt").write_text("".join(a + "\n" for a in acts), encoding="utf-8")
    (d / f"dialogues_emotion_{split}.txt").write_text("".join(e + "\n" for e in emos), encoding="utf-8")
    return root


def test_dailydialog_synthetic_mapping(tmp_path: Path) -> None:
    root = _write_dailydialog(
        tmp_path / "dd",
        "validation",
        [
            "Hi  there , how are you ? __eou__ Fine , thanks . __eou__ Let's go . __eou__",
            "One . __eou__ Two . __eou__",
        ],
        ["2 1 3 ", "1 4 1 "],  # second dialogue: 3 labels for 2 utterances
        ["0 4 0 ", "0 0 0 "],
    )
    report = LoadReport()
    a, b = load_source("dailydialog", root, "dev", report=report)
    assert a.dialogue_id == "dailydialog-validation-00001"
    assert [(t.speaker, t.text, t.labels) for t in a.turns] == [
        ("user", "Hi there , how are you ?", {"act": "question", "emotion": "no_emotion"}),
        ("system", "Fine , thanks .", {"act": "inform", "emotion": "happiness"}),
        ("user", "Let's go .", {"act": "directive", "emotion": "no_emotion"}),
    ]
    assert [t.labels for t in b.turns] == [{}, {}]  # alignment unknown: labels dropped, text kept
    assert report.counts == {"label_count_mismatch": 1}
    assert "labels dropped" in report.summary()
    assert source_splits("dailydialog", root) == ["validation"]
    assert len(load_source("dailydialog", root)) == 2  # split=None: every split present


def test_dailydialog_malformed_files_name_the_file(tmp_path: Path) -> None:
    root = _write_dailydialog(tmp_path / "dd", "test", ["A . __eou__ B . __eou__"], ["2 x "], ["0 0 "])
    with pytest.raises(DataError, match=r"dialogues_act_test\.txt:1: expected space-separated integers"):
        load_source("dailydialog", root, "test")
    root = _write_dailydialog(tmp_path / "dd2", "test", ["A . __eou__"], ["5 "], ["0 "])
    with pytest.raises(DataError, match=r"dialogues_act_test\.txt:1: .*out of range"):
        load_source("dailydialog", root, "test")
    root = _write_dailydialog(tmp_path / "dd3", "test", ["A . __eou__", "B . __eou__"], ["1 "], ["0 ", "0 "])
    with pytest.raises(DataError, match=r"dialogues_act_test\.txt: has 1 lines"):
        load_source("dailydialog", root, "test")
    with pytest.raises(DataError, match=r"dialogues_train\.txt: file not found"):
        load_source("dailydialog", root, "train")
    with pytest.raises(DataError, match="DailyDialog folder not found"):
        load_source("dailydialog", tmp_path / "absent", "test")
