"""The backend benchmark's timing: inputs, a runner per backend (PyTorch eager, ONNX Runtime on CPU or a
GPU provider), the timed cell, and the worker process each backend is timed in alone.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from turnwise.names import ONNX_INPUTS

REPO = Path(__file__).resolve().parents[1]
INPUTS = ONNX_INPUTS

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
Timed = tuple[list[dict[str, Any]], dict[str, np.ndarray]]  # one worker's timings and outputs (run_worker)


def make_inputs(batch: int, seq: int, vocab: int, cls_id: int, sep_id: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1000 * batch + seq)
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def torch_runner(model: Any, bf16: bool) -> Runner:
    import torch

    model.eval()

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(feed[k]) for k in INPUTS]
        with torch.inference_mode():
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = model(*args)
            else:
                out = model(*args)
        return [t.float().numpy() for t in out]

    return run


def ort_runner(path: Path, threads: int, providers: list[Any] | None = None) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=providers or ["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, {n: feed[n] for n in names})

    return run


def time_cell(run: Runner, feed: dict[str, np.ndarray], budget_s: float, min_reps: int,
              max_reps: int) -> tuple[dict[str, float], list[np.ndarray]]:
    out = run(feed)  # warm-up: allocations, oneDNN primitive creation, ORT arena growth
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        out = run(feed)
        times.append(time.perf_counter() - t0)
    times.sort()
    stats = {"median_s": statistics.median(times), "p90_s": times[min(len(times) - 1, int(0.9 * len(times)))],
             "min_s": times[0], "reps": len(times)}
    return stats, out


def _runner_for(name: str, art: dict[str, Any], threads: int) -> Runner:
    if name.startswith("torch_"):
        import torch

        from trainer.checkpoint import load_checkpoint

        torch.set_num_threads(threads)
        return torch_runner(load_checkpoint(art["ckpt"]).model, bf16=name == "torch_bf16_autocast")
    if name == "ort_cuda_fp16":
        return ort_runner(Path(art["files"]["fp16"]), threads, [("CUDAExecutionProvider", {}), "CPUExecutionProvider"])
    if name == "ort_tensorrt_fp16":
        cache = Path(art["work"]) / "trt"
        cache.mkdir(exist_ok=True)
        return ort_runner(Path(art["files"]["fp16"]), threads, [
            ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                           "trt_engine_cache_path": str(cache)}),
            ("CUDAExecutionProvider", {}), "CPUExecutionProvider"])
    return ort_runner(Path(art["files"][name]), threads)


def worker(name: str, work: Path) -> None:
    """Time one backend over every cell in this process alone; outputs go to files in ``work``.

    One process per backend: thread pools of PyTorch (OpenMP) and ONNX Runtime spin-wait after each
    call, so two engines in one process steal each other's cores and distort both.
    """
    art = json.loads((work / "artifacts.json").read_text(encoding="utf-8"))
    cfg = art["config"]
    run = _runner_for(name, art, cfg["threads"])
    timings, outputs = [], {}
    for seq in cfg["seqs"]:
        for batch in cfg["batches"]:
            feed = make_inputs(batch, seq, art["vocab"], art["cls_id"], art["sep_id"])
            stats, out = time_cell(run, feed, cfg["budget"], cfg["min_reps"], max_reps=200)
            timings.append({"batch": batch, "seq": seq, **stats})
            for i, o in enumerate(out):
                outputs[f"{batch}x{seq}:{i}"] = np.asarray(o, dtype=np.float32)
    np.savez(work / f"out-{name}.npz", **outputs)  # type: ignore[arg-type]  # numpy stubs: keys vs allow_pickle
    (work / f"timings-{name}.json").write_text(json.dumps(timings), encoding="utf-8")


def omp_wait_policy() -> str:
    # PyTorch's CPU wheels use GNU OpenMP, whose threads spin at every barrier. When the cores are
    # shared (other processes, a container CPU quota), a spinning barrier waits for a descheduled
    # thread: a 2-layer toy BERT went from 0.9 ms to 240 ms per call on this 2-core machine at load 5.
    # PASSIVE is what a shared serving host should use; set OMP_WAIT_POLICY yourself to override.
    return os.environ.get("OMP_WAIT_POLICY", "PASSIVE")


def run_worker(name: str, work: Path) -> Timed:
    import subprocess

    env = {**os.environ, "OMP_WAIT_POLICY": omp_wait_policy()}
    subprocess.run([sys.executable, "-m", "benchmarks.backends", "--worker", name, "--work", str(work)],
                   cwd=REPO, check=True, env=env)
    timings = json.loads((work / f"timings-{name}.json").read_text(encoding="utf-8"))
    with np.load(work / f"out-{name}.npz") as z:
        outputs = {k: z[k] for k in z.files}
    return timings, outputs

