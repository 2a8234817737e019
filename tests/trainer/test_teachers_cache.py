"""The teachers' one SQLite cache class: LLM responses and zeroshot embeddings, including files written before."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np

from trainer.teachers.cache import EMBEDDINGS, RESPONSES, EmbeddingCache, ResponseCache, SQLiteCache, cache_key

# The layouts both caches wrote before they shared one class, spelled out as they were.
OLD_RESPONSES = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, endpoint TEXT, prompt_id TEXT, sample INTEGER NOT NULL,
    content TEXT, finish_reason TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL
)
"""
OLD_EMBEDDINGS = "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)"


def _columns(path: Path, table: str) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return [(r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({table})")]


def test_files_written_by_the_old_caches_are_read_as_they_are(tmp_path):
    path = tmp_path / "old.sqlite"
    key = cache_key("m", [{"role": "user", "content": "hi"}], {"temperature": 0.7}, 0)
    vec = np.arange(4, dtype=np.float32) / 10
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_RESPONSES)
        conn.execute(OLD_EMBEDDINGS)
        conn.execute("INSERT INTO responses VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (key, "m", None, "p", 0, "B", "stop", 7, 1, 0.0))
        emb_key = hashlib.sha256(b"minilm\x00hello").hexdigest()
        conn.execute("INSERT INTO embeddings VALUES (?,?,?)", (emb_key, 4, vec.tobytes()))
    with ResponseCache(path) as rc:
        got = rc.get_many([key, "absent"])
        assert list(got) == [key]
        assert (got[key].content, got[key].finish_reason, got[key].prompt_tokens, got[key].completion_tokens) == (
            "B", "stop", 7, 1)
    emb = EmbeddingCache(path)
    np.testing.assert_array_equal(emb.lookup(["hello"])["hello"], vec)
    emb.close()
    # and a new file gets exactly the old layout
    fresh = tmp_path / "new.sqlite"
    ResponseCache(fresh).close()
    EmbeddingCache(fresh).close()
    assert _columns(fresh, "responses") == _columns(path, "responses")
    assert _columns(fresh, "embeddings") == _columns(path, "embeddings")


def test_embeddings_persist_next_to_responses_in_one_file(tmp_path):
    path = tmp_path / "shared.sqlite"
    texts = ["a", "bb", "ccc"]
    vecs = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with ResponseCache(path) as rc:
        rc.put("k", model="m", endpoint="http://x", prompt_id="p", sample=0, content="A", finish_reason="stop",
               prompt_tokens=3, completion_tokens=1)
        first = EmbeddingCache(path, model="minilm")
        first.store(texts, vecs)
        first.close()
        assert len(rc) == 1  # the embeddings table is another table of the same file
    again = EmbeddingCache(path, model="minilm")
    got = again.lookup([*texts, "unseen"])
    assert sorted(got) == texts
    np.testing.assert_array_equal(np.stack([got[t] for t in texts]), vecs)
    assert set(again.mem) == set(texts)  # read once, then served from memory
    again.close()
    other_model = EmbeddingCache(path, model="other")
    assert other_model.lookup(texts) == {}  # the encoder's name is part of the key
    other_model.close()
    memory_only = EmbeddingCache(None)
    memory_only.store(texts[:1], vecs[:1])
    assert list(memory_only.lookup(texts)) == ["a"]


def test_one_class_many_keys_and_replace(tmp_path):
    db = SQLiteCache(tmp_path / "c.sqlite", EMBEDDINGS)
    db.put_many((f"k{i}", 1, bytes([i % 256])) for i in range(1200))  # more keys than one SELECT may bind
    got = db.get_many((f"k{i}" for i in range(1200)), ("dim", "vec"))
    assert len(got) == 1200 and got["k1199"] == (1, bytes([1199 % 256]))
    db.put_many([("k0", 2, b"x")])
    assert db.get_many(["k0"], ("dim",)) == {"k0": (2,)} and len(db) == 1200
    db.close()
    assert RESPONSES.width == 10 and EMBEDDINGS.width == 3
