"""Shared by the sidecar tests: windows and feedback written with the service's own Redis store, fake
bundles behind a ``current`` symlink, and a sidecar whose finetune, export and evaluation are stubs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import redis

from service.store.redis import RedisStore
from sidecar.consumer import FeedbackConsumer
from sidecar.ledger import FeedbackLedger, FeedbackRecord
from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings
from turnwise.names import BUNDLE_MANIFEST, CHECKPOINT_META, DEFAULT_KEY_PREFIX

PREFIX = DEFAULT_KEY_PREFIX
WINDOW = {"max_turns": 4, "max_tokens": 64, "format": "todbert-v1"}
TASKS = {
    "intent": {"type": "binary", "labels": ["no_intent", "has_intent"]},
    "act": {"type": "multiclass", "labels": ["inform", "question", "directive", "commissive"]},
    "sentiment": {"type": "multiclass", "labels": ["negative", "neutral", "positive"]},
}
FEEDBACK = [("call-a", s, "act", "inform") for s in range(4)] + [("call-b", s, "sentiment", "neutral")
                                                                  for s in range(3)]


def seed_calls(url: str, calls: dict[str, int], feedback: list[tuple[str, int, str, str]], max_turns: int = 4) -> None:
    """Write windows and feedback with the service's own Redis store (the real key layout)."""

    async def go() -> None:
        store = RedisStore(url, prefix=PREFIX, ttl_s=600)
        try:
            for did, n in calls.items():
                for seq in range(n):
                    speaker = "agent" if seq % 2 == 0 else "customer"
                    await store.append(did, seq, speaker, f"{did} turn {seq}", max_turns=max_turns)
            for did, seq, task, label in feedback:
                await store.add_feedback({"dialogue_id": did, "seq": str(seq), "task": task, "label": label,
                                          "model": "tiny@1"})
        finally:
            await store.close()

    asyncio.run(go())


def make_consumer(url: str, state: Path, consumer: str = "trainer", claim_idle_ms: int = 300_000,
                  batch: int = 3) -> FeedbackConsumer:
    c = FeedbackConsumer(redis.Redis.from_url(url, decode_responses=True), FeedbackLedger(state / "ledger.sqlite3"),
                         prefix=PREFIX, group="g", consumer=consumer, batch=batch, claim_idle_ms=claim_idle_ms)
    c.ensure_group()
    return c


def fake_bundle(path: Path, version: str) -> Path:
    path.mkdir(parents=True)
    (path / BUNDLE_MANIFEST).write_text(json.dumps({"name": "tiny", "version": version, "tasks": TASKS,
                                                    "window": WINDOW, "variants": {"fp32": "model.onnx"}}))
    return path


def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fake_bundle(root / "1", "1")
    (root / "current").symlink_to("1", target_is_directory=True)
    return root / "current"


class StubbedSidecar(Sidecar):
    """The attempt logic with finetune, export and evaluation replaced by files and fixed scores."""

    scores: dict[str, float]

    def finetune(self, parent: Path, dialogues: list, out: Path, manifest: dict[str, Any], report: Any) -> None:
        out.mkdir(parents=True)
        (out / CHECKPOINT_META).write_text("{}")

    def export(self, ckpt: Path, out: Path, manifest: dict[str, Any], version: str) -> Path:
        return fake_bundle(out, version)

    def evaluate(self, bundle: Path, dialogues: list) -> float:
        return self.scores["candidate" if bundle.name.startswith(".candidate-") else "serving"]


def stubbed_sidecar(tmp_path: Path, samples_dir: Path, scores: dict[str, float]) -> StubbedSidecar:
    link = models_root(tmp_path)
    settings = SidecarSettings(redis_url="redis://127.0.0.1:1/0", bundle=link, heldout=samples_dir / "dialogues.jsonl",
                               min_new_labels=1, checkpoint=None)
    sc = StubbedSidecar(settings)
    sc.scores = scores
    sc.serving_checkpoint = lambda manifest: tmp_path  # type: ignore[method-assign]
    ctx = [{"seq": 0, "speaker": "customer", "text": "my card was charged twice"}]
    sc.ledger.add([FeedbackRecord(f"{i}-0", f"call-{i}", 0, "intent", "has_intent", "", 0, "joined", ctx)
                   for i in range(5)])
    return sc


def wait_for(predicate: Any, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
