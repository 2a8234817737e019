"""The sidecar's attempt logic (finetune, export and evaluation stubbed: see tests/e2e for real ones),
the serving checkpoint's resolution, the loop consuming while a finetune runs, and the cleanup of a
killed attempt."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from sidecar_helpers import FEEDBACK, StubbedSidecar, fake_bundle, models_root, seed_calls, stubbed_sidecar, wait_for

from sidecar.errors import SidecarError
from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings
from turnwise.names import BUNDLE_MANIFEST, CHECKPOINT_META


def test_a_worse_candidate_is_not_published(tmp_path: Path, samples_dir: Path):
    sc = stubbed_sidecar(tmp_path, samples_dir, {"serving": 0.70, "candidate": 0.65})
    attempt = sc.attempt()
    assert attempt.decision == "rejected", attempt
    assert (attempt.serving_score, attempt.candidate_score) == (0.70, 0.65)
    assert os.readlink(sc.link) == "1"
    assert sorted(p.name for p in sc.root.iterdir()) == [".sidecar", "1", "current"]  # candidate removed
    assert not (sc.ckpt_root / str(attempt.version)).exists()  # and its checkpoint
    assert sc.ledger.new_labels() == 0  # those labels were offered: wait for min_new_labels new ones
    (recorded,) = sc.ledger.attempts()
    assert (recorded.decision, recorded.serving_score, recorded.candidate_score) == ("rejected", 0.70, 0.65)


def test_a_candidate_that_is_not_worse_is_published(tmp_path: Path, samples_dir: Path):
    sc = stubbed_sidecar(tmp_path, samples_dir, {"serving": 0.70, "candidate": 0.70})
    attempt = sc.attempt()
    assert attempt.decision == "published", attempt
    assert os.readlink(sc.link) == attempt.version
    assert json.loads((sc.link / BUNDLE_MANIFEST).read_text())["version"] == attempt.version
    assert (sc.ckpt_root / str(attempt.version) / CHECKPOINT_META).exists()  # the next parent checkpoint
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
