"""`turnwise train` under torchrun: two CPU processes (gloo), one shard of the dialogues each.

The ranks must end with identical weights (DDP averages the gradients every step), take exactly the
number of optimizer steps the plan promises, and a run killed mid-way must resume to the same weights
as one that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import load_training_state
from turnwise.dialogue import read_jsonl

EPOCHS = 3


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists():
        pytest.skip("torchrun not installed beside this Python")
    return [str(exe), "--standalone", "--nproc-per-node", "2", "--no-python",
            str(Path(sys.executable).with_name("turnwise"))]


@pytest.fixture(scope="module")
def data(tmp_path_factory, samples_dir):
    d = tmp_path_factory.mktemp("ddp-data")
    lines = (samples_dir / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    (d / "val.jsonl").write_text("\n".join(lines[10:12]) + "\n", encoding="utf-8")
    return d


def train_args(data: Path, backbone: Path, samples_dir: Path, out: Path) -> list[str]:
    # a token budget below any span's length: every span is a batch of its own, so the expected step
    # count is easy to state
    return ["train", "--data", str(data / "train.jsonl"), "--val", str(data / "val.jsonl"), "--tasks",
            str(samples_dir / "tasks.yaml"), "--objective", "none", "--backbone", str(backbone),
            "--encoder", "streaming", "--token-budget", "16", "--finetune-epochs", str(EPOCHS),
            "--precision", "fp32", "--lr", "1e-3", "--save-every", "2", "--out", str(out)]


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    e.pop("WORLD_SIZE", None)
    return e


def expected_steps(train_path: Path) -> int:
    """Each sample dialogue fits one 512-token span; rank r gets the dialogues with index % 2 == r;
    with one span per batch an epoch lasts as long as the larger shard."""
    n = len(read_jsonl(train_path))
    return EPOCHS * max(len(range(r, n, 2)) for r in range(2))


def test_two_ranks_end_with_identical_weights_after_the_planned_steps(tmp_path, data, tiny_backbone, samples_dir):
    out = tmp_path / "ck"
    res = subprocess.run([*torchrun(), *train_args(data, tiny_backbone, samples_dir, out)], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "turnwise.json").read_text())
    world = meta["distributed"]
    assert world["world_size"] == 2 and world["backend"] == "gloo"
    assert len(world["weight_sha256"]) == 2 and world["weight_sha256"][0] == world["weight_sha256"][1]
    state = load_training_state(out)
    steps = expected_steps(data / "train.jsonl")
    assert state["step"] == steps and state["finished"]
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {steps}  # the optimizer really stepped that often (no skipped or extra steps)
    summary = json.loads(res.stdout[res.stdout.index("{"):])  # rank 0 alone reports
    assert summary["steps"] == steps and res.stdout.count('"checkpoint"') == 1


def test_a_killed_distributed_run_resumes_to_the_same_weights(tmp_path, data, tiny_backbone, samples_dir):
    full, part = tmp_path / "full", tmp_path / "part"
    ok = subprocess.run([*torchrun(), *train_args(data, tiny_backbone, samples_dir, full)], env=env(),
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]

    proc = subprocess.Popen([*torchrun(), *train_args(data, tiny_backbone, samples_dir, part)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                st = load_training_state(part)
            except Exception:
                st = None
            if st is not None and st["step"] >= 2 and not st["finished"]:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = st["step"]
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed"
    res = subprocess.run([*torchrun(), *train_args(data, tiny_backbone, samples_dir, part)], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 2
    a, b = load_training_state(full)["model"], load_training_state(part)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_flat_ranks_agree_when_one_shard_has_no_gold_turns(tmp_path, data, tiny_backbone, samples_dir):
    """One gold dialogue in all: one rank's shard has none, re-uses the other's, and nothing hangs."""
    out = tmp_path / "flat"
    args = train_args(data, tiny_backbone, samples_dir, out)
    args[args.index("streaming")] = "flat"
    args += ["--gold-fraction", "0.1", "--batch-size", "4", "--max-tokens", "48"]
    res = subprocess.run([*torchrun(), *args], env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    world = json.loads((out / "turnwise.json").read_text())["distributed"]
    assert world["weight_sha256"][0] == world["weight_sha256"][1]
    assert json.loads((out / "turnwise.json").read_text())["gold_dialogues"] == 1
