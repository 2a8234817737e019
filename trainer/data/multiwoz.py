"""MultiWOZ 2.1 as released by ConvLab-2: ``<root>/{train,val,test}.json.zip`` (one JSON file inside),
read in memory with :mod:`zipfile`; an unzipped ``<name>.json`` next to it works too.

Mapping (``log`` alternates user turns at even indices and system turns at odd ones):
- speakers ``user`` and ``system``; text with whitespace collapsed; dialogue id = the corpus id
  (``SNG0073``, ``PMUL4648``, ...; unique across splits); meta ``{"source", "split"}``.
- user turns get two multilabel tasks and ``action``, system turns get none (labels are sparse):
  - ``user_act``: the turn's ``<Domain>-<Intent>`` keys of ``dialog_act`` (an empty ``dialog_act`` -> ``[]``).
    Labels: {Attraction, Hospital, Hotel, Police, Restaurant, Taxi, Train} x {Inform, Request} plus
    general-{bye, greet, thank}: the 15 user domain-intents the README lists for val/test, completed with
    Hospital-Request and Police-Request so a train split fits the same head.
  - ``slots``: the belief-state slots this user turn set or changed, i.e. the slots whose value in the
    next system turn's ``metadata`` is non-empty and differs from the previous system turn's (empty
    before the first turn). ``""``, ``"not mentioned"`` and ``"none"`` count as empty; ``dontcare`` is a
    value. Names are ``<domain>-<slot>`` for ``semi`` slots and ``<domain>-book-<slot>`` for ``book``
    slots (``booked``, the list of bookings, is not a slot), from the README's slot list.
  - ``action`` (multiclass ``clarify`` / ``answer`` / ``other``): the agent's next move, read from the
    intents of the following system turn's ``dialog_act``: ``Request`` -> ``clarify``; ``Inform``,
    ``Recommend``, ``Book``, ``OfferBook``, ``OfferBooked``, ``NoOffer``, ``NoBook``, ``Select`` -> ``answer``;
    anything else (``general-reqmore``, ``-welcome``, ``-bye``, ``-greet``, or no act) -> ``other``.
    Precedence ``clarify`` > ``answer`` > ``other``: a system turn that informs and also asks is a
    clarification (the user must answer before the task goes on). A user turn without a following
    system turn gets no ``action`` label.
Domain-intents or slots outside these lists are counted as ``unknown_label`` and dropped.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from trainer.data.common import LoadReport, clean_text, normalise_split, require_dir, take
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

NAME = "multiwoz"
SPLITS = ("train", "validation", "test")
_FILE_SPLIT = {"train": "train", "validation": "val", "test": "test"}

USER_ACT_LABELS = [
    f"{domain}-{intent}"
    for domain in ("Attraction", "Hospital", "Hotel", "Police", "Restaurant", "Taxi", "Train")
    for intent in ("Inform", "Request")
] + ["general-bye", "general-greet", "general-thank"]

_SEMI_SLOTS = {
    "taxi": ("leaveAt", "destination", "departure", "arriveBy"),
    "restaurant": ("food", "pricerange", "name", "area"),
    "hotel": ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
    "attraction": ("type", "name", "area"),
    "train": ("leaveAt", "destination", "day", "arriveBy", "departure"),
    "bus": ("leaveAt", "destination", "day", "arriveBy", "departure"),
    "hospital": ("department",),
    "police": (),
}
_BOOK_SLOTS = {
    "restaurant": ("time", "day", "people"),
    "hotel": ("stay", "day", "people"),
    "train": ("people", "ticket"),
    "bus": ("people",),
}
SLOT_LABELS = [
    name
    for domain in _SEMI_SLOTS
    for name in (
        *(f"{domain}-{s}" for s in _SEMI_SLOTS[domain]),
        *(f"{domain}-book-{s}" for s in _BOOK_SLOTS.get(domain, ())),
    )
]
EMPTY_VALUES = frozenset({"", "not mentioned", "none"})

ACTION_LABELS = ["clarify", "answer", "other"]
CLARIFY_INTENTS = frozenset({"Request"})
ANSWER_INTENTS = frozenset({"Inform", "Recommend", "Book", "OfferBook", "OfferBooked", "NoOffer", "NoBook", "Select"})

TASKS = TaskSchema(
    tasks={
        "user_act": Task(
            type=TaskType.multilabel, labels=USER_ACT_LABELS, description="MultiWOZ user domain-intents"
        ),
        "slots": Task(
            type=TaskType.multilabel,
            labels=SLOT_LABELS,
            description="MultiWOZ belief-state slots set by this turn",
        ),
        "action": Task(
            type=TaskType.multiclass, labels=ACTION_LABELS,
            description="the agent's next move after this user turn: ask to clarify, answer, or other",
        ),
    }
)
_USER_ACT_SET = frozenset(USER_ACT_LABELS)
_SLOT_SET = frozenset(SLOT_LABELS)


def _data_file(root: Path, split: str) -> Path | None:
    name = _FILE_SPLIT[split]
    for cand in (root / f"{name}.json.zip", root / f"{name}.json"):
        if cand.is_file():
            return cand
    return None


def available_splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if _data_file(Path(root), s) is not None]


def _read_json(path: Path) -> tuple[Any, str]:
    """The parsed JSON and a display name for errors (``archive.zip:member.json``)."""
    if path.suffix != ".zip":
        try:
            return json.loads(path.read_bytes()), str(path)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON ({err.msg} at line {err.lineno})", path=str(path)) from None
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.endswith(".json") and not m.startswith("__MACOSX")]
            if len(members) != 1:
                raise DataError(f"expected one .json file in the archive, found {members}", path=str(path))
            where = f"{path}:{members[0]}"
            raw = zf.read(members[0])
    except zipfile.BadZipFile as err:
        raise DataError(f"not a valid zip archive ({err})", path=str(path)) from None
    try:
        return json.loads(raw), where
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"invalid JSON ({err})", path=where) from None


def flatten_state(metadata: dict[str, Any]) -> dict[str, str]:
    """System-turn ``metadata`` -> ``{"hotel-area": "north", "hotel-book-people": "2", ...}``."""
    state: dict[str, str] = {}
    for domain, parts in metadata.items():
        if not isinstance(parts, dict):
            continue
        for part, prefix in (("semi", f"{domain}-"), ("book", f"{domain}-book-")):
            for slot, value in (parts.get(part) or {}).items():
                if slot == "booked" or not isinstance(value, str):
                    continue
                state[prefix + slot] = value
    return state


def _filled(state: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in state.items() if v.strip().lower() not in EMPTY_VALUES}


def _in_order(found: set[str], labels: list[str]) -> list[str]:
    return [lab for lab in labels if lab in found]


def next_action(system_acts: Any) -> str:
    """``action`` of a user turn from the ``dialog_act`` keys (``<Domain>-<Intent>``) of the system turn after it."""
    intents = {str(k).split("-", 1)[-1] for k in system_acts or {}}
    if intents & CLARIFY_INTENTS:
        return "clarify"
    return "answer" if intents & ANSWER_INTENTS else "other"


def _check_turn(turn: Any, where: str, did: str, i: int) -> None:
    if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
        raise DataError(f"dialogue '{did}' turn {i}: expected an object with a 'text' string", path=where)
    for key in ("dialog_act", "metadata"):
        if not isinstance(turn.get(key, {}), dict):
            raise DataError(f"dialogue '{did}' turn {i}: field '{key}' must be an object", path=where)


def load(
    root: str | Path,
    split: str,
    *,
    max_dialogues: int | None = None,
    report: LoadReport | None = None,
) -> list[Dialogue]:
    root = require_dir(Path(root), "MultiWOZ folder")
    split = normalise_split(split)
    report = report if report is not None else LoadReport()
    path = _data_file(root, split)
    if path is None:
        raise DataError(
            f"no {_FILE_SPLIT[split]}.json.zip for split '{split}' "
            f"(available: {available_splits(root) or 'none'})",
            path=str(root),
        )
    data, where = _read_json(path)
    if not isinstance(data, dict):
        raise DataError("expected a JSON object mapping dialogue id -> dialogue", path=where)

    out: list[Dialogue] = []
    for did, dia in data.items():
        if max_dialogues is not None and len(out) >= max_dialogues:
            break
        log = dia.get("log") if isinstance(dia, dict) else None
        if not isinstance(log, list):
            raise DataError(f"dialogue '{did}': missing 'log' list", path=where)
        prev_state: dict[str, str] = {}
        turns: list[Turn] = []
        for i, turn in enumerate(log):
            _check_turn(turn, where, did, i)
            text = clean_text(turn["text"])
            if not text:
                report.add("empty_utterance", f"{did} turn {i}")
            if i % 2 == 1:
                turns.append(Turn(speaker="system", text=text))
                continue
            acts = set(turn.get("dialog_act") or {})
            for unknown in sorted(acts - _USER_ACT_SET):
                report.add("unknown_label", f"{did} turn {i}: user_act '{unknown}'")
            labels: dict[str, str | list[str]] = {"user_act": _in_order(acts, USER_ACT_LABELS)}
            if i + 1 < len(log):
                _check_turn(log[i + 1], where, did, i + 1)
                state = _filled(flatten_state(log[i + 1].get("metadata") or {}))
                changed = {k for k, v in state.items() if prev_state.get(k) != v}
                for unknown in sorted(changed - _SLOT_SET):
                    report.add("unknown_label", f"{did} turn {i}: slot '{unknown}'")
                labels["slots"] = _in_order(changed, SLOT_LABELS)
                labels["action"] = next_action(log[i + 1].get("dialog_act"))
                prev_state = state
            else:
                report.add("missing_state", f"{did} turn {i}")
            turns.append(Turn(speaker="user", text=text, labels=labels))
        out.append(Dialogue(dialogue_id=str(did), turns=turns, meta={"source": NAME, "split": split}))
    return take(out, max_dialogues)
