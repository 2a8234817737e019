"""The teacher-scores file: what ``turnwise label`` writes and the trainer reads.

JSONL, one record per (dialogue, task)::

    {"dialogue_id": "call-0001", "task": "act", "labels": ["inform", "question", ...],
     "scores": [[S per class] per turn], "n_votes": 30,
     "teacher": {"kind": "llm", "model": "...", "prompts": ["act.choice.v1", ...], "params": {...}},
     "abstentions": [per turn], "votes": [[vote per vote] per turn], "task_type": "multiclass"}

- ``S_i^c`` in [0, 1] is the fraction of turn i's valid votes that chose class c (multilabel: that
  included c). A vote that could not be parsed is an abstention: it is not in the denominator.
- A turn whose every vote abstained has all-zero scores and ``abstentions == n_votes``; it carries no
  teacher information and :attr:`ScoreRecord.valid` is False for it (the trainer skips it).
- ``votes`` keeps the individual votes so ``turnwise calibrate`` can subsample N of them (ECE vs N):
  a class index, or -1 for an abstention; for multilabel tasks a vote is a bitmask (bit c set = class c
  chosen; 0 = "none of them"), -1 for an abstention.
- Records of a simulated teacher say so: ``teacher.kind == "simulated"`` and a ``teacher.note``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from turnwise.errors import DataError
from turnwise.jsonl import iter_models
from turnwise.tasks import TaskType

ABSTAIN = -1
TEACHER_KINDS = ("llm", "zeroshot", "simulated")


class ProgressFn(Protocol):
    """What teachers report progress to: ``progress(done_now)``; ``total=`` once, when it is known."""

    def __call__(self, advance: int, *, total: int | None = None) -> None: ...


class TeacherInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str
    model: str
    prompts: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None


class ScoreRecord(BaseModel):
    """Teacher scores of one (dialogue, task). Extra fields are kept (forward compatible)."""

    model_config = ConfigDict(extra="allow")

    dialogue_id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    scores: list[list[float]]
    n_votes: int = Field(ge=1)
    teacher: TeacherInfo
    abstentions: list[int] | None = None
    votes: list[list[int]] | None = None
    task_type: TaskType = TaskType.multiclass

    @model_validator(mode="after")
    def _check(self) -> ScoreRecord:
        c = len(self.labels)
        for i, row in enumerate(self.scores):
            if len(row) != c:
                raise ValueError(f"scores[{i}] has {len(row)} values for {c} labels")
            if any(not (0.0 <= s <= 1.0) for s in row):
                raise ValueError(f"scores[{i}] has a value outside [0, 1]")
        n_turns = len(self.scores)
        if self.abstentions is not None:
            if len(self.abstentions) != n_turns:
                raise ValueError(f"abstentions has {len(self.abstentions)} entries for {n_turns} turns")
            if any(not (0 <= a <= self.n_votes) for a in self.abstentions):
                raise ValueError("abstentions must lie in [0, n_votes]")
        if self.votes is not None:
            if len(self.votes) != n_turns:
                raise ValueError(f"votes has {len(self.votes)} rows for {n_turns} turns")
            if self.task_type is TaskType.multilabel:
                check_multilabel_width(self.task, c)
            hi = (1 << c) if self.task_type is TaskType.multilabel else c
            for i, vrow in enumerate(self.votes):
                if len(vrow) != self.n_votes:
                    raise ValueError(f"votes[{i}] has {len(vrow)} votes, n_votes is {self.n_votes}")
                if any(not (v == ABSTAIN or 0 <= v < hi) for v in vrow):
                    raise ValueError(f"votes[{i}] has a vote outside -1..{hi - 1}")
        return self

    @property
    def num_turns(self) -> int:
        return len(self.scores)

    @property
    def valid(self) -> list[bool]:
        """Per turn: True when at least one vote was not an abstention."""
        if self.abstentions is None:
            return [True] * self.num_turns
        return [a < self.n_votes for a in self.abstentions]

    def array(self) -> np.ndarray:
        """Scores as a (L, C) float array."""
        return np.asarray(self.scores, dtype=np.float64).reshape(self.num_turns, len(self.labels))

    def votes_array(self) -> np.ndarray:
        """Votes as a (L, N) int array (raises if the record was written without votes)."""
        if self.votes is None:
            raise DataError(f"record ({self.dialogue_id}, {self.task}) has no per-vote data")
        return np.asarray(self.votes, dtype=np.int64).reshape(self.num_turns, self.n_votes)

    @property
    def is_simulated(self) -> bool:
        return self.teacher.kind == "simulated"


# Multilabel votes are bitmasks in int64 (bit c = class c; -1 = abstention), so at most 62 classes fit.
MAX_MULTILABEL_CLASSES = 62


def check_multilabel_width(task: str, num_classes: int) -> None:
    """Refuse a multilabel task whose labels do not fit a vote bitmask (no silent loss of classes)."""
    if num_classes > MAX_MULTILABEL_CLASSES:
        raise DataError(f"task '{task}' has {num_classes} labels: teacher votes of a multilabel task hold at most "
                        f"{MAX_MULTILABEL_CLASSES} (one bit each); split it into several tasks or select fewer labels")


def votes_to_bitmask(on: np.ndarray) -> np.ndarray:
    """(..., C) bool -> (...,) int64 bitmask votes, bit c set when class c is on (C <= 62, checked by caller)."""
    c = on.shape[-1]
    if c > MAX_MULTILABEL_CLASSES:
        raise DataError(f"{c} classes do not fit a multilabel vote bitmask (max {MAX_MULTILABEL_CLASSES})")
    return (on.astype(np.int64) << np.arange(c, dtype=np.int64)).sum(axis=-1)


def scores_from_votes(votes: np.ndarray, num_classes: int, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(L, N) votes -> ((L, C) scores, (L,) abstention counts).

    S_i^c = (#valid votes for c) / (#valid votes of turn i); all-zero when no vote is valid.
    """
    votes = np.asarray(votes, dtype=np.int64)
    if votes.ndim != 2:
        raise ValueError("votes must be (turns, votes)")
    valid = votes != ABSTAIN  # (L, N)
    n_valid = valid.sum(axis=1)  # (L,)
    if multilabel:
        bits = (votes[..., None] >> np.arange(num_classes)) & 1  # (L, N, C)
        counts = (bits * valid[..., None]).sum(axis=1)
    else:
        onehot = (votes[..., None] == np.arange(num_classes)) & valid[..., None]  # (L, N, C)
        counts = onehot.sum(axis=1)
    scores = counts / np.maximum(n_valid, 1)[:, None]
    return scores.astype(np.float64), (votes.shape[1] - n_valid).astype(np.int64)


