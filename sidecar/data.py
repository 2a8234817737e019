"""Feedback -> dialogues for a finetune, and the held-out set that decides whether it is published.

Training uses every joined label so far (the latest label per turn and task wins; the newest
``max_train_examples``), one dialogue per labelled turn holding its stored window. Held-out set: the
``heldout`` JSONL of gold dialogues if given, else the feedback of a deterministic
``heldout_fraction`` of calls (by a hash of ``dialogue_id``, so a call never feeds both sides); it
is never trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sidecar.ledger import FeedbackLedger, FeedbackRecord
from sidecar.settings import SidecarSettings
from turnwise.dialogue import Dialogue, Turn, read_jsonl
from turnwise.names import StoredTurn
from turnwise.tasks import TaskSchema, TaskType


def is_heldout(dialogue_id: str, fraction: float) -> bool:
    """Deterministic dialogue-level split: a call's turns never straddle training and held-out."""
    return int(hashlib.sha256(dialogue_id.encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


def feedback_dialogues(records: Iterable[FeedbackRecord], schema: TaskSchema) -> tuple[list[Dialogue], int]:
    """One dialogue per labelled turn (its stored window, labels on the last turn); later labels win.

    Returns (dialogues, records skipped for a task or label the serving model does not have)."""
    labels: dict[tuple[str, int], dict[str, str | list[str]]] = {}
    contexts: dict[tuple[str, int], list[dict[str, Any]]] = {}
    skipped = 0
    for r in records:
        task = schema.tasks.get(r.task)
        value: str | list[str] = r.label
        if task is not None and task.type is TaskType.multilabel:
            value = [v for v in r.label.split(",") if v]
        names = value if isinstance(value, list) else [value]
        if task is None or r.context is None or any(v not in task.labels for v in names):
            skipped += 1
            continue
        key = (r.dialogue_id, r.seq)
        labels.setdefault(key, {})[r.task] = value
        contexts[key] = r.context
    out = []
    for key, lab in labels.items():
        ctx = [StoredTurn.from_dict(t) for t in contexts[key]]
        turns = [Turn(speaker=t.speaker, text=t.text) for t in ctx[:-1]]
        turns.append(Turn(speaker=ctx[-1].speaker, text=ctx[-1].text, labels=lab))
        out.append(Dialogue(dialogue_id=f"{key[0]}#{key[1]}", turns=turns, meta={"source": "feedback"}))
    return out, skipped


def count_labels(dialogues: Iterable[Dialogue]) -> int:
    return sum(len(t.labels) for d in dialogues for t in d.turns)


def datasets(ledger: FeedbackLedger, settings: SidecarSettings,
             schema: TaskSchema) -> tuple[list[Dialogue], list[Dialogue], int]:
    """(training dialogues, held-out dialogues, skipped records) from the ledger (and the held-out file)."""
    s = settings
    records = ledger.labelled(s.max_train_examples)
    if s.heldout is not None:
        train, skipped = feedback_dialogues(records, schema)
        return train, read_jsonl(s.heldout), skipped
    train_r = [r for r in records if not is_heldout(r.dialogue_id, s.heldout_fraction)]
    held_r = [r for r in records if is_heldout(r.dialogue_id, s.heldout_fraction)]
    train, skipped_t = feedback_dialogues(train_r, schema)
    held, skipped_h = feedback_dialogues(held_r, schema)
    return train, held, skipped_t + skipped_h
