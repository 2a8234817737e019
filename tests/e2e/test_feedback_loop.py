"""Feedback to a running service becomes a new model version that the service then serves.

A real redis-server, ``turnwise serve`` (uvicorn subprocess) on a tiny bundle behind a ``current``
symlink, turns and label corrections posted over HTTP, one ``turnwise sidecar --once`` (subprocess,
the command the chart runs), and the service hot-reloading the version the sidecar published.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loadtests.stack import service, turnwise_command
from turnwise.dialogue import read_jsonl, write_jsonl

pytestmark = pytest.mark.redis
TASKS = ("intent", "act", "sentiment")


@pytest.fixture
def models(tiny_checkpoint_session: Path, tmp_path: Path) -> Path:
    """``models/1/`` (a tiny bundle exported from a checkpoint that is still on disk) and ``models/current``."""
    from export.cli import run_export

    root = tmp_path / "models"
    run_export(tiny_checkpoint_session, root / "1", ["fp32"], name="tiny", version="1")
    (root / "current").symlink_to("1", target_is_directory=True)
    return root / "current"


def play_calls(client: httpx.Client, dialogues, prefix: str) -> int:
    """Stream the calls turn by turn and correct every turn with its gold labels; returns feedback sent."""
    sent = 0
    assert all(set(TASKS) <= set(t.labels) for d in dialogues for t in d.turns)
    for d in dialogues:
        did = f"{prefix}-{d.dialogue_id}"
        for seq, turn in enumerate(d.turns):
            r = client.post(f"/v1/dialogues/{did}/turns", json={"seq": seq, "speaker": turn.speaker, "text": turn.text})
            assert r.status_code == 200, r.text
            assert r.json()["model"]["version"] == "1"
            for task in TASKS:
                fb = {"dialogue_id": did, "seq": seq, "task": task, "label": turn.labels[task]}
                assert client.post("/v1/feedback", json=fb).status_code == 202
                sent += 1
    return sent


def run_sidecar(env: dict[str, str]) -> dict:
    r = subprocess.run([*turnwise_command(), "sidecar", "--once"], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(r.stdout)


def test_feedback_leads_to_a_new_bundle_version_being_served(models: Path, redis_server, samples_dir: Path,
                                                            tmp_path: Path):
    dialogues = read_jsonl(samples_dir / "dialogues.jsonl")
    heldout = tmp_path / "heldout.jsonl"
    write_jsonl(dialogues[-6:], heldout)
    with service(models, redis_server.url, tmp_path / "service.log", env={"TURNWISE_RELOAD_POLL_S": "0.2"}) as (
            url, ready), httpx.Client(base_url=url, timeout=30) as client:
        assert ready["model"]["version"] == "1"
        calls = dialogues[:3]
        sent = play_calls(client, calls, "e2e")
        # The sidecar reads the stream after all calls, when later turns have pushed early ones out of the
        # window (max_turns): those labels still join, from the window snapshot stored with the feedback.
        max_turns = json.loads((models / "bundle.json").read_text())["window"]["max_turns"]
        trimmed = len(TASKS) * sum(max(0, len(d.turns) - max_turns) for d in calls)
        assert 0 < trimmed < sent
        # A correction for a turn whose call had already ended: no window to store, so the service says
        # so (context "missing") and the sidecar counts it and skips it.
        client.post("/v1/dialogues/e2e-late/turns", json={"seq": 0, "speaker": "customer", "text": "hello"})
        assert client.delete("/v1/dialogues/e2e-late").status_code == 204
        late = client.post("/v1/feedback", json={"dialogue_id": "e2e-late", "seq": 0, "task": "act",
                                                 "label": "inform"})
        assert late.status_code == 202 and late.json()["context"] == "missing"

        env = {"TURNWISE_REDIS_URL": redis_server.url, "TURNWISE_BUNDLE": str(models),
               "TURNWISE_SIDECAR_MIN_NEW_LABELS": "20", "TURNWISE_SIDECAR_HELDOUT": str(heldout),
               "TURNWISE_SIDECAR_MIN_HELDOUT_LABELS": "20", "TURNWISE_SIDECAR_EPOCHS": "1",
               "TURNWISE_SIDECAR_PRECISION": "fp32",
               # A random tiny model's held-out accuracy moves either way after one epoch; the
               # not-worse rule has its own tests (tests/trainer/test_sidecar.py). Here: the loop.
               "TURNWISE_SIDECAR_MAX_REGRESSION": "1.0"}
        report = run_sidecar(env)
        assert report["consumed"] == sent + 1
        assert report["ledger"] == {"joined": sent, "window_missing": 1}
        attempt = report["attempt"]
        assert attempt["decision"] == "published", attempt
        assert attempt["parent_version"] == "1" and attempt["n_train"] == sent
        assert 0 <= attempt["serving_score"] <= 1 and 0 <= attempt["candidate_score"] <= 1
        version = attempt["version"]
        assert os.readlink(models) == version
        assert report["serving_version"] == version

        deadline = time.monotonic() + 60
        while client.get("/readyz").json()["model"]["version"] != version:
            assert time.monotonic() < deadline, "the service never reloaded the published version"
            time.sleep(0.2)
        r = client.post("/v1/dialogues/e2e-after/turns", json={"seq": 0, "speaker": "customer", "text": "thanks!"})
        assert r.status_code == 200 and r.json()["model"]["version"] == version

        again = run_sidecar(env)  # nothing new: no double counting, no second attempt
        assert again["consumed"] == 0 and again["new_labels"] == 0 and again["attempt"] is None
        assert again["ledger"] == report["ledger"]

    state = models.parent / ".sidecar"
    assert (state / "checkpoints" / version / "turnwise.json").exists()  # the parent of the next finetune
    assert json.loads((models / "bundle.json").read_text())["source_checkpoint"]["path"] == str(
        state / "checkpoints" / version)