def make_record(dialogue_id: str, task: str, labels: Sequence[str], task_type: TaskType, votes: np.ndarray,
                teacher: dict[str, Any] | TeacherInfo) -> ScoreRecord:
    """A validated record from a (L, N) vote matrix; scores rounded to 6 decimals."""
    if task_type is TaskType.multilabel:
        check_multilabel_width(task, len(labels))
    votes = np.asarray(votes, dtype=np.int64)
    scores, abst = scores_from_votes(votes, len(labels), task_type is TaskType.multilabel)
    info = teacher if isinstance(teacher, TeacherInfo) else TeacherInfo.model_validate(teacher)
    return ScoreRecord(
        dialogue_id=dialogue_id, task=task, labels=list(labels), task_type=task_type,
        scores=[[round(float(s), 6) for s in row] for row in scores], n_votes=int(votes.shape[1]),
        teacher=info, abstentions=[int(a) for a in abst], votes=votes.tolist(),
    )


def _dump(record: ScoreRecord) -> str:
    d = record.model_dump(mode="json", exclude_none=True)
    # Keep the documented fields first so a human reading the file sees them first.
    order = ["dialogue_id", "task", "labels", "scores", "n_votes", "teacher"]
    out = {k: d.pop(k) for k in order}
    out.update(d)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def write_scores(records: Iterable[ScoreRecord], path: str | Path) -> int:
    """Write records atomically (temp file + rename); returns the count written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(_dump(r) + "\n")
            n += 1
    tmp.replace(p)
    return n


def iter_scores(path: str | Path) -> Iterator[ScoreRecord]:
    """Every record of a scores file, validated; errors name file, line and field (``turnwise.jsonl``)."""
    return iter_models(path, ScoreRecord)


def read_scores(path: str | Path) -> dict[tuple[str, str], ScoreRecord]:
    """All records of a scores file keyed by (dialogue_id, task); a duplicate key is a DataError."""
    out: dict[tuple[str, str], ScoreRecord] = {}
    for r in iter_scores(path):
        key = (r.dialogue_id, r.task)
        if key in out:
            raise DataError(f"duplicate record for dialogue '{r.dialogue_id}', task '{r.task}'", path=str(path))
        out[key] = r
    return out


def merge_scores(paths: Sequence[str | Path], out: str | Path) -> int:
    """Concatenate shard outputs (``label --shard i/n``) into one file; overlapping keys are an error."""
    merged: dict[tuple[str, str], ScoreRecord] = {}
    for p in paths:
        for key, r in read_scores(p).items():
            if key in merged:
                raise DataError(f"record ({key[0]}, {key[1]}) appears in more than one shard", path=str(p))
            merged[key] = r
    return write_scores(merged.values(), out)
