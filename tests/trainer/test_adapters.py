"""Corpus adapters: real-data counts against the corpora READMEs (skipped without the data) and
small synthetic corpora written in each original format (mapping and error handling)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from trainer.data import (
    SOURCES,
    LoadReport,
    default_data_root,
    load_source,
    normalise_split,
    source_splits,
    source_tasks,
)
from trainer.data import multidogo as multidogo_mod
from trainer.data import multiwoz as multiwoz_mod
from trainer.data import sgd as sgd_mod
from trainer.data.meld import fix_mojibake
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema


def _corpus(data_root: Path, name: str) -> Path:
    path = data_root / name
    if not path.is_dir():
        pytest.skip(f"{name} not present under {data_root}")
    return path


def _label_counts(dialogues: list[Dialogue], task: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for d in dialogues:
        for t in d.turns:
            if task in t.labels:
                value = t.labels[task]
                c.update(value if isinstance(value, list) else [value])
    return c


def _labelled(dialogues: list[Dialogue], task: str) -> int:
    return sum(len(d.labelled(task)) for d in dialogues)


def _check_against_schema(dialogues: list[Dialogue], schema: TaskSchema) -> None:
    for d in dialogues:
        for t in d.turns:
            for task, value in t.labels.items():
                schema[task].encode(value)  # raises DataError on an unknown label


# --------------------------------------------------------------------------- real data: DailyDialog


def test_dailydialog_validation_matches_readme(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("dailydialog", _corpus(data_root, "dailydialog"), "validation", report=report)
    assert len(dias) == 1000
    assert sum(len(d.turns) for d in dias) == 8069
    assert _labelled(dias, "act") == _labelled(dias, "emotion") == 8069
    assert _label_counts(dias, "act") == {
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
    _check_against_schema(dias, source_tasks("dailydialog"))


def test_dailydialog_test_act_and_emotion_distribution(data_root: Path) -> None:
    dias = load_source("dailydialog", _corpus(data_root, "dailydialog"), "test")
    assert len(dias) == 1000
    assert _labelled(dias, "act") == 7740
    assert _label_counts(dias, "act") == {
        "inform": 3534,
        "question": 2210,
        "directive": 1278,
        "commissive": 718,
    }
    emotions = _label_counts(dias, "emotion")
    assert emotions["no_emotion"] == 6321
    assert emotions["happiness"] == 1019


def test_dailydialog_train_defect_counted_once(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("dailydialog", _corpus(data_root, "dailydialog"), "train", report=report)
    assert len(dias) == 11_118
    assert report.counts == {"label_count_mismatch": 1}
    assert "dialogues_train.txt:7852" in report.summary()
    # the repair merges the one turn the release splits in two: every label stays aligned
    assert _labelled(dias, "act") == sum(len(d.turns) for d in dias) == 87_170
    assert _label_counts(dias, "act")["commissive"] == 8081
    bike = dias[7851]
    assert bike.meta["line"] == 7852
    assert len(bike.turns) == 11
    assert (
        bike.turns[4].text.startswith("I left it at my parent's house")
        and "Jim's old bike" in bike.turns[4].text
    )
    assert bike.turns[5].text == "Let's go then ." and bike.turns[5].labels["act"] == "commissive"


# --------------------------------------------------------------------------- real data: MELD


def test_meld_test_matches_readme(data_root: Path) -> None:
    dias = load_source("meld", _corpus(data_root, "meld"), "test")
    assert len(dias) == 280
    assert sum(len(d.turns) for d in dias) == 2610
    assert _label_counts(dias, "sentiment") == {"neutral": 1256, "negative": 833, "positive": 521}
    assert _label_counts(dias, "emotion") == {
        "neutral": 1256, "joy": 402, "surprise": 281, "anger": 345, "sadness": 208, "disgust": 68, "fear": 50
    }  # fmt: skip
    assert len({t.speaker for d in dias for t in d.turns}) == 100
    assert [d.dialogue_id for d in dias[:3]] == ["meld-test-0", "meld-test-1", "meld-test-2"]
    assert dias[0].turns[0].speaker == "Mark"
    assert dias[0].turns[0].text == "Why do all you’re coffee mugs have numbers on the bottom?"
    _check_against_schema(dias, source_tasks("meld"))


def test_meld_dev_is_validation_and_train_defects(data_root: Path) -> None:
    root = _corpus(data_root, "meld")
    dev = load_source("meld", root, "dev")
    assert len(dev) == 114 and sum(len(d.turns) for d in dev) == 1109
    assert dev[0].dialogue_id == "meld-validation-0" and dev[0].meta["split"] == "validation"
    report = LoadReport()
    train = load_source("meld", root, "train", report=report)
    assert len(train) == 1038 and sum(len(d.turns) for d in train) == 9989
    # beyond the README: Dialogue_ID 60 is absent and 72 dialogues skip Utterance_IDs
    assert report.counts == {"missing_dialogue_id": 1, "utterance_id_gap": 72}


# --------------------------------------------------------------------------- real data: MultiWOZ


def test_multiwoz_test_matches_readme(data_root: Path) -> None:
    report = LoadReport()
    dias = load_source("multiwoz", _corpus(data_root, "multiwoz"), "test", report=report)
    assert len(dias) == 1000
    assert sum(len(d.turns) for d in dias) == 14_744
    assert _labelled(dias, "user_act") == _labelled(dias, "slots") == 7372
    assert sum(1 for d in dias for t in d.turns if t.labels.get("user_act") == []) == 574
    acts = _label_counts(dias, "user_act")
    assert acts["Train-Inform"] == 1429 and acts["general-thank"] == 1055 and acts["Police-Inform"] == 4
    assert all(t.labels == {} for d in dias for t in d.turns if t.speaker == "system")
    assert not report
    _check_against_schema(dias, source_tasks("multiwoz"))


def test_multiwoz_first_dialogue_mapping(data_root: Path) -> None:
    (d,) = load_source("multiwoz", _corpus(data_root, "multiwoz"), "test", max_dialogues=1)
    assert d.dialogue_id == "SNG0073"
    assert [t.speaker for t in d.turns[:2]] == ["user", "system"]
    assert d.turns[0].labels == {"user_act": ["Taxi-Inform"], "slots": ["taxi-destination", "taxi-departure"]}
    assert d.turns[2].labels == {"user_act": ["Taxi-Inform"], "slots": ["taxi-leaveAt"]}


@pytest.mark.slow
def test_multiwoz_validation_matches_readme(data_root: Path) -> None:
    dias = load_source("multiwoz", _corpus(data_root, "multiwoz"), "validation")
    assert len(dias) == 999
    assert sum(len(d.turns) for d in dias) == 14_730
    assert sum(1 for d in dias for t in d.turns if t.labels.get("user_act") == []) == 612
    assert _label_counts(dias, "user_act")["Hospital-Inform"] == 1


# --------------------------------------------------------------------------- real data: SGD


def test_sgd_train_matches_readme(data_root: Path) -> None:
    dias = load_source("sgd", _corpus(data_root, "sgd"), "train")
    assert len(dias) == 485
    assert sum(len(d.turns) for d in dias) == 7620
    assert _labelled(dias, "active_intent") == 3810
    acts = _label_counts(dias, "user_act")
    # acts that occur at most once per turn: turn counts equal the README's action counts
    assert {a: acts[a] for a in ("INFORM_INTENT", "SELECT", "THANK_YOU", "GOODBYE", "AFFIRM_INTENT")} == {
        "INFORM_INTENT": 778, "SELECT": 446, "THANK_YOU": 612, "GOODBYE": 233, "AFFIRM_INTENT": 98
    }  # fmt: skip
    assert len({lab for lab in _label_counts(dias, "active_intent")}) == 20
    assert dias[0].dialogue_id == "sgd-train-15_00000"
    _check_against_schema(dias, source_tasks("sgd"))


def test_sgd_label_lists_are_the_schema_union(data_root: Path) -> None:
    root = _corpus(data_root, "sgd")
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
    dias = load_source("sgd", _corpus(data_root, "sgd"), "test", report=report)
    assert len(dias) == 2921
    assert sum(len(d.turns) for d in dias) == 49_726
    assert _labelled(dias, "user_act") == 24_863
    assert _label_counts(dias, "user_act")["INFORM_INTENT"] == 6470
    assert report.counts == {"empty_utterance": 2}  # two system turns with "" text (not in the README)


# --------------------------------------------------------------------------- real data: MultiDoGO


def test_multidogo_airline_test_matches_readme(data_root: Path) -> None:
    root = _corpus(data_root, "multidogo")
    report = LoadReport()
    dias = load_source("multidogo", root, "test", domains=["airline"], report=report)
    assert len(dias) == 482
    assert sum(len(d.turns) for d in dias) == 3931
    assert report.get("multi_intent") == 1
    assert report.get("slot_label_count_mismatch") == 8
    assert {d.meta["domain"] for d in dias} == {"airline"}
    assert all(t.speaker == "customer" and "intent" in t.labels for d in dias for t in d.turns)
    first = dias[0]
    assert first.dialogue_id == "c16254a0-f0c3-4c50-b8cd-17936cba59aa"
    assert first.turns[0].text == "hello robin" and first.turns[0].labels == {
        "intent": "openinggreeting",
        "slots": [],
    }
    # a domain folder as path gives the same dialogues
    same = load_source("multidogo", root / "turn_level" / "airline", "test")
    assert [d.dialogue_id for d in same] == [d.dialogue_id for d in dias]
    _check_against_schema(dias, source_tasks("multidogo"))


def test_multidogo_finance_float_turn_numbers(data_root: Path) -> None:
    root = _corpus(data_root, "multidogo")
    report = LoadReport()
    dias = load_source("multidogo", root, "validation", domains=["finance"], report=report)
    assert len(dias) == 240 and sum(len(d.turns) for d in dias) == 2167
    assert report.get("float_turn_number") == 2167  # beyond the README: finance writes "3.0"
    assert all(isinstance(n, int) for d in dias for n in d.meta["turn_numbers"])


@pytest.mark.slow
def test_multidogo_all_domains_match_readme(data_root: Path) -> None:
    root = _corpus(data_root, "multidogo")
    totals = {"train": (9900, 81_676, 207), "validation": (1413, 11_585, 25), "test": (2834, 23_336, 49)}
    mismatches = 0
    intents: set[str] = set()
    for split, (n_conv, n_turns, n_multi) in totals.items():
        report = LoadReport()
        dias = load_source("multidogo", root, split, report=report)
        assert (len(dias), sum(len(d.turns) for d in dias), report.get("multi_intent")) == (
            n_conv,
            n_turns,
            n_multi,
        )
        assert report.get("unknown_label") == 0
        mismatches += report.get("slot_label_count_mismatch")
        intents |= set(_label_counts(dias, "intent"))
    assert mismatches == 576
    assert intents <= set(multidogo_mod.INTENT_LABELS)


# --------------------------------------------------------------------------- registry


def test_source_tasks_and_unknown_source() -> None:
    assert SOURCES == ("dailydialog", "meld", "multiwoz", "sgd", "multidogo", "jsonl")
    assert source_tasks("dailydialog").names() == ["act", "emotion"]
    assert source_tasks("meld").names() == ["sentiment", "emotion"]
    assert source_tasks("multiwoz").names() == ["user_act", "slots"]
    assert source_tasks("sgd").names() == ["active_intent", "user_act", "slots"]
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
    assert d.turns[0].labels == {"user_act": ["Hotel-Inform"], "slots": ["hotel-area"]}
    # "none" counts as empty, "dontcare" as a value
    assert d.turns[2].labels == {"user_act": ["Hotel-Inform", "general-thank"], "slots": ["hotel-pricerange"]}
    assert d.turns[4].labels == {"user_act": ["Hotel-Inform"], "slots": ["hotel-area"]}
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
    root = _corpus(data_root, "multiwoz")
    with zipfile.ZipFile(root / "test.json.zip") as zf:
        data = json.loads(zf.read("test.json"))
    names = {
        name
        for dia in data.values()
        for turn in dia["log"][1::2]
        for name in multiwoz_mod.flatten_state(turn["metadata"])
    }
    assert names == set(multiwoz_mod.SLOT_LABELS)


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
    }
    assert d.turns[1].labels == {}
    assert d.turns[2].labels == {"active_intent": "NONE", "user_act": ["INFORM", "GOODBYE"], "slots": []}
    _check_against_schema([d], source_tasks("sgd"))


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


# --------------------------------------------------------------------------- synthetic: MultiDoGO

_MDG_HEADER = "conversationId\tturnNumber\tutteranceId\tutterance\tslot-labels\tintent\n"


def _mdg_row(conv: str, turn: str, text: str, slots: str, intent: str) -> str:
    if "\n" in text or "\t" in text:
        text = f'"{text}"'
    return f"{conv}\t{turn}\t<CONV>{conv}<TURN>{turn}\t{text}\t{slots}\t{intent}\n"


def _write_multidogo(root: Path, domain: str, split_file: str, rows: list[str]) -> Path:
    d = root / "turn_level" / domain
    d.mkdir(parents=True, exist_ok=True)
    (d / split_file).write_text(_MDG_HEADER + "".join(rows), encoding="utf-8")
    return root


def test_multidogo_synthetic_mapping(tmp_path: Path) -> None:
    root = tmp_path / "mdg"
    _write_multidogo(
        root,
        "airline",
        "dev.tsv",
        [
            _mdg_row("c1", "4", "from boston \n to nyc", "O departure_city O O arrival_city", "contentonly"),
            _mdg_row("c1", "0", "hello", "O", "openinggreeting<div>bookflight"),
            _mdg_row(
                "c2", "2.0", "seat 12a please", "O new_seat_number new_seat_number", "changeseatassignment"
            ),
        ],
    )
    _write_multidogo(root, "media", "dev.tsv", [_mdg_row("m1", "1", "", "O", "outofdomain")])
    report = LoadReport()
    dias = load_source("multidogo", root, "dev", report=report)
    assert [d.dialogue_id for d in dias] == ["c1", "c2", "m1"]
    c1 = dias[0]
    assert c1.meta == {
        "source": "multidogo",
        "split": "validation",
        "domain": "airline",
        "turn_numbers": [0, 4],
    }
    assert [(t.speaker, t.text, t.labels) for t in c1.turns] == [
        ("customer", "hello", {"intent": "openinggreeting", "slots": []}),
        (
            "customer",
            "from boston to nyc",
            {"intent": "contentonly", "slots": ["arrival_city", "departure_city"]},
        ),
    ]
    assert dias[1].meta["turn_numbers"] == [2]
    assert report.counts == {
        "multi_intent": 1,
        "slot_label_count_mismatch": 2,  # the newline row (5 labels, 4 tokens) and the empty row
        "float_turn_number": 1,
        "empty_utterance": 1,
    }
    assert [d.dialogue_id for d in load_source("multidogo", root, "dev", domains=["media"])] == ["m1"]
    assert [d.dialogue_id for d in load_source("multidogo", root / "turn_level" / "airline", "dev")] == [
        "c1",
        "c2",
    ]
    assert len(load_source("multidogo", root, "dev", max_dialogues=1)) == 1
    with pytest.raises(DataError, match=r"unknown domain\(s\) \['banking'\]"):
        load_source("multidogo", root, "dev", domains=["banking"])


def test_multidogo_malformed_files_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "mdg"
    d = root / "turn_level" / "airline"
    d.mkdir(parents=True)
    (d / "test.tsv").write_text("conv\tturn\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"airline/test\.tsv:1: expected header"):
        load_source("multidogo", root, "test")
    (d / "train.tsv").write_text(_MDG_HEADER + "c1\t0\tx\thi\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"airline/train\.tsv:2: expected 6 tab-separated fields, got 4"):
        load_source("multidogo", root, "train")
    (d / "dev.tsv").write_text(_MDG_HEADER + _mdg_row("c1", "1.5", "hi", "O", "thankyou"), encoding="utf-8")
    with pytest.raises(DataError, match=r"airline/dev\.tsv:2: column 'turnNumber'"):
        load_source("multidogo", root, "dev")
    with pytest.raises(DataError, match="no MultiDoGO domain folders"):
        load_source("multidogo", tmp_path, "dev")


def test_every_source_has_a_schema_of_valid_tasks() -> None:
    for source in SOURCES[:-1]:
        schema = source_tasks(source)
        assert isinstance(schema, TaskSchema) and schema.names()
        for task in schema.tasks.values():
            assert len(set(task.labels)) == len(task.labels)
