"""The training sidecar: consumer delivery guarantees against a real redis-server, the join, the
publish-only-if-not-worse rule and the atomic publish. Finetuning itself runs in tests/e2e."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from service.store.redis import RedisStore
from trainer.sidecar import (
    FeedbackConsumer,
    FeedbackLedger,
    FeedbackRecord,
    Sidecar,
    SidecarError,
    SidecarSettings,
    feedback_dialogues,
    is_heldout,
    join_window,
    publish_bundle,
    should_publish,
    swap_link,
)

PREFIX = "tw:"
WINDOW = {"max_turns": 4, "max_tokens": 64, "format": "todbert-v1"}
TASKS = {
    "intent": {"type": "binary", "labels": ["no_intent", "has_intent"]},
    "act": {"type": "multiclass", "labels": ["inform", "question", "directive", "commissive"]},
    "sentiment": {"type": "multiclass", "labels": ["negative", "neutral", "positive"]},
}


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


FEEDBACK = [("call-a", s, "act", "inform") for s in range(4)] + [("call-b", s, "sentiment", "neutral")
                                                                  for s in range(3)]


@pytest.mark.redis
def test_crash_after_durable_write_before_ack_resumes_without_loss_or_double_count(redis_server, tmp_path: Path):
    seed_calls(redis_server.url, {"call-a": 4, "call-b": 3}, FEEDBACK)
    first = make_consumer(redis_server.url, tmp_path)

    def crash(ids: Any) -> None:
        raise RuntimeError("killed between commit and XACK")

    first._ack = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        first.poll(None)
    assert first.ledger.counts() == {"joined": 3}  # the first batch was committed...
    assert first.pending() == 3  # ...but never acked
    first.ledger.close()

    restarted = make_consumer(redis_server.url, tmp_path)  # same state dir, same consumer name
    assert restarted.recover() == 3  # re-read its pending entries
    assert restarted.stats["duplicates"] == 3 and restarted.stats["stored"] == 0
    assert restarted.drain() == 4
    assert restarted.pending() == 0
    assert restarted.ledger.counts() == {"joined": 7}
    assert restarted.ledger.new_labels() == 7
    assert restarted.drain() == 0  # nothing delivered twice


@pytest.mark.redis
def test_crash_before_durable_write_loses_nothing(redis_server, tmp_path: Path):
    seed_calls(redis_server.url, {"call-a": 4, "call-b": 3}, FEEDBACK)
    first = make_consumer(redis_server.url, tmp_path)

    def disk_full(records: Any) -> int:
        raise OSError("disk full")

    first.ledger.add = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        first.poll(None)
    assert first.pending() == 3
    restarted = make_consumer(redis_server.url, tmp_path)
    restarted.recover()
    restarted.drain()
    assert restarted.ledger.counts() == {"joined": 7}
    assert restarted.pending() == 0


@pytest.mark.redis
def test_entries_left_pending_by_another_consumer_are_claimed(redis_server, tmp_path: Path):
    seed_calls(redis_server.url, {"call-a": 4}, FEEDBACK[:4])
    gone = make_consumer(redis_server.url, tmp_path / "old-pod")
    gone.ledger.add = lambda records: (_ for _ in ()).throw(OSError("pod evicted"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        gone.poll(None)
    new_pod = make_consumer(redis_server.url, tmp_path, consumer="trainer-2", claim_idle_ms=0)
    assert new_pod.recover() == 3
    new_pod.drain()
    assert new_pod.ledger.counts() == {"joined": 4}
    assert new_pod.pending() == 0


@pytest.mark.redis
def test_join_counts_and_skips_expired_trimmed_and_unknown_turns(redis_server, tmp_path: Path):
    feedback = [("call-a", 5, "act", "question"),  # in the window
                ("call-a", 1, "act", "inform"),  # trimmed: the window holds seqs 2..5
                ("call-a", 9, "act", "inform"),  # never sent
                ("call-gone", 0, "act", "inform")]  # ended or expired
    seed_calls(redis_server.url, {"call-a": 6, "call-gone": 1}, feedback)
    redis.Redis.from_url(redis_server.url).delete("tw:{call-gone}:turns", "tw:{call-gone}:meta")
    c = make_consumer(redis_server.url, tmp_path, batch=10)
    assert c.drain() == 4
    assert c.ledger.counts() == {"joined": 1, "turn_trimmed": 1, "turn_missing": 1, "window_missing": 1}
    (rec,) = c.ledger.labelled(10)
    assert [t["seq"] for t in rec.context or []] == [2, 3, 4, 5]  # what the model saw: the window up to seq
    assert rec.context and rec.context[-1]["text"] == "call-a turn 5"


@pytest.mark.redis
def test_an_entry_with_its_own_window_snapshot_needs_no_redis_window(redis_server, tmp_path: Path):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    window = [{"seq": s, "speaker": "customer", "text": f"t{s}"} for s in (7, 8)]
    client.xadd("tw:feedback", {"dialogue_id": "call-ended", "seq": "8", "task": "act", "label": "inform",
                                "window": json.dumps(window)})
    client.xadd("tw:feedback", {"dialogue_id": "call-ended", "task": "act"})  # no seq: invalid, acked, counted
    c = make_consumer(redis_server.url, tmp_path)
    assert c.drain() == 2
    assert c.ledger.counts() == {"joined": 1, "invalid": 1}
    assert c.pending() == 0
    assert [t["text"] for t in c.ledger.labelled(5)[0].context or []] == ["t7", "t8"]


def test_join_window_is_the_window_up_to_the_turn():
    raw = [json.dumps({"seq": s, "speaker": "agent", "text": f"t{s}"}) for s in (3, 4, 5)]
    assert join_window(raw, 4) == ("joined", [{"seq": 3, "speaker": "agent", "text": "t3"},
                                              {"seq": 4, "speaker": "agent", "text": "t4"}])
    assert join_window(raw, 2)[0] == "turn_trimmed"
    assert join_window(raw, 6)[0] == "turn_missing"
    assert join_window([], 0)[0] == "window_missing"


def test_feedback_dialogues_latest_label_wins_and_unknown_labels_are_skipped(sample_schema):
    ctx = [{"seq": 0, "speaker": "agent", "text": "hi"}, {"seq": 1, "speaker": "customer", "text": "refund please"}]
    recs = [FeedbackRecord("1-0", "c", 1, "act", "inform", "", 0, "joined", ctx),
            FeedbackRecord("2-0", "c", 1, "act", "directive", "", 0, "joined", ctx),  # a correction wins
            FeedbackRecord("3-0", "c", 1, "intent", "has_intent", "", 0, "joined", ctx),
            FeedbackRecord("4-0", "c", 1, "act", "shouting", "", 0, "joined", ctx),  # not a label of the model
            FeedbackRecord("5-0", "c", 1, "topic", "billing", "", 0, "joined", ctx)]  # not a task of the model
    (dlg,), skipped = feedback_dialogues(recs, sample_schema)
    assert skipped == 2
    assert [t.text for t in dlg.turns] == ["hi", "refund please"]
    assert dlg.turns[0].labels == {}
    assert dlg.turns[-1].labels == {"act": "directive", "intent": "has_intent"}


def test_heldout_split_is_per_dialogue_and_deterministic():
    ids = [f"call-{i}" for i in range(2000)]
    held = [i for i in ids if is_heldout(i, 0.2)]
    assert 300 < len(held) < 500
    assert held == [i for i in ids if is_heldout(i, 0.2)]


def test_settings_reuse_the_service_variables(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TURNWISE_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("TURNWISE_KEY_PREFIX", "prod:")
    monkeypatch.setenv("TURNWISE_BUNDLE", str(tmp_path / "current"))
    monkeypatch.setenv("TURNWISE_SIDECAR_MIN_NEW_LABELS", "7")
    s = SidecarSettings()
    assert (s.redis_url, s.key_prefix, s.bundle, s.min_new_labels) == ("redis://r:6379/2", "prod:",
                                                                          tmp_path / "current", 7)


# --- publishing --------------------------------------------------------------------------------------
def test_should_publish_only_if_not_worse():
    assert should_publish(0.80, 0.81)
    assert should_publish(0.80, 0.80)  # equal is not worse
    assert not should_publish(0.80, 0.79)
    assert should_publish(0.80, 0.79, max_regression=0.02)
    assert not should_publish(0.80, 0.77, max_regression=0.02)


def fake_bundle(path: Path, version: str) -> Path:
    path.mkdir(parents=True)
    (path / "bundle.json").write_text(json.dumps({"name": "tiny", "version": version, "tasks": TASKS,
                                                  "window": WINDOW, "variants": {"fp32": "model.onnx"}}))
    return path


def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fake_bundle(root / "1", "1")
    (root / "current").symlink_to("1", target_is_directory=True)
    return root / "current"


def test_publish_moves_the_candidate_and_repoints_the_link(tmp_path: Path):
    link = models_root(tmp_path)
    cand = fake_bundle(link.parent / ".candidate-2", "2")
    final = publish_bundle(cand, link, "2")
    assert final == link.parent / "2" and not cand.exists()
    assert os.readlink(link) == "2"  # relative: valid wherever the volume is mounted
    assert json.loads((link / "bundle.json").read_text())["version"] == "2"
    assert sorted(p.name for p in link.parent.iterdir()) == ["1", "2", "current"]  # no temp link left
    with pytest.raises(SidecarError, match="already exists"):
        publish_bundle(fake_bundle(link.parent / ".candidate-x", "2"), link, "2")
    assert os.readlink(link) == "2"


def test_publish_refuses_a_plain_directory(tmp_path: Path):
    plain = fake_bundle(tmp_path / "bundle", "1")
    with pytest.raises(SidecarError, match="not a symlink"):
        publish_bundle(fake_bundle(tmp_path / "cand", "2"), plain, "2")


def test_link_swap_is_atomic_for_a_concurrent_reader(tmp_path: Path):
    link = models_root(tmp_path)
    fake_bundle(link.parent / "2", "2")
    stop, seen, errors = threading.Event(), set(), []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(json.loads((link / "bundle.json").read_text())["version"])
            except (OSError, ValueError) as err:  # a missing or half-made link would land here
                errors.append(err)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        swap_link(link, "2" if i % 2 == 0 else "1")
    stop.set()
    t.join()
    assert errors == []
    assert seen == {"1", "2"}


class StubbedSidecar(Sidecar):
    """The attempt logic with finetune, export and evaluation replaced by files and fixed scores."""

    scores: dict[str, float]

    def finetune(self, parent: Path, dialogues: list, out: Path, manifest: dict[str, Any], report: Any) -> None:
        out.mkdir(parents=True)
        (out / "turnwise.json").write_text("{}")

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


def test_a_worse_candidate_is_not_published(tmp_path: Path, samples_dir: Path):
    sc = stubbed_sidecar(tmp_path, samples_dir, {"serving": 0.70, "candidate": 0.65})
    attempt = sc.attempt()
    assert attempt.decision == "rejected", attempt
    assert (attempt.serving_score, attempt.candidate_score) == (0.70, 0.65)
    assert os.readlink(sc.link) == "1"
    assert sorted(p.name for p in sc.root.iterdir()) == [".sidecar", "1", "current"]  # candidate removed
    assert not (sc.ckpt_root / str(attempt.version)).exists()  # and its checkpoint
    assert sc.ledger.new_labels() == 0  # those labels were offered: wait for min_new_labels new ones
    assert sc.ledger.db.execute("SELECT decision FROM attempts").fetchall() == [("rejected",)]


def test_a_candidate_that_is_not_worse_is_published(tmp_path: Path, samples_dir: Path):
    sc = stubbed_sidecar(tmp_path, samples_dir, {"serving": 0.70, "candidate": 0.70})
    attempt = sc.attempt()
    assert attempt.decision == "published", attempt
    assert os.readlink(sc.link) == attempt.version
    assert json.loads((sc.link / "bundle.json").read_text())["version"] == attempt.version
    assert (sc.ckpt_root / str(attempt.version) / "turnwise.json").exists()  # the next parent checkpoint
    assert sc.serving_version() == attempt.version


def test_no_publish_without_enough_heldout_labels(tmp_path: Path, samples_dir: Path):
    sc = stubbed_sidecar(tmp_path, samples_dir, {"serving": 0.0, "candidate": 1.0})
    sc.settings.heldout = None  # held-out = a slice of the 5 feedback labels: far below min_heldout_labels
    attempt = sc.attempt()
    assert attempt.decision == "skipped", attempt
    assert os.readlink(sc.link) == "1"


def test_serving_checkpoint_resolution(tmp_path: Path, tiny_checkpoint: Path):
    from trainer.checkpoint import read_meta

    meta = read_meta(tiny_checkpoint)
    link = tmp_path / "models" / "current"
    link.parent.mkdir()
    manifest = {"version": "7", "tasks": meta["tasks"]["tasks"], "window": meta["window"],
                "source_checkpoint": {"path": str(tiny_checkpoint)}}
    (link.parent / "7").mkdir()
    link.symlink_to("7")
    sc = Sidecar(SidecarSettings(redis_url="redis://127.0.0.1:1/0", bundle=link))
    assert sc.serving_checkpoint(manifest) == tiny_checkpoint  # recorded by the exporter
    setting = tmp_path / "seed-ckpt"
    setting.symlink_to(tiny_checkpoint)
    sc.settings.checkpoint = setting
    assert sc.serving_checkpoint(manifest) == setting  # the setting beats the recorded path
    own = sc.ckpt_root / "7"
    own.symlink_to(tiny_checkpoint)
    assert sc.serving_checkpoint(manifest) == own  # a version the sidecar built: its own checkpoint
    with pytest.raises(SidecarError, match="does not match"):
        sc.serving_checkpoint({**manifest, "window": {**meta["window"], "max_turns": 99}})
    sc.settings.checkpoint = None
    with pytest.raises(SidecarError, match="TURNWISE_SIDECAR_CHECKPOINT"):
        sc.serving_checkpoint({**manifest, "version": "8", "source_checkpoint": {"path": "/nowhere"}})


def test_the_sidecar_refuses_a_bundle_that_is_not_a_symlink(tmp_path: Path):
    plain = fake_bundle(tmp_path / "bundle", "1")
    with pytest.raises(SidecarError, match="must be a symlink"):
        Sidecar(SidecarSettings(redis_url="redis://127.0.0.1:1/0", bundle=plain))


class SlowSidecar(StubbedSidecar):
    """A finetune that holds until released, to watch the loop while it runs."""

    started: threading.Event
    release: threading.Event

    def finetune(self, parent: Path, dialogues: list, out: Path, manifest: dict[str, Any], report: Any) -> None:
        self.started.set()
        assert self.release.wait(20)
        super().finetune(parent, dialogues, out, manifest, report)


def wait_for(predicate: Any, what: str, timeout_s: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.redis
def test_run_keeps_consuming_while_a_finetune_runs_and_stops_on_request(redis_server, tmp_path: Path,
                                                                       samples_dir: Path):
    link = models_root(tmp_path)
    sc = SlowSidecar(SidecarSettings(redis_url=redis_server.url, bundle=link, heldout=samples_dir / "dialogues.jsonl",
                                     min_new_labels=4, block_ms=100, cooldown_s=0))
    sc.scores, sc.started, sc.release = {"serving": 0.5, "candidate": 0.5}, threading.Event(), threading.Event()
    sc.serving_checkpoint = lambda manifest: tmp_path  # type: ignore[method-assign]
    seed_calls(redis_server.url, {"call-a": 4, "call-b": 3}, FEEDBACK[:4])
    loop = threading.Thread(target=sc.run)
    loop.start()
    try:
        wait_for(sc.started.is_set, "no finetune started")
        seed_calls(redis_server.url, {}, FEEDBACK[4:])  # arrives while the finetune runs
        wait_for(lambda: sc.ledger.counts().get("joined") == 7, "feedback not consumed during the finetune")
        sc.release.set()
        wait_for(lambda: os.readlink(link) != "1", "nothing published")
        assert sc.ledger.new_labels() == 3  # the 3 that arrived during the attempt wait for the next one
    finally:
        sc.release.set()
        sc.stop()
        loop.join(timeout=20)
    assert not loop.is_alive()
    sc.close()


def test_leftovers_of_a_killed_attempt_are_removed_at_start(tmp_path: Path):
    link = models_root(tmp_path)
    fake_bundle(link.parent / ".candidate-ft-1", "ft-1")
    (link.parent / "..candidate-ft-1.partial-abc").mkdir()
    (link.parent / ".sidecar" / "checkpoints" / ".partial-ft-1").mkdir(parents=True)
    (link.parent / ".image-v1.host").mkdir()  # the chart's init container seeds versions under such names
    Sidecar(SidecarSettings(redis_url="redis://127.0.0.1:1/0", bundle=link))
    assert sorted(p.name for p in link.parent.iterdir()) == [".image-v1.host", ".sidecar", "1", "current"]
    assert list((link.parent / ".sidecar" / "checkpoints").iterdir()) == []
