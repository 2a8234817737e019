"""The publish-only-if-not-worse rule and the atomic publish."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from sidecar_helpers import fake_bundle, models_root

from sidecar.errors import SidecarError
from sidecar.publish import publish_bundle, should_publish, swap_link
from turnwise.names import BUNDLE_MANIFEST


def test_should_publish_only_if_not_worse():
    assert should_publish(0.80, 0.81)
    assert should_publish(0.80, 0.80)  # equal is not worse
    assert not should_publish(0.80, 0.79)
    assert should_publish(0.80, 0.79, max_regression=0.02)
    assert not should_publish(0.80, 0.77, max_regression=0.02)


def test_publish_moves_the_candidate_and_repoints_the_link(tmp_path: Path):
    link = models_root(tmp_path)
    cand = fake_bundle(link.parent / ".candidate-2", "2")
    final = publish_bundle(cand, link, "2")
    assert final == link.parent / "2" and not cand.exists()
    assert os.readlink(link) == "2"  # relative: valid wherever the volume is mounted
    assert json.loads((link / BUNDLE_MANIFEST).read_text())["version"] == "2"
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
                seen.add(json.loads((link / BUNDLE_MANIFEST).read_text())["version"])
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


def test_a_streaming_parent_is_finetuned_into_a_streaming_checkpoint(tiny_stream_checkpoint: Path,
                                                                     tiny_stream_bundle: Path, samples_dir: Path,
                                                                     tmp_path: Path):
    """The candidate keeps the serving bundle's window: a turn-causal bundle gets a turn-causal model."""
    import time

    from sidecar.ledger import AttemptReport
    from sidecar.publish import finetune_checkpoint
    from sidecar.settings import SidecarSettings
    from turnwise.dialogue import read_jsonl

    manifest = json.loads((tiny_stream_bundle / "bundle.json").read_text())
    out = tmp_path / "candidate"
    settings = SidecarSettings(epochs=1, max_steps=2, precision="fp32")
    finetune_checkpoint(tiny_stream_checkpoint, read_jsonl(samples_dir / "dialogues.jsonl")[:6], out, manifest,
                        AttemptReport(decision="started", started_at=time.time(), watermark=0), settings,
                        work=tmp_path / "work", should_stop=lambda: False)
    meta = json.loads((out / "turnwise.json").read_text())
    assert meta["window"] == manifest["window"] and meta["window"]["format"] == "turn-causal-v1"
