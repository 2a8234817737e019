"""The teachers' SQLite caches: one class (:class:`SQLiteCache`), two tables.

- ``responses`` (:class:`ResponseCache`, the LLM teacher): a rerun costs zero calls, a crash loses no paid
  answer. Key = sha256 of the canonical JSON of (model name, messages, sampling params, sample index). The
  endpoint URL is stored but is not part of the key: the same model behind another gateway gives the same
  kind of answer, and shard caches from different pods must merge. Every answer is committed as soon as it
  arrives; an answer the parser cannot read is still cached (it was paid for). Failed requests are not
  cached, so a rerun retries them.
- ``embeddings`` (:class:`EmbeddingCache`, the zeroshot teacher): text -> float32 vector, key =
  sha256 of ``"<model>\\0<text>"``, value = (dim, raw float32 bytes), in front of it an in-memory dict.

Both tables keep the layout they had when each teacher had its own SQLite code, so existing cache files
are read as they are; both may live in the same file. WAL mode and a busy timeout let several processes
(``label --shard i/n`` pods) share one file; :func:`merge_caches` folds shard response caches into one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SQLITE_MAX_VARS = 500  # keys per SELECT, under SQLite's bound-variable limit


@dataclass(frozen=True)
class Table:
    """A cache table: ``key TEXT PRIMARY KEY`` followed by ``columns`` (SQL column definitions)."""

    name: str
    columns: tuple[str, ...]

    @property
    def ddl(self) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.name} (key TEXT PRIMARY KEY, {', '.join(self.columns)})"

    @property
    def width(self) -> int:
        return 1 + len(self.columns)


RESPONSES = Table("responses", (
    "model TEXT NOT NULL", "endpoint TEXT", "prompt_id TEXT", "sample INTEGER NOT NULL", "content TEXT",
    "finish_reason TEXT", "prompt_tokens INTEGER NOT NULL DEFAULT 0", "completion_tokens INTEGER NOT NULL DEFAULT 0",
    "created REAL NOT NULL",
))
EMBEDDINGS = Table("embeddings", ("dim INTEGER", "vec BLOB"))


class SQLiteCache:
    """One table of a SQLite file keyed by text: thread-safe (one connection, one lock), WAL, committed per write.

    Table and column names come from this module's :class:`Table` constants, never from input.
    """

    def __init__(self, path: str | Path, table: Table):
        self.path = Path(path)
        self.table = table
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(table.ddl)
        self._conn.commit()

    def get_many(self, keys: Iterable[str], columns: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """``{key: (values of columns)}`` for the keys present."""
        klist = list(dict.fromkeys(keys))
        out: dict[str, tuple[Any, ...]] = {}
        with self._lock:
            for i in range(0, len(klist), SQLITE_MAX_VARS):
                chunk = klist[i : i + SQLITE_MAX_VARS]
                q = (f"SELECT key, {', '.join(columns)} FROM {self.table.name} "
                     f"WHERE key IN ({','.join('?' * len(chunk))})")
                for row in self._conn.execute(q, chunk):
                    out[row[0]] = tuple(row[1:])
        return out

    def put_many(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert or replace rows ``(key, *values in column order)``; one commit for all of them."""
        q = f"INSERT OR REPLACE INTO {self.table.name} VALUES ({','.join('?' * self.table.width)})"
        with self._lock:
            self._conn.executemany(q, [tuple(r) for r in rows])
            self._conn.commit()

    def merge_from(self, sources: Sequence[str | Path]) -> int:
        """Copy every row of the same table in ``sources`` (existing keys win); returns rows added."""
        t = self.table.name
        with self._lock:
            before = self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for src in sources:
                self._conn.execute("ATTACH DATABASE ? AS src", (str(src),))
                self._conn.execute(f"INSERT OR IGNORE INTO {t} SELECT * FROM src.{t}")
                self._conn.commit()
                self._conn.execute("DETACH DATABASE src")
            after = self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        return int(after - before)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {self.table.name}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------------------------------
# LLM responses


def cache_key(model: str, messages: Sequence[dict[str, str]], params: dict[str, Any], sample: int) -> str:
    payload = {"model": model, "messages": list(messages), "params": params, "sample": int(sample)}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


_ANSWER_COLUMNS = ("content", "finish_reason", "prompt_tokens", "completion_tokens")


class ResponseCache:
    """The LLM teacher's answers: the ``responses`` table of a :class:`SQLiteCache`."""

    def __init__(self, path: str | Path):
        self.db = SQLiteCache(path, RESPONSES)
        self.path = self.db.path

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        return {k: CachedAnswer(content, fr, int(pt), int(ct))
                for k, (content, fr, pt, ct) in self.db.get_many(keys, _ANSWER_COLUMNS).items()}

    def put(self, key: str, *, model: str, endpoint: str | None, prompt_id: str | None, sample: int,
            content: str | None, finish_reason: str | None, prompt_tokens: int, completion_tokens: int) -> None:
        # committed per answer: a crash mid-run loses nothing already paid for
        self.db.put_many([(key, model, endpoint, prompt_id, int(sample), content, finish_reason, int(prompt_tokens),
                           int(completion_tokens), time.time())])

    def __len__(self) -> int:
        return len(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_caches(dst: str | Path, sources: Sequence[str | Path]) -> int:
    """Copy every answer of ``sources`` into ``dst`` (existing keys win); returns rows added."""
    db = SQLiteCache(dst, RESPONSES)
    try:
        return db.merge_from(sources)
    finally:
        db.close()


# --------------------------------------------------------------------------------------------------
# Embeddings


class EmbeddingCache:
    """text -> float32 vector, in memory and, with a path, in the ``embeddings`` table of a :class:`SQLiteCache`
    (it may share the file of a response cache)."""

    def __init__(self, path: str | Path | None = None, model: str = "minilm"):
        self.mem: dict[str, np.ndarray] = {}
        self.model = model
        self.db = SQLiteCache(path, EMBEDDINGS) if path is not None else None

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model}\x00{text}".encode()).hexdigest()

    def lookup(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        out = {t: self.mem[t] for t in texts if t in self.mem}
        missing = [t for t in texts if t not in out]
        if self.db is not None and missing:
            keys = {self._key(t): t for t in missing}
            for k, (blob,) in self.db.get_many(keys, ("vec",)).items():
                out[keys[k]] = self.mem[keys[k]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def store(self, texts: Sequence[str], vecs: np.ndarray) -> None:
        for t, v in zip(texts, vecs, strict=True):
            self.mem[t] = v
        if self.db is not None:
            self.db.put_many((self._key(t), int(v.shape[0]), np.asarray(v, np.float32).tobytes())
                             for t, v in zip(texts, vecs, strict=True))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
