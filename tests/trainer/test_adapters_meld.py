"""MELD: real-data counts against the corpus README (skipped without the data) and small synthetic
CSV files in the original format (mapping and error handling)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from adapter_helpers import check_against_schema, corpus, label_counts

from trainer.data import LoadReport, load_source, source_tasks
from trainer.data.meld import fix_mojibake
from turnwise.errors import DataError

# --------------------------------------------------------------------------- real data: MELD


def test_meld_test_matches_readme(data_root: Path) -> None:
    dias = load_source("meld", corpus(data_root, "meld"), "test")
    assert len(dias) == 280
    assert sum(len(d.turns) for d in dias) == 2610
    assert label_counts(dias, "sentiment") == {"neutral": 1256, "negative": 833, "positive": 521}
    assert label_counts(dias, "emotion") == {
        "neutral": 1256, "joy": 402, "surprise": 281, "anger": 345, "sadness": 208, "disgust": 68, "fear": 50
    }  # fmt: skip
    assert len({t.speaker for d in dias for t in d.turns}) == 100
    assert [d.dialogue_id for d in dias[:3]] == ["meld-test-0", "meld-test-1", "meld-test-2"]
    assert dias[0].turns[0].speaker == "Mark"
    assert dias[0].turns[0].text == "Why do all you’re coffee mugs have numbers on the bottom?"
    check_against_schema(dias, source_tasks("meld"))


def test_meld_dev_is_validation_and_train_defects(data_root: Path) -> None:
    root = corpus(data_root, "meld")
    dev = load_source("meld", root, "dev")
    assert len(dev) == 114 and sum(len(d.turns) for d in dev) == 1109
    assert dev[0].dialogue_id == "meld-validation-0" and dev[0].meta["split"] == "validation"
    report = LoadReport()
    train = load_source("meld", root, "train", report=report)
    assert len(train) == 1038 and sum(len(d.turns) for d in train) == 9989
    # beyond the README: Dialogue_ID 60 is absent and 72 dialogues skip Utterance_IDs
    assert report.counts == {"missing_dialogue_id": 1, "utterance_id_gap": 72}


# --------------------------------------------------------------------------- synthetic: MELD

_MELD_HEADER = [
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
]  # fmt: skip


def _write_meld(path: Path, rows: list[list[str]], header: list[str] = _MELD_HEADER) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")


def test_meld_synthetic_mapping(tmp_path: Path) -> None:
    root = tmp_path / "meld"
    _write_meld(
        root / "dev_sent_emo.csv",
        [
            [
                "3",
                "Second,  with a comma.",
                "Ross",
                "Joy",
                "positive",
                "1",
                "1",
                "2",
                "3",
                "0:00:01,000",
                "0:00:02,000",
            ],
            ["1", "Hi.", "Rachel", "neutral", "neutral", "0", "0", "1", "1", "00:00:01,000", "00:00:02,000"],
            ["2", "First.", "Monica", "anger", "negative", "1", "0", "2", "3", "0:00:00,000", "0:00:01,000"],
            [
                "4",
                "Itâ€™s broken.",
                "Joey",
                "sadness",
                "negative",
                "1",
                "3",
                "2",
                "3",
                "0:00:03,000",
                "0:00:04,000",
            ],
        ],
    )
    report = LoadReport()
    d0, d1 = load_source("meld", root, "validation", report=report)
    assert d0.dialogue_id == "meld-validation-0"
    assert d1.meta == {
        "source": "meld",
        "split": "validation",
        "dialogue_index": 1,
        "season": 2,
        "episode": 3,
    }
    assert [(t.speaker, t.text) for t in d1.turns] == [
        ("Monica", "First."), ("Ross", "Second, with a comma."), ("Joey", "It’s broken.")
    ]  # fmt: skip
    assert d1.turns[1].labels == {"sentiment": "positive", "emotion": "joy"}
    assert report.counts == {"mojibake_fixed": 1, "utterance_id_gap": 1}
    assert fix_mojibake("plain text") == "plain text"


def test_meld_malformed_rows_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "meld"
    _write_meld(
        root / "test_sent_emo.csv",
        [
            ["1", "Hi.", "Rachel", "neutral", "neutral", "0", "0", "1", "1", "a", "b"],
            ["2", "Yo.", "Ross", "bored", "neutral", "0", "1", "1", "1", "a", "b"],
        ],
    )
    with pytest.raises(DataError, match=r"test_sent_emo\.csv:3: column 'Emotion': unknown label 'bored'"):
        load_source("meld", root, "test")
    _write_meld(root / "train_sent_emo.csv", [["1", "Hi."]], header=["Sr No.", "Utterance"])
    with pytest.raises(DataError, match=r"train_sent_emo\.csv:1: missing column"):
        load_source("meld", root, "train")
    _write_meld(
        root / "dev_sent_emo.csv", [["1", "Hi.", "R", "joy", "positive", "x", "0", "1", "1", "a", "b"]]
    )
    with pytest.raises(DataError, match=r"dev_sent_emo\.csv:2: column 'Dialogue_ID'"):
        load_source("meld", root, "dev")
