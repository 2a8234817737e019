"""What the corpus adapter tests share (``test_adapters_*.py``): the real corpora, skipped when absent, and
label counting. Imported by basename (``tests/trainer`` is on ``sys.path`` in pytest's default import mode)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema


def corpus(data_root: Path, name: str) -> Path:
    path = data_root / name
    if not path.is_dir():
        pytest.skip(f"{name} not present under {data_root}")
    return path


def label_counts(dialogues: list[Dialogue], task: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for d in dialogues:
        for t in d.turns:
            if task in t.labels:
                value = t.labels[task]
                c.update(value if isinstance(value, list) else [value])
    return c


def labelled(dialogues: list[Dialogue], task: str) -> int:
    return sum(len(d.labelled(task)) for d in dialogues)


def check_against_schema(dialogues: list[Dialogue], schema: TaskSchema) -> None:
    for d in dialogues:
        for t in d.turns:
            for task, value in t.labels.items():
                schema[task].encode(value)  # raises DataError on an unknown label
