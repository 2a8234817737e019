"""Feedback to a running service becomes a new model version that the service then serves.

A real redis-server, ``turnwise serve`` (uvicorn subprocess) on a tiny bundle behind a ``current``
symlink, turns and label corrections posted over HTTP, one ``turnwise sidecar --once`` (subprocess,
the command the chart runs), and the service hot-reloading the version the sidecar published -- or,
when the candidate is really worse on the held-out set, nothing published and the service unchanged.

The serving model's heads ignore the encoder and always give the held-out majority label of each task
(a bias of ``MARGIN`` on it): a real bundle with a known held-out score that a short finetune on a few
labels cannot move, so the regression gate runs with a realistic ``MAX_REGRESSION`` on real scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from loadtests.stack import service, turnwise_command
from sidecar.ledger import FeedbackLedger
from turnwise.dialogue import Dialogue, read_jsonl, write_jsonl
from turnwise.names import BUNDLE_MANIFEST, WEIGHTS_FILE
from turnwise.tasks import TaskSchema

pytestmark = pytest.mark.redis
TASKS = ("intent", "act", "sentiment")
HELDOUT = slice(-6, None)  # of samples/dialogues.jsonl; the calls played are the first ones
MARGIN = 5.0  # logit bias of the favoured label: far beyond what a few finetuning steps move
MAX_REGRESSION = 0.02  # a realistic tolerance: a candidate may lose at most 2 points of held-out accuracy


def majority(dialogues: Sequence[Dialogue], schema: TaskSchema) -> dict[str, int]:
    """Index of each task's most frequent gold label in ``dialogues``."""
    counts = {t: Counter(turn.labels[t] for d in dialogues for turn in d.turns) for t in TASKS}
    return {t: schema[t].labels.index(str(c.most_common(1)[0][0])) for t, c in counts.items()}


def accuracy_of_always(dialogues: Sequence[Dialogue], schema: TaskSchema, favoured: dict[str, int]) -> float:
    """The held-out score (mean accuracy over the tasks) of a model that always says ``favoured``."""
    turns = [turn for d in dialogues for turn in d.turns]
    return sum(sum(turn.labels[t] == schema[t].labels[i] for turn in turns) / len(turns)
               for t, i in favoured.items()) / len(favoured)


def set_heads(ckpt: Path, favoured: dict[str, int]) -> Path:
    """Heads that ignore the encoder: zero weights, bias ``MARGIN`` on the favoured label of each task."""
    state = load_file(str(ckpt / WEIGHTS_FILE))
    for task, index in favoured.items():
        weight = state[f"heads.{task}.weight"]
        state[f"heads.{task}.weight"] = torch.zeros_like(weight)
        state[f"heads.{task}.bias"] = torch.zeros(weight.shape[0])
        state[f"heads.{task}.bias"][index] = MARGIN
    save_file(state, str(ckpt / WEIGHTS_FILE))
    return ckpt


def shift_heads(ckpt: Path) -> Path:
    """The damage: every head's rows rolled by one label (a label order off by one). Same tasks, window
    and tokenizer, so the sidecar accepts it as the serving bundle's checkpoint."""
    state = load_file(str(ckpt / WEIGHTS_FILE))
    for key in [k for k in state if k.startswith("heads.")]:
        state[key] = torch.roll(state[key], 1, dims=0).contiguous()
    save_file(state, str(ckpt / WEIGHTS_FILE))
    return ckpt


@pytest.fixture
def heldout(samples_dir: Path) -> list[Dialogue]:
    return read_jsonl(samples_dir / "dialogues.jsonl")[HELDOUT]


@pytest.fixture
def serving_checkpoint(tiny_checkpoint: Path, heldout: list[Dialogue], sample_schema: TaskSchema) -> Path:
    """The serving model's checkpoint: always the held-out majority label (see the module docstring)."""
    return set_heads(tiny_checkpoint, majority(heldout, sample_schema))


@pytest.fixture
def models(serving_checkpoint: Path, tmp_path: Path) -> Path:
    """``models/1/`` (a tiny bundle exported from a checkpoint that is still on disk) and ``models/current``."""
    from export.cli import run_export

    root = tmp_path / "models"
    run_export(serving_checkpoint, root / "1", ["fp32"], name="tiny", version="1")
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


def sidecar_env(redis_url: str, models: Path, heldout: Path) -> dict[str, str]:
    return {"TURNWISE_REDIS_URL": redis_url, "TURNWISE_BUNDLE": str(models),
            "TURNWISE_SIDECAR_MIN_NEW_LABELS": "20", "TURNWISE_SIDECAR_HELDOUT": str(heldout),
            "TURNWISE_SIDECAR_MIN_HELDOUT_LABELS": "20", "TURNWISE_SIDECAR_EPOCHS": "1",
            "TURNWISE_SIDECAR_PRECISION": "fp32", "TURNWISE_SIDECAR_MAX_REGRESSION": str(MAX_REGRESSION)}


