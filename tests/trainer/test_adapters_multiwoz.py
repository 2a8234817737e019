"""MultiWOZ: real-data counts against the corpus README (skipped without the data) and small
synthetic archives in the original format (mapping and error handling)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from adapter_helpers import check_against_schema, corpus, label_counts, labelled

from trainer.data import LoadReport, load_source, source_splits, source_tasks
from trainer.data import multiwoz as multiwoz_mod
from turnwise.errors import DataError

# --------------------------------------------------------------------------- real data: MultiWOZ


def test_multiwoz_test_matches_readme(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("multiwoz", corpus(data_root, "multiwoz"), "test", report=report)
    assert len(dias) == 1000
    assert sum(len(d.turns) for d in dias) == 14_744
    assert labelled(dias, "user_act") == labelled(dias, "slots") == 7372
    assert sum(1 for d in dias for t in d.turns if t.labels.get("user_act") == []) == 574
    acts = label_counts(dias, "user_act")
    assert acts["Train-Inform"] == 1429 and acts["general-thank"] == 1055 and acts["Police-Inform"] == 4
    assert all(t.labels == {} for d in dias for t in d.turns if t.speaker == "system")
    assert not report
    check_against_schema(dias, source_tasks("multiwoz"))


def test_multiwoz_first_dialogue_mapping(data_root: Path) -> None:
    (d,) = load_source("multiwoz", corpus(data_root, "multiwoz"), "test", max_dialogues=1)
    assert d.dialogue_id == "SNG0073"
    assert [t.speaker for t in d.turns[:2]] == ["user", "system"]
    assert d.turns[0].labels == {"user_act": ["Taxi-Inform"], "slots": ["taxi-destination", "taxi-departure"],
                                 "action": "clarify"}
    assert d.turns[2].labels == {"user_act": ["Taxi-Inform"], "slots": ["taxi-leaveAt"], "action": "answer"}


@pytest.mark.slow
def test_multiwoz_validation_matches_readme(data_root: Path) -> None:
    dias = load_source("multiwoz", corpus(data_root, "multiwoz"), "validation")
    assert len(dias) == 999
    assert sum(len(d.turns) for d in dias) == 14_730
    assert sum(1 for d in dias for t in d.turns if t.labels.get("user_act") == []) == 612
    assert label_counts(dias, "user_act")["Hospital-Inform"] == 1


# --------------------------------------------------------------------------- synthetic: MultiWOZ


def _mw_turn(text: str, acts: dict | None = None, metadata: dict | None = None) -> dict:
    return {"text": text, "dialog_act": acts or {}, "span_info": [], "metadata": metadata or {}}


def _hotel_state(**semi: str) -> dict:
    base = {"name": "not mentioned", "area": "", "parking": "", "pricerange": "", "stars": "",
            "internet": "", "type": ""}  # fmt: skip
    return {"hotel": {"book": {"booked": [], "stay": "", "day": "", "people": ""}, "semi": {**base, **semi}}}


def _write_multiwoz(root: Path, name: str, data: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / f"{name}.json.zip", "w") as zf:
        zf.writestr(f"{name}.json", json.dumps(data))
    return root


def test_multiwoz_synthetic_mapping(tmp_path: Path) -> None:
    log = [
        _mw_turn("I need a hotel in the north .", {"Hotel-Inform": [["Area", "north"]]}),
        _mw_turn("Any price range ?", {"Hotel-Request": [["Price", "?"]]}, _hotel_state(area="north")),
        _mw_turn(
            "I do not care . Thanks !",
            {"Hotel-Inform": [["Price", "dontcare"]], "general-thank": [["none", "none"]]},
        ),
        _mw_turn("Okay .", {}, _hotel_state(area="north", pricerange="dontcare", type="none")),
        _mw_turn("Book it , and call me a spaceship .", {"Hotel-Inform": [], "Spaceship-Inform": []}),
        _mw_turn("Done .", {}, _hotel_state(area="south", pricerange="dontcare")),
    ]
    root = _write_multiwoz(tmp_path / "mw", "val", {"SNG9999": {"goal": {}, "log": log}})
    report = LoadReport()
    (d,) = load_source("multiwoz", root, "val", report=report)
    assert d.dialogue_id == "SNG9999" and d.meta == {"source": "multiwoz", "split": "validation"}
    assert [t.speaker for t in d.turns] == ["user", "system"] * 3
    assert d.turns[0].labels == {"user_act": ["Hotel-Inform"], "slots": ["hotel-area"], "action": "clarify"}
    # "none" counts as empty, "dontcare" as a value
    assert d.turns[2].labels == {"user_act": ["Hotel-Inform", "general-thank"], "slots": ["hotel-pricerange"],
                                 "action": "other"}
    assert d.turns[4].labels == {"user_act": ["Hotel-Inform"], "slots": ["hotel-area"], "action": "other"}
    assert d.turns[1].labels == {}
    assert report.counts == {"unknown_label": 1}
    assert source_splits("multiwoz", root) == ["validation"]


def test_multiwoz_bad_archives_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "mw"
    root.mkdir()
    (root / "test.json.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"test\.json\.zip: not a valid zip"):
        load_source("multiwoz", root, "test")
    with zipfile.ZipFile(root / "val.json.zip", "w") as zf:
        zf.writestr("val.json", "{broken")
    with pytest.raises(DataError, match=r"val\.json\.zip:val\.json: invalid JSON"):
        load_source("multiwoz", root, "validation")
    _write_multiwoz(tmp_path / "mw2", "test", {"X1": {"log": [{"dialog_act": {}}]}})
    with pytest.raises(DataError, match=r"test\.json: dialogue 'X1' turn 0"):
        load_source("multiwoz", tmp_path / "mw2", "test")
    with pytest.raises(DataError, match=r"no train\.json\.zip for split 'train'"):
        load_source("multiwoz", tmp_path / "mw2", "train")


def test_multiwoz_slot_labels_cover_the_corpus(data_root: Path) -> None:
    root = corpus(data_root, "multiwoz")
    with zipfile.ZipFile(root / "test.json.zip") as zf:
        data = json.loads(zf.read("test.json"))
    names = {
        name
        for dia in data.values()
        for turn in dia["log"][1::2]
        for name in multiwoz_mod.flatten_state(turn["metadata"])
    }
    assert names == set(multiwoz_mod.SLOT_LABELS)
