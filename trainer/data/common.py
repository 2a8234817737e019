"""Shared pieces of the corpus adapters: split names, the load report, text clean-up, the data root."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from turnwise.dialogue import Dialogue
from turnwise.errors import DataError

CANONICAL_SPLITS = ("train", "validation", "test")

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}

# One line per defect kind an adapter may count; summary() prints these next to the numbers.
DEFECT_KINDS: dict[str, str] = {
    "label_count_mismatch": "dialogue whose label count differs from its utterance count",
    "missing_eou": "utterance without its closing __eou__ marker",
    "empty_utterance": "turn with empty text (kept)",
    "empty_speaker": "turn without a speaker name (speaker set to 'unknown')",
    "mojibake_fixed": "text with cp1252/latin-1 mojibake, repaired",
    "utterance_id_gap": "dialogue whose Utterance_IDs skip numbers (turns kept in order)",
    "missing_dialogue_id": "Dialogue_ID absent from the numbering of its split",
    "duplicate_utterance": "second row for the same (dialogue, utterance) id (dropped)",
    "missing_state": "user turn without a following system turn to read the state from (no slots label)",
    "unknown_label": "label value outside the task's fixed label list (dropped)",
    "missing_label": "turn whose label field is empty (no label)",
    "multi_intent": "turn with several intents joined by <div> (first one kept)",
    "slot_label_count_mismatch": "turn whose slot-label count differs from its token count (slot set kept)",
    "float_turn_number": "turnNumber written as a float such as '3.0' (read as an integer)",
}


def normalise_split(split: str) -> str:
    """Map a split name to train / validation / test ('dev' and 'val' mean validation)."""
    key = split.strip().lower()
    if key not in _SPLIT_ALIASES:
        raise DataError(
            f"unknown split '{split}' (expected one of {', '.join(CANONICAL_SPLITS)}; 'dev' = validation)"
        )
    return _SPLIT_ALIASES[key]


def clean_text(text: str) -> str:
    """Collapse every run of whitespace (newlines and tabs inside quoted fields too) to one space."""
    return " ".join(text.split())


@dataclass
class LoadReport:
    """What an adapter skipped or repaired while reading a corpus, counted by defect kind.

    ``counts`` maps kind -> number of occurrences (e.g. ``{"label_count_mismatch": 1}``);
    ``examples`` keeps the first few locations of each kind (``file:line`` or a dialogue id).
    Pass one report to several ``load_source`` calls to accumulate over splits.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, kind: str, where: str | None = None, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n
        if where is not None:
            ex = self.examples.setdefault(kind, [])
            if len(ex) < self.max_examples:
                ex.append(where)

    def get(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        if not self.counts:
            return "no defects found"
        lines = []
        for kind in sorted(self.counts):
            line = f"{kind}: {self.counts[kind]}"
            if kind in DEFECT_KINDS:
                line += f" — {DEFECT_KINDS[kind]}"
            if self.examples.get(kind):
                more = ", ..." if self.counts[kind] > len(self.examples[kind]) else ""
                line += f" (e.g. {', '.join(self.examples[kind])}{more})"
            lines.append(line)
        return "\n".join(lines)


def take(dialogues: list[Dialogue], max_dialogues: int | None) -> list[Dialogue]:
    """The first ``max_dialogues`` dialogues (all when ``None``)."""
    if max_dialogues is None:
        return dialogues
    if max_dialogues < 0:
        raise DataError(f"max_dialogues must be >= 0, got {max_dialogues}")
    return dialogues[:max_dialogues]


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found", path=str(path))
    if not path.is_dir():
        raise DataError(f"{what} must be a folder", path=str(path))
    return path


def _candidates(start: Path) -> Iterable[Path]:
    for anc in (start, *start.parents):
        yield anc / "shared" / "data"


def default_data_root() -> Path:
    """The folder that holds the public corpora (dailydialog/, meld/, ...).

    ``TURNWISE_DATA_ROOT`` wins when set. Otherwise the first ``shared/data`` folder found walking up
    from the current directory, then from this package's directory: for a checkout at ``<dir>/main``
    that is the sibling ``<dir>/shared/data`` (``../shared/data`` from the repository root).
    """
    env = os.environ.get("TURNWISE_DATA_ROOT")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError("TURNWISE_DATA_ROOT does not name a folder", path=str(root))
        return root
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for cand in _candidates(start):
            if cand.is_dir():
                return cand
    raise DataError(
        "no corpus folder found: set TURNWISE_DATA_ROOT, or place the corpora in a 'shared/data' folder "
        "next to the repository (../shared/data from the repository root)"
    )
