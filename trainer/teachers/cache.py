"""SQLite response cache for the LLM teacher: a rerun costs zero calls, a crash loses no paid answer.

Key = sha256 of the canonical JSON of (model name, messages, sampling params, sample index). The
endpoint URL is stored but is not part of the key: the same model behind another gateway gives the
same kind of answer, and shard caches from different pods must merge. Every answer is committed as soon
as it arrives; an answer the parser cannot read is still cached (it was paid for). Failed requests are
not cached, so a rerun retries them.

WAL mode and a busy timeout let several processes (``label --shard i/n`` pods) share one file;
:func:`merge_caches` folds shard caches into one.
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    endpoint TEXT,
    prompt_id TEXT,
    sample INTEGER NOT NULL,
    content TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
)
"""


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


class ResponseCache:
    """A small thread-safe wrapper over one SQLite connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(SCHEMA)
        self._conn.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedAnswer] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # stay under SQLite's bound-variable limit
                chunk = keys[i : i + 500]
                q = ("SELECT key, content, finish_reason, prompt_tokens, completion_tokens FROM responses "
                     f"WHERE key IN ({','.join('?' * len(chunk))})")
                for k, content, fr, pt, ct in self._conn.execute(q, chunk):
                    out[k] = CachedAnswer(content, fr, int(pt), int(ct))
        return out

    def put(self, key: str, *, model: str, endpoint: str | None, prompt_id: str | None, sample: int,
            content: str | None, finish_reason: str | None, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key, model, endpoint, prompt_id, int(sample), content, finish_reason, int(prompt_tokens),
                 int(completion_tokens), time.time()),
            )
            self._conn.commit()  # committed per answer: a crash mid-run loses nothing already paid for

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_caches(dst: str | Path, sources: Sequence[str | Path]) -> int:
    """Copy every answer of ``sources`` into ``dst`` (existing keys win); returns rows added."""
    ResponseCache(dst).close()  # create the schema if needed
    conn = sqlite3.connect(str(dst), timeout=30.0)
    try:
        before = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        for src in sources:
            conn.execute("ATTACH DATABASE ? AS src", (str(src),))
            conn.execute("INSERT OR IGNORE INTO responses SELECT * FROM src.responses")
            conn.commit()
            conn.execute("DETACH DATABASE src")
        after = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        return int(after - before)
    finally:
        conn.close()
