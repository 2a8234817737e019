"""Dialogues -> tokenized segments with gold targets and teacher scores, ready for batching.

Segment x_i = u_1..u_i of a dialogue, formatted by the shared window formatter. Each
segment carries, per task, the gold target (class index, or multi-hot for multilabel; absent when the
turn has no gold label) and the teacher's soft scores S_i (absent when no teacher scored it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema, TaskType
from turnwise.window import WindowConfig, encode_windows, pad_batch, windows_of

TOKENIZE_CHUNK = 512


@dataclass
class SegmentSet:
    schema: TaskSchema
    ids: list[list[int]] = field(default_factory=list)  # token ids per segment
    dialogue: list[int] = field(default_factory=list)  # index of the segment's dialogue
    turn: list[int] = field(default_factory=list)  # index of the scored turn in its dialogue
    gold: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) int, -1 = none; multilabel (N, C), -1 rows
    teacher: dict[str, np.ndarray] = field(default_factory=dict)  # (N, C) float, NaN rows = not scored
    dialogue_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def has_gold(self, task: str) -> np.ndarray:
        g = self.gold[task]
        return g >= 0 if g.ndim == 1 else g[:, 0] >= 0

    def has_teacher(self, task: str) -> np.ndarray:
        return ~np.isnan(self.teacher[task][:, 0]) if task in self.teacher else np.zeros(len(self), dtype=bool)

    def by_dialogue(self) -> dict[int, np.ndarray]:
        d = np.asarray(self.dialogue)
        return {int(k): np.flatnonzero(d == k) for k in np.unique(d)}


TeacherScores = Mapping[tuple[str, str], Any]  # (dialogue_id, task) -> record with .scores (L, C)


def _check_teacher(dlg: Dialogue, schema: TaskSchema, teacher: TeacherScores | None) -> dict[str, np.ndarray]:
    """The teacher's (L, C) scores of one dialogue per task, NaN rows where every vote abstained."""
    scored = {}
    for name in schema.names():
        rec = teacher.get((dlg.dialogue_id, name)) if teacher else None
        if rec is None:
            continue
        rec_labels = getattr(rec, "labels", None)
        if rec_labels is not None and list(rec_labels) != schema[name].labels:
            raise DataError(f"teacher scores for task '{name}' use labels {list(rec_labels)}, the schema has "
                            f"{schema[name].labels}")
        arr = np.asarray(rec.scores, dtype=np.float32)
        if arr.shape != (len(dlg.turns), schema[name].num_labels):
            raise DataError(f"teacher scores for dialogue '{dlg.dialogue_id}' task '{name}' have shape "
                            f"{arr.shape}, expected ({len(dlg.turns)}, {schema[name].num_labels})")
        valid = getattr(rec, "valid", None)  # turns where every vote abstained have no score
        if valid is not None:
            arr[~np.asarray(valid, dtype=bool)] = np.nan
        scored[name] = arr
    return scored


def fill_targets(out: SegmentSet, dialogues: Sequence[Dialogue], teacher: TeacherScores | None = None) -> None:
    """One row per turn of every dialogue, in order: its dialogue, turn index, gold targets and teacher
    scores. Rows are what the losses and metrics read; ``out.ids`` (the model input) is the caller's."""
    schema = out.schema
    gold_rows: dict[str, list[Any]] = {n: [] for n in schema.names()}
    teacher_rows: dict[str, list[np.ndarray]] = {n: [] for n in schema.names()}
    for di, dlg in enumerate(dialogues):
        scored = _check_teacher(dlg, schema, teacher)
        for ti, turn in enumerate(dlg.turns):
            out.dialogue.append(di)
            out.turn.append(ti)
            for name in schema.names():
                task = schema[name]
                if name in turn.labels:
                    try:
                        enc = task.encode(turn.labels[name])
                    except DataError as err:
                        raise DataError(f"dialogue '{dlg.dialogue_id}' turn {ti} task '{name}': {err}") from None
                    gold_rows[name].append(enc if task.type is TaskType.multilabel else int(np.argmax(enc)))
                else:
                    gold_rows[name].append([-1.0] * task.num_labels if task.type is TaskType.multilabel else -1)
                if name in scored:
                    teacher_rows[name].append(scored[name][ti])
                else:
                    teacher_rows[name].append(np.full(task.num_labels, np.nan, dtype=np.float32))
    for name in schema.names():
        task = schema[name]
        dtype = np.float32 if task.type is TaskType.multilabel else np.int64
        out.gold[name] = np.asarray(gold_rows[name], dtype=dtype).reshape(len(out.dialogue), *(
            (task.num_labels,) if task.type is TaskType.multilabel else ()))
        if teacher is not None:
            out.teacher[name] = np.stack(teacher_rows[name]) if teacher_rows[name] else np.zeros((0, task.num_labels))


def build_segments(dialogues: Sequence[Dialogue], schema: TaskSchema, tokenizer: Any, window: WindowConfig,
                   teacher: TeacherScores | None = None) -> SegmentSet:
    """Flat windows (``todbert-v1``): one segment per turn, its window formatted by the shared formatter."""
    out = SegmentSet(schema=schema, dialogue_ids=[d.dialogue_id for d in dialogues])
    fill_targets(out, dialogues, teacher)
    windows = [w for dlg in dialogues for w in windows_of(dlg.turns, window)]
    for start in range(0, len(windows), TOKENIZE_CHUNK):
        out.ids.extend(encode_windows(windows[start : start + TOKENIZE_CHUNK], tokenizer, window))
    return out


def collate(seg: SegmentSet, index: Sequence[int] | np.ndarray, pad_id: int,
            device: torch.device | None = None) -> dict[str, torch.Tensor]:
    batch = pad_batch([seg.ids[i] for i in index], pad_id)
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    return tensors if device is None else {k: t.to(device) for k, t in tensors.items()}