def test_feedback_leads_to_a_new_bundle_version_being_served(models: Path, redis_server, samples_dir: Path,
                                                            tmp_path: Path, sample_schema: TaskSchema):
    dialogues = read_jsonl(samples_dir / "dialogues.jsonl")
    heldout = tmp_path / "heldout.jsonl"
    write_jsonl(dialogues[HELDOUT], heldout)
    expected = accuracy_of_always(dialogues[HELDOUT], sample_schema, majority(dialogues[HELDOUT], sample_schema))
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

        # The honest candidate (finetuned on correct labels) keeps the serving model's answers: not worse.
        env = sidecar_env(redis_server.url, models, heldout)
        report = run_sidecar(env)
        assert report["consumed"] == sent + 1
        assert report["ledger"] == {"joined": sent, "window_missing": 1}
        attempt = report["attempt"]
        assert attempt["decision"] == "published", attempt
        assert attempt["parent_version"] == "1" and attempt["n_train"] == sent
        assert attempt["serving_score"] == pytest.approx(expected)  # the real held-out score of bundle 1
        assert attempt["candidate_score"] >= attempt["serving_score"] - MAX_REGRESSION
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


def test_a_really_worse_candidate_is_rejected_and_nothing_is_published(
        models: Path, serving_checkpoint: Path, redis_server, samples_dir: Path, tmp_path: Path,
        sample_schema: TaskSchema):
    """The sidecar is pointed at a damaged seed checkpoint (TURNWISE_SIDECAR_CHECKPOINT: heads rolled by
    one label), so its candidate scores far below the serving bundle on the held-out set: the real scores
    go through the gate with a realistic MAX_REGRESSION, and the served version stays."""
    dialogues = read_jsonl(samples_dir / "dialogues.jsonl")
    heldout = tmp_path / "heldout.jsonl"
    write_jsonl(dialogues[HELDOUT], heldout)
    favoured = majority(dialogues[HELDOUT], sample_schema)
    serving_expected = accuracy_of_always(dialogues[HELDOUT], sample_schema, favoured)
    shifted = {t: (i + 1) % sample_schema[t].num_labels for t, i in favoured.items()}
    candidate_expected = accuracy_of_always(dialogues[HELDOUT], sample_schema, shifted)
    assert serving_expected - candidate_expected > 10 * MAX_REGRESSION  # really worse, not noise
    damaged = shift_heads(Path(shutil.copytree(serving_checkpoint, tmp_path / "damaged-ckpt")))
    before = sorted(p.name for p in models.parent.iterdir())

    with service(models, redis_server.url, tmp_path / "service.log", env={"TURNWISE_RELOAD_POLL_S": "0.2"}) as (
            url, ready), httpx.Client(base_url=url, timeout=30) as client:
        assert ready["model"]["version"] == "1"
        sent = play_calls(client, dialogues[:3], "worse")
        report = run_sidecar({**sidecar_env(redis_server.url, models, heldout),
                              "TURNWISE_SIDECAR_CHECKPOINT": str(damaged)})
        attempt = report["attempt"]
        assert attempt["decision"] == "rejected", attempt
        assert attempt["parent_version"] == "1" and attempt["n_train"] == sent
        assert attempt["serving_score"] == pytest.approx(serving_expected)  # both are real held-out scores
        assert attempt["candidate_score"] == pytest.approx(candidate_expected)
        assert attempt["candidate_score"] < attempt["serving_score"] - MAX_REGRESSION
        assert report["serving_version"] == "1"

        # Nothing published: the link, the version directories and what the service serves are unchanged.
        assert os.readlink(models) == "1"
        assert json.loads((models / BUNDLE_MANIFEST).read_text())["version"] == "1"
        assert sorted(p.name for p in models.parent.iterdir()) == sorted([*before, ".sidecar"])
        time.sleep(1.0)  # five reload polls
        assert client.get("/readyz").json()["model"]["version"] == "1"
        r = client.post("/v1/dialogues/worse-after/turns", json={"seq": 0, "speaker": "customer", "text": "thanks!"})
        assert r.status_code == 200 and r.json()["model"]["version"] == "1"

    state = models.parent / ".sidecar"
    assert not (state / "checkpoints" / str(attempt["version"])).exists()  # the rejected checkpoint is gone
    assert not list(models.parent.glob(".candidate-*"))
    ledger = FeedbackLedger(state / "feedback.sqlite3")
    try:
        (recorded,) = ledger.attempts()
        assert recorded.decision == "rejected" and recorded.version == attempt["version"]
        assert (recorded.serving_score, recorded.candidate_score) == (attempt["serving_score"],
                                                                      attempt["candidate_score"])
        assert "worse than the serving model" in recorded.detail
        assert ledger.new_labels() == 0  # offered once: the same labels do not trigger another attempt
    finally:
        ledger.close()
