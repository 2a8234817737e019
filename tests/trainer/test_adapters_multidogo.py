"""MultiDoGO: real-data counts against the corpus README (skipped without the data) and small
synthetic TSV files in the original format (mapping and error handling)."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import check_against_schema, corpus, label_counts

from trainer.data import LoadReport, load_source, source_tasks
from trainer.data import multidogo as multidogo_mod
from turnwise.errors import DataError

# --------------------------------------------------------------------------- real data: MultiDoGO


def test_multidogo_airline_test_matches_readme(data_root: Path) -> None:
    root = corpus(data_root, "multidogo")
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
    check_against_schema(dias, source_tasks("multidogo"))


def test_multidogo_finance_float_turn_numbers(data_root: Path) -> None:
    root = corpus(data_root, "multidogo")
    report = LoadReport()
    dias = load_source("multidogo", root, "validation", domains=["finance"], report=report)
    assert len(dias) == 240 and sum(len(d.turns) for d in dias) == 2167
    assert report.get("float_turn_number") == 2167  # beyond the README: finance writes "3.0"
    assert all(isinstance(n, int) for d in dias for n in d.meta["turn_numbers"])


@pytest.mark.slow
def test_multidogo_all_domains_match_readme(data_root: Path) -> None:
    root = corpus(data_root, "multidogo")
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
        intents |= set(label_counts(dias, "intent"))
    assert mismatches == 576
    assert intents <= set(multidogo_mod.INTENT_LABELS)


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
