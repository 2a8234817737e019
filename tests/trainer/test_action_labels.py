"""The clarify-or-answer ``action`` task: the MultiWOZ and SGD adapters derive it from the next system
turn's acts by the documented rule (hand-written fixtures in the original formats, and the real corpora,
skipped when absent); the prompt bank has its file."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

from adapter_helpers import corpus

from trainer.data import load_source, source_tasks
from trainer.data import multiwoz as multiwoz_mod
from trainer.data import sgd as sgd_mod
from trainer.teachers.prompts import PromptBank, render_turn
from turnwise.dialogue import Turn
from turnwise.window import WindowConfig

# The rule, written out independently of the adapters: precedence clarify > answer > other.
MW_CLARIFY = {"Request"}
MW_ANSWER = {"Inform", "Recommend", "Book", "OfferBook", "OfferBooked", "NoOffer", "NoBook", "Select"}
SGD_CLARIFY = {"REQUEST"}
SGD_ANSWER = {"INFORM", "INFORM_COUNT", "OFFER", "OFFER_INTENT", "CONFIRM", "NOTIFY_SUCCESS", "NOTIFY_FAILURE"}


def _rule(acts: set[str], clarify: set[str], answer: set[str]) -> str:
    return "clarify" if acts & clarify else "answer" if acts & answer else "other"


# --------------------------------------------------------------------------- fixtures: MultiWOZ


def _mw(text: str, acts: dict | None = None) -> dict:
    return {"text": text, "dialog_act": acts or {}, "span_info": [], "metadata": {}}


def test_multiwoz_fixture_follows_the_rule(tmp_path: Path) -> None:
    log = [
        _mw("I need a hotel.", {"Hotel-Inform": [["none", "none"]]}),
        _mw("Where? There are 30.", {"Hotel-Inform": [["Choice", "30"]], "Hotel-Request": [["Area", "?"]]}),
        _mw("North, please.", {"Hotel-Inform": [["Area", "north"]]}),
        _mw("The Acorn is nice.", {"Hotel-Recommend": [["Name", "acorn"]]}),
        _mw("Book it.", {}),
        _mw("Done, ref 123.", {"Booking-Book": [["Ref", "123"]], "general-reqmore": [["none", "none"]]}),
        _mw("Thanks!", {"general-thank": [["none", "none"]]}),
        _mw("Anything else?", {"general-reqmore": [["none", "none"]]}),
        _mw("No, bye.", {"general-bye": [["none", "none"]]}),
        _mw("Goodbye.", {"general-bye": [["none", "none"]]}),
        _mw("Hm.", {}),
        _mw("", {}),
    ]
    root = tmp_path / "multiwoz"
    root.mkdir()
    with zipfile.ZipFile(root / "test.json.zip", "w") as zf:
        zf.writestr("test.json", json.dumps({"MUL0001": {"goal": {}, "log": log}}))
    (d,) = load_source("multiwoz", root, "test")
    actions = [t.labels.get("action") for t in d.turns if t.speaker == "user"]
    # Request beats Inform; Recommend answers; Book beats reqmore; reqmore / bye / no act -> other
    assert actions == ["clarify", "answer", "answer", "other", "other", "other"]
    assert all("action" not in t.labels for t in d.turns if t.speaker == "system")
    assert multiwoz_mod.next_action({"Train-OfferBook": [], "Train-Request": []}) == "clarify"
    assert multiwoz_mod.next_action({"Restaurant-NoOffer": []}) == "answer"
    assert multiwoz_mod.next_action({"general-welcome": [], "general-greet": []}) == "other"


# --------------------------------------------------------------------------- fixtures: SGD


def _frame(*acts: str, user: bool = False) -> dict:
    f = {"service": "Restaurants_1", "slots": [],
         "actions": [{"act": a, "slot": "", "values": [], "canonical_values": []} for a in acts]}
    if user:
        f["state"] = {"active_intent": "NONE", "requested_slots": [], "slot_values": {}}
    return f


def test_sgd_fixture_follows_the_rule(tmp_path: Path) -> None:
    def user(text: str) -> dict:
        return {"speaker": "USER", "utterance": text, "frames": [_frame("INFORM", user=True)]}

    def system(*frames: dict) -> dict:
        return {"speaker": "SYSTEM", "utterance": "...", "frames": list(frames)}

    turns = [user("a table please"), system(_frame("OFFER", "REQUEST")),
             user("at 7"), system(_frame("CONFIRM")),
             user("yes"), system(_frame("NOTIFY_FAILURE", "REQ_MORE")),
             user("try again"), system(_frame("INFORM_COUNT"), _frame("OFFER")),
             user("thanks"), system(_frame("REQ_MORE")),
             user("bye"), system(_frame("GOODBYE")),
             user("one more")]
    root = tmp_path / "sgd"
    (root / "test").mkdir(parents=True)
    (root / "test" / "dialogues_001.json").write_text(json.dumps([{"dialogue_id": "1_0", "services": [],
                                                                   "turns": turns}]))
    (d,) = load_source("sgd", root, "test")
    actions = [t.labels.get("action") for t in d.turns if t.speaker == "user"]
    assert actions == ["clarify", "answer", "answer", "answer", "other", "other", None]
    assert sgd_mod.next_action([_frame("NOTIFY_SUCCESS"), _frame("REQUEST")]) == "clarify"


def test_schemas_and_prompt_bank() -> None:
    for source in ("multiwoz", "sgd"):
        task = source_tasks(source)["action"]
        assert task.type.value == "multiclass" and task.labels == ["clarify", "answer", "other"]
        tp = PromptBank.load(fallback=False).for_task("action", task)
        assert tp.path is not None and tp.path.endswith("action.yaml")
        assert {p.style for p in tp.prompts} == {"choice", "label_json", "lines_json"}
        turns = [Turn(speaker="user", text="I need a train."), Turn(speaker="system", text="Where to?")]
        msgs = render_turn(tp, tp.prompts[0], turns, 0, WindowConfig())
        assert "I need a train." in msgs[-1]["content"] and "A) clarify" in msgs[-1]["content"]


# --------------------------------------------------------------------------- real data


def test_multiwoz_test_labels_follow_the_rule(data_root: Path) -> None:
    root = corpus(data_root, "multiwoz")
    with zipfile.ZipFile(root / "test.json.zip") as zf:
        raw = json.loads(zf.read("test.json"))
    dialogues = load_source("multiwoz", root, "test")
    checked = Counter()
    for d in dialogues:
        log = raw[d.dialogue_id]["log"]
        for i, t in enumerate(d.turns):
            if t.speaker != "user":
                continue
            acts = {k.split("-", 1)[1] for k in log[i + 1]["dialog_act"]}
            assert t.labels["action"] == _rule(acts, MW_CLARIFY, MW_ANSWER), (d.dialogue_id, i)
            checked[t.labels["action"]] += 1
    assert sum(checked.values()) == 7372 and min(checked.values()) > 1000


def test_sgd_train_labels_follow_the_rule(data_root: Path) -> None:
    root = corpus(data_root, "sgd")
    raw = {f"sgd-train-{d['dialogue_id']}": d for p in sorted((root / "train").glob("dialogues_*.json"))
           for d in json.loads(p.read_text())}
    dialogues = load_source("sgd", root, "train")
    checked = Counter()
    for d in dialogues:
        turns = raw[d.dialogue_id]["turns"]
        for i, t in enumerate(d.turns):
            if t.speaker != "user":
                continue
            acts = {a["act"] for f in turns[i + 1]["frames"] for a in f["actions"]}
            assert t.labels["action"] == _rule(acts, SGD_CLARIFY, SGD_ANSWER), (d.dialogue_id, i)
            checked[t.labels["action"]] += 1
    assert sum(checked.values()) == 3810 and min(checked.values()) > 500
