"""The durable record of consumed feedback and of finetune attempts (SQLite).

The ledger's primary key on the stream id makes a re-delivered entry a no-op (see
:mod:`sidecar.consumer`); the attempts table holds every decision with both held-out scores, and its
highest ``watermark`` says which feedback was already offered to a finetune.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ledger statuses: joined, or why a record was skipped (window_missing, turn_trimmed, turn_missing,
# invalid: an entry without dialogue_id/seq/task, deleted: trimmed out of the stream while pending).
JOINED = "joined"


@dataclass
class FeedbackRecord:
    stream_id: str
    dialogue_id: str
    seq: int
    task: str
    label: str
    model: str
    ts: float
    status: str
    context: list[dict[str, Any]] | None = None  # window turns up to and including seq (joined only)


@dataclass
class AttemptReport:
    decision: str  # published | rejected | skipped | failed | interrupted
    started_at: float
    watermark: int
    finished_at: float | None = None
    parent_version: str | None = None
    version: str | None = None
    serving_score: float | None = None
    candidate_score: float | None = None
    n_train: int | None = None
    n_heldout: int | None = None
    detail: str = ""


SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of durable arrival: the attempt watermark
  stream_id TEXT NOT NULL UNIQUE,        -- dedupe: a re-delivered entry is ignored
  dialogue_id TEXT NOT NULL, seq INTEGER NOT NULL, task TEXT NOT NULL, label TEXT NOT NULL,
  model TEXT, ts REAL, status TEXT NOT NULL, context TEXT, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, finished_at REAL,
  watermark INTEGER NOT NULL, decision TEXT NOT NULL, parent_version TEXT, version TEXT,
  serving_score REAL, candidate_score REAL, n_train INTEGER, n_heldout INTEGER, detail TEXT
);
"""


class FeedbackLedger:
    """The durable record of consumed feedback (SQLite, rollback journal, synchronous=FULL).

    A rollback journal rather than WAL: WAL needs shared memory, which network volumes (the chart's
    ReadWriteMany PVC) may not provide; there is exactly one writer.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the consuming loop and a finetune thread, serialised by this lock.
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA_SQL)

    def add(self, records: Sequence[FeedbackRecord]) -> int:
        """Commit ``records`` in one transaction; entries already recorded are ignored. Returns new rows."""
        now = time.time()
        rows = [(r.stream_id, r.dialogue_id, r.seq, r.task, r.label, r.model, r.ts, r.status,
                 json.dumps(r.context, ensure_ascii=False) if r.context is not None else None, now) for r in records]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.db.total_changes
                self.db.executemany(
                    "INSERT OR IGNORE INTO feedback (stream_id, dialogue_id, seq, task, label, model, ts, status, "
                    "context, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                added = self.db.total_changes - before
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return added

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def counts(self) -> dict[str, int]:
        return dict(self._all("SELECT status, COUNT(*) FROM feedback GROUP BY status"))

    def max_id(self) -> int:
        return int(self._all("SELECT COALESCE(MAX(id), 0) FROM feedback")[0][0])

    def watermark(self) -> int:
        """Feedback up to this id was already offered to a finetune attempt."""
        return int(self._all("SELECT COALESCE(MAX(watermark), 0) FROM attempts")[0][0])

    def new_labels(self) -> int:
        with self.lock:
            return int(self._all("SELECT COUNT(*) FROM feedback WHERE status = ? AND id > ?",
                                 (JOINED, self.watermark()))[0][0])

    def labelled(self, limit: int) -> list[FeedbackRecord]:
        """The most recent ``limit`` joined records, oldest first."""
        rows = self._all(
            "SELECT stream_id, dialogue_id, seq, task, label, model, ts, status, context FROM feedback "
            "WHERE status = ? ORDER BY id DESC LIMIT ?", (JOINED, limit))
        return [FeedbackRecord(stream_id=r[0], dialogue_id=r[1], seq=int(r[2]), task=r[3], label=r[4], model=r[5] or "",
                               ts=float(r[6] or 0.0), status=r[7], context=json.loads(r[8])) for r in reversed(rows)]

    def record_attempt(self, report: AttemptReport) -> None:
        self._all(
            "INSERT INTO attempts (started_at, finished_at, watermark, decision, parent_version, version, "
            "serving_score, candidate_score, n_train, n_heldout, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (report.started_at, report.finished_at, report.watermark, report.decision, report.parent_version,
             report.version, report.serving_score, report.candidate_score, report.n_train, report.n_heldout,
             report.detail))

    def attempts(self) -> list[AttemptReport]:
        """Every recorded attempt, oldest first (interrupted attempts are not recorded)."""
        rows = self._all(
            "SELECT decision, started_at, watermark, finished_at, parent_version, version, serving_score, "
            "candidate_score, n_train, n_heldout, detail FROM attempts ORDER BY id")
        return [AttemptReport(*r) for r in rows]

    def last_attempt_at(self) -> float | None:
        (row,) = self._all("SELECT MAX(started_at) FROM attempts")
        return float(row[0]) if row[0] is not None else None

    def close(self) -> None:
        with self.lock:
            self.db.close()
