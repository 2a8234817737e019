"""The dialogue data model and its JSONL encoding.

One dialogue per JSONL line::

    {"dialogue_id": "call-0001",
     "turns": [{"speaker": "agent", "text": "...", "labels": {"intent": "no_intent", ...}}],
     "meta": {"source": "sample"}}

``labels`` is optional per turn and per task: gold labels are usually sparse. A multilabel task's
label is a list of label names (possibly empty).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from turnwise.errors import DataError
from turnwise.jsonl import iter_models, validation_message

LabelValue = str | list[str]


class Turn(BaseModel):
    """One utterance. ``labels`` maps task name -> label (or list of labels for multilabel tasks)."""

    model_config = ConfigDict(extra="forbid")

    speaker: str = Field(min_length=1)
    text: str
    labels: dict[str, LabelValue] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _text_is_str(cls, v: str) -> str:
        return v.strip()


class Dialogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dialogue_id: str = Field(min_length=1)
    turns: list[Turn]
    meta: dict[str, Any] = Field(default_factory=dict)

    def labelled(self, task: str) -> list[int]:
        """Indices of turns that carry a gold label for ``task``."""
        return [i for i, t in enumerate(self.turns) if task in t.labels]


def parse_dialogue(obj: Any, *, path: str | None = None, line: int | None = None) -> Dialogue:
    try:
        return Dialogue.model_validate(obj)
    except ValidationError as err:
        raise DataError(validation_message(err), path=path, line=line) from None


def iter_jsonl(path: str | Path) -> Iterator[Dialogue]:
    """Yield dialogues from a JSONL file; a bad line raises :class:`DataError` naming file, line, field."""
    return iter_models(path, Dialogue)


def read_jsonl(path: str | Path) -> list[Dialogue]:
    dialogues = list(iter_jsonl(path))
    seen: set[str] = set()
    for d in dialogues:
        if d.dialogue_id in seen:
            raise DataError(f"duplicate dialogue_id '{d.dialogue_id}'", path=str(path))
        seen.add(d.dialogue_id)
    return dialogues


def write_jsonl(dialogues: Iterable[Dialogue], path: str | Path) -> int:
    """Write dialogues atomically (temp file + rename); returns the count written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for d in dialogues:
            fh.write(d.model_dump_json(exclude_defaults=False) + "\n")
            n += 1
    tmp.replace(p)
    return n
