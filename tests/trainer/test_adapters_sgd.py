"""SGD (Schema-Guided Dialogue): real-data counts against the corpus README (skipped without the data)
and small synthetic files in the original format (mapping and error handling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_helpers import check_against_schema, corpus, label_counts, labelled

from trainer.data import LoadReport, load_source, source_tasks
from trainer.data import sgd as sgd_mod
from turnwise.errors import DataError

# --------------------------------------------------------------------------- real data: SGD


def test_sgd_train_matches_readme(data_root: Path) -> None:
    dias = load_source("sgd", corpus(data_root, "sgd"), "train")
    assert len(dias) == 485
    assert sum(len(d.turns) for d in dias) == 7620
    assert labelled(dias, "active_intent") == 3810
    acts = label_counts(dias, "user_act")
    # acts that occur at most once per turn: turn counts equal the README's action counts
    assert {a: acts[a] for a in ("INFORM_INTENT", "SELECT", "THANK_YOU", "GOODBYE", "AFFIRM_INTENT")} == {
        "INFORM_INTENT": 778, "SELECT": 446, "THANK_YOU": 612, "GOODBYE": 233, "AFFIRM_INTENT": 98
    }  # fmt: skip
    assert len({lab for lab in label_counts(dias, "active_intent")}) == 20
    assert dias[0].dialogue_id == "sgd-train-15_00000"
    check_against_schema(dias, source_tasks("sgd"))


def test_sgd_label_lists_are_the_schema_union(data_root: Path) -> None:
    root = corpus(data_root, "sgd")
    intents: set[str] = set()
    slots: set[str] = set()
    for split in ("train", "test"):
        for service in json.loads((root / split / "schema.json").read_text(encoding="utf-8")):
            intents |= {i["name"] for i in service["intents"]}
            slots |= {s["name"] for s in service["slots"]}
    assert [*sorted(intents), "NONE"] == sgd_mod.INTENT_LABELS
    assert sorted(slots) == sgd_mod.SLOT_LABELS


@pytest.mark.slow
def test_sgd_test_matches_readme(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("sgd", corpus(data_root, "sgd"), "test", report=report)
    assert len(dias) == 2921
    assert sum(len(d.turns) for d in dias) == 49_726
    assert labelled(dias, "user_act") == 24_863
    assert label_counts(dias, "user_act")["INFORM_INTENT"] == 6470
    assert report.counts == {"empty_utterance": 2}  # two system turns with "" text (not in the README)


# --------------------------------------------------------------------------- synthetic: SGD


def _sgd_frame(service: str, intent: str | None, actions: list[tuple[str, str, list[str]]],
               spans: tuple[str, ...] = ()) -> dict:  # fmt: skip
    frame = {
        "service": service,
        "actions": [{"act": a, "slot": s, "values": v, "canonical_values": v} for a, s, v in actions],
        "slots": [{"slot": s, "start": 0, "exclusive_end": 1} for s in spans],
    }
    if intent is not None:
        frame["state"] = {"active_intent": intent, "requested_slots": [], "slot_values": {}}
    return frame


def _write_sgd(root: Path, folder: str, dialogues: list[dict], name: str = "dialogues_001.json") -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / name).write_text(json.dumps(dialogues), encoding="utf-8")
    return root


def test_sgd_synthetic_mapping(tmp_path: Path) -> None:
    turns = [
        {"speaker": "USER", "utterance": "Book  a table for 2 at Nopa.",
         "frames": [_sgd_frame("Restaurants_1", "NONE", [("INFORM", "party_size", ["2"])]),
                    _sgd_frame("Restaurants_2", "ReserveRestaurant",
                               [("INFORM_INTENT", "intent", ["ReserveRestaurant"]), ("SELECT", "", [])],
                               spans=("restaurant_name",))]},
        {"speaker": "SYSTEM", "utterance": "What time?",
         "frames": [_sgd_frame("Restaurants_2", None, [("REQUEST", "time", [])])]},
        {"speaker": "USER", "utterance": "Any. Bye.",
         "frames": [_sgd_frame("Restaurants_2", "NONE", [("GOODBYE", "", []), ("INFORM", "time", [])])]},
    ]  # fmt: skip
    root = _write_sgd(
        tmp_path / "sgd", "dev", [{"dialogue_id": "1_00000", "services": ["Restaurants_2"], "turns": turns}]
    )
    (d,) = load_source("sgd", root, "validation")
    assert d.dialogue_id == "sgd-validation-1_00000"
    assert d.meta["file"] == "dialogues_001.json" and d.meta["services"] == ["Restaurants_2"]
    assert [t.speaker for t in d.turns] == ["user", "system", "user"]
    assert d.turns[0].text == "Book a table for 2 at Nopa."
    assert d.turns[0].labels == {
        "active_intent": "ReserveRestaurant",  # the first frame whose intent is not NONE
        "user_act": ["INFORM", "INFORM_INTENT", "SELECT"],
        "slots": ["party_size", "restaurant_name"],  # INFORM with a value + spans
        "action": "clarify",
    }
    assert d.turns[1].labels == {}
    assert d.turns[2].labels == {"active_intent": "NONE", "user_act": ["INFORM", "GOODBYE"], "slots": []}
    check_against_schema([d], source_tasks("sgd"))


def test_sgd_malformed_files_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "sgd"
    (root / "test").mkdir(parents=True)
    (root / "test" / "dialogues_001.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match=r"dialogues_001\.json: invalid JSON"):
        load_source("sgd", root, "test")
    bad_turn = {"speaker": "USER", "utterance": "hi", "frames": [_sgd_frame("S_1", None, [])]}
    _write_sgd(root, "train", [{"dialogue_id": "1_1", "turns": [bad_turn]}])
    with pytest.raises(
        DataError, match=r"dialogues_001\.json: dialogue 1_1 turn 0: user frame without a 'state'"
    ):
        load_source("sgd", root, "train")
    _write_sgd(
        root, "train", [{"dialogue_id": "1_1", "turns": [{"speaker": "BOT", "utterance": "", "frames": []}]}]
    )
    with pytest.raises(DataError, match=r"dialogues_001\.json: dialogue '1_1' turn 0"):
        load_source("sgd", root, "train")
    with pytest.raises(DataError, match=r"no dialogues_.*split 'validation'"):
        load_source("sgd", root, "validation")
