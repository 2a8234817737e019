"""Backend benchmark: which engine should serve the student on this machine?

``python -m benchmarks.backends`` (``make bench``) builds the real MiniLM-L6 student
(``trainer.model.build_model("minilm", schema)``; untrained heads cost the same as trained ones),
exports it with the real exporter into a temporary bundle, and times on identical inputs:

- ``torch_fp32``           PyTorch eager, float32 (the reference every ratio is taken against)
- ``torch_bf16_autocast``  PyTorch eager under ``torch.autocast("cpu", dtype=torch.bfloat16)``
- ``ort_fp32_raw``         ONNX Runtime on the raw traced graph (ORT's default session optimizations only)
- ``ort_fp32_optimized``   ONNX Runtime on the bundle's fp32 graph (offline transformer fusions)
- ``ort_int8``             ONNX Runtime on the bundle's int8 graph (dynamic quantization)
- ``ort_cuda_fp16`` / ``ort_tensorrt_fp16``  only where onnxruntime has those providers (else recorded skipped)

for batch 1, 8, 32 x sequence 64, 128, 256 (every token real: attention_mask all ones). Per cell: median
and p90 latency, throughput (sequences/s), achieved GFLOP/s and the speed-up over ``torch_fp32``; each
backend's logits are also compared with ``torch_fp32`` on the same batch.

FLOPs (multiply-add = 2 FLOPs), per sequence of T tokens for a BERT encoder with L layers, hidden H,
FFN width I, plus heads with C logits in total:

    F(T) = L * (8*T*H^2 + 4*T*H*I + 4*T^2*H) + 2*H*C
           ^ Q,K,V,O projections  ^ FFN in+out  ^ QK^T and AV

i.e. 2 x (non-embedding weight count) x T plus the attention terms. Embedding lookups, LayerNorm,
softmax, GELU and bias adds are ignored (< 2 % here). MiniLM-L6 (L=6, H=384, I=1536) at T=128:
~2.87 GFLOP per sequence.

Timing: each backend runs in its own process (PyTorch's OpenMP pool and ORT's thread pool both
spin-wait after a call; in one process they steal each other's cores). One warm-up call, then
repetitions until ``--budget`` seconds and at least ``--min-reps`` calls per cell. Threads:
``--threads`` (default: all cores) for both PyTorch and ORT intra-op pools.
The machine's load average is recorded before and after: other processes on a shared machine inflate
latencies, and the numbers are only as good as that.

Decision: ``preferred_variant["cpu"]`` is the bundle variant (fp32 = the optimized graph, or int8)
with the best geometric-mean speed-up over all cells; the exporter copies it into bundle.json and the
loader's ``variant="auto"`` follows it. If a PyTorch backend is fastest overall, that is reported too
(``fastest_backend``) — a bundle carries no PyTorch weights, so serving it would be a service change.
GPU providers default to fp16 unless measured here.

``--quick`` runs a tiny random BERT on two small shapes (seconds) and writes ``backends-quick.*`` so
that it never decides the default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.bundles import SAMPLE_TASKS, backbone_for, untrained_checkpoint
from harness.machine import cpu_flags, cpu_name, loadavg
from turnwise.names import ONNX_INPUTS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BATCHES = (1, 8, 32)
SEQS = (64, 128, 256)
CPU_BACKENDS = ("torch_fp32", "torch_bf16_autocast", "ort_fp32_raw", "ort_fp32_optimized", "ort_int8")
GPU_BACKENDS = {"ort_cuda_fp16": "CUDAExecutionProvider", "ort_tensorrt_fp16": "TensorrtExecutionProvider"}
# Which bundle variant a measured ORT backend is (the bundle's fp32 file is the optimized graph).
BUNDLE_VARIANT = {"ort_fp32_optimized": "fp32", "ort_int8": "int8"}
INPUTS = ONNX_INPUTS
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


# --------------------------------------------------------------------------- environment

def hardware(threads: int) -> dict[str, Any]:
    import torch

    flags = set(cpu_flags(prefixes=None))
    bf16_onednn = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "threads_used": threads,
        "flags": {f: f in flags for f in FLAGS},
        "amx": "amx_bf16" in flags,
        "torch_onednn_bf16_supported": bf16_onednn,
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("torch", "onnxruntime", "onnx", "transformers", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --------------------------------------------------------------------------- FLOPs

def flops_per_sequence(arch: dict[str, Any], seq: int, n_logits: int) -> float:
    """F(T) = L*(8*T*H^2 + 4*T*H*I + 4*T^2*H) + 2*H*C (see the module docstring)."""
    layers, h, i = arch["num_layers"], arch["hidden_size"], arch["intermediate_size"]
    return layers * (8 * seq * h * h + 4 * seq * h * i + 4 * seq * seq * h) + 2 * h * n_logits


# --------------------------------------------------------------------------- backends

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


# --------------------------------------------------------------------------- artifacts

def build_artifacts(work: Path, quick: bool, gpu: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Student checkpoint -> bundle (the real exporter) + the raw graph; returns paths and metadata."""
    from export.onnx_export import TurnwiseOnnxConfig, default_tolerances, export_raw
    from export.parity import Tolerance
    from export.pipeline import ExportOptions, export_bundle
    from export.quantize import DEFAULT_PRESET
    from trainer.checkpoint import load_checkpoint
    from turnwise.tasks import load_tasks

    schema = load_tasks(SAMPLE_TASKS)
    backbone = backbone_for("tiny" if quick else "minilm", work / "tiny-backbone")
    say(f"building the student ({'tiny random BERT' if quick else 'MiniLM-L6'})")
    ckpt_dir = untrained_checkpoint(work / "ckpt", backbone, name="bench", version="0", schema=schema)
    # int8/fp16 label agreement is recorded but not gated: the heads are untrained (near-tied logits),
    # so agreement would measure their margins, not the engine. fp32 keeps its strict 1e-4 gate.
    tols = default_tolerances()
    tols["int8"] = Tolerance(max_abs_diff=None, min_label_agreement=None)
    tols["fp16"] = Tolerance(max_abs_diff=None, min_label_agreement=None)
    variants = ("fp32", "int8", "fp16") if gpu else ("fp32", "int8")
    say("exporting the bundle (fp32 optimized, int8" + (", fp16)" if gpu else ")"))
    result = export_bundle(ckpt_dir, work / "bundle",
                           ExportOptions(variants=variants, tolerances=tols, quantization=DEFAULT_PRESET,
                                         bench_results=None, max_probes=64 if quick else 1024))
    ckpt = load_checkpoint(ckpt_dir)
    raw = export_raw(ckpt.model, work / "model.raw.onnx", TurnwiseOnnxConfig(tasks=tuple(schema.names())))
    m = result.manifest
    return {
        "tokenizer": ckpt.tokenizer,
        "arch": m["architecture"],
        "n_logits": sum(len(t["labels"]) for t in m["tasks"].values()),
        "files": {"ort_fp32_raw": raw, "ort_fp32_optimized": work / "bundle" / m["variants"]["fp32"],
                  "ort_int8": work / "bundle" / m["variants"]["int8"],
                  **({"fp16": work / "bundle" / m["variants"]["fp16"]} if gpu else {})},
        "parity": {v: {k: rec[k] for k in ("max_abs_diff", "min_label_agreement", "outputs", "measured_on")}
                   | {"windows": rec["probe"]["windows"]} for v, rec in m["parity"].items()},
        "quantization": m["graphs"]["int8"]["settings"]["preset"],
        "fused": m["graphs"]["fp32"]["settings"].get("fused", {}),
        "backbone": backbone if not quick else "tiny random BERT (quick)",
    }


# --------------------------------------------------------------------------- decision

def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def decide(cells: list[dict[str, Any]], gpu_measured: dict[str, bool]) -> dict[str, Any]:
    speedups: dict[str, list[float]] = {}
    for c in cells:
        if c.get("speedup_vs_torch_fp32") is not None:
            speedups.setdefault(c["backend"], []).append(c["speedup_vs_torch_fp32"])
    score = {b: round(geomean(v), 3) for b, v in speedups.items()}
    cpu_candidates = {b: s for b, s in score.items() if b in BUNDLE_VARIANT}
    best_cpu = max(cpu_candidates, key=cpu_candidates.__getitem__) if cpu_candidates else None
    fastest = max(score, key=score.__getitem__) if score else None
    per_batch: dict[str, str] = {}
    for batch in sorted({c["batch"] for c in cells}):
        sub = [c for c in cells if c["batch"] == batch and c["backend"] in BUNDLE_VARIANT]
        agg: dict[str, list[float]] = {}
        for c in sub:
            agg.setdefault(c["backend"], []).append(c["speedup_vs_torch_fp32"])
        if agg:
            per_batch[str(batch)] = BUNDLE_VARIANT[max(agg, key=lambda b: geomean(agg[b]))]
    preferred = {"cpu": BUNDLE_VARIANT[best_cpu] if best_cpu else "fp32", "cuda": "fp16", "tensorrt": "fp16"}
    return {
        "geomean_speedup_vs_torch_fp32": score,
        "fastest_backend": fastest,
        "preferred_variant": preferred,
        "preferred_variant_by_batch": {"cpu": per_batch},
        "gpu_preference_measured": gpu_measured,
        "rule": "cpu: the bundle variant (fp32 = optimized graph, int8) with the best geometric-mean speed-up "
                "over torch_fp32 across all cells; cuda/tensorrt: fp16 unless measured otherwise",
    }


# --------------------------------------------------------------------------- report

def markdown(res: dict[str, Any]) -> str:
    hw, dec = res["hardware"], res["decision"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in hw["flags"].items())
    lines = [
        f"# Backend benchmark — {res['model']['backbone']}",
        "",
        f"Run {res['created_at']} with `python -m benchmarks.backends{' --quick' if res['quick'] else ''}` "
        f"({res['duration_s']:.0f} s).",
        "",
        f"- CPU: {hw['cpu']} ({hw['machine']}), {hw['logical_cpus']} logical CPUs, {hw['threads_used']} threads used",
        f"- Flags: {flags}; oneDNN bf16 supported by torch: {hw['torch_onednn_bf16_supported']}",
        f"- Load average (1/5/15 min) before: {res['loadavg']['before']}, after: {res['loadavg']['after']} "
        "(other processes on the machine inflate latencies)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
        f"- Model: {res['model']['arch']['num_layers']} layers, hidden {res['model']['arch']['hidden_size']}, "
        f"FFN {res['model']['arch']['intermediate_size']}; fused ops in the fp32 graph: {res['model']['fused']}; "
        f"int8 preset: `{res['model']['quantization']['name']}` "
        f"(per_channel={res['model']['quantization']['per_channel']})",
        "- FLOPs per sequence: L*(8*T*H^2 + 4*T*H*I + 4*T^2*H) + 2*H*C; GFLOP/s = batch * F(T) / median latency",
        f"- Timing: one process per backend, OMP_WAIT_POLICY={res['timing']['omp_wait_policy']}; warm-up 1, then "
        f">= {res['timing']['min_reps']} reps and >= {res['timing']['budget_s']} s per cell; median latency; "
        "throughput = batch / median",
        "",
        "| batch | seq | backend | median ms | p90 ms | seq/s | GFLOP/s | × torch fp32 | max abs Δ vs torch fp32 |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in res["cells"]:
        if c.get("skipped"):
            continue
        lines.append(
            f"| {c['batch']} | {c['seq']} | {c['backend']} | {c['median_ms']:.2f} | {c['p90_ms']:.2f} | "
            f"{c['throughput_seq_s']:.1f} | {c['gflops_per_s']:.1f} | {c['speedup_vs_torch_fp32']:.2f} | "
            f"{c['max_abs_diff_vs_torch_fp32']:.2e} |")
    lines += ["", "## Summary", "", "| backend | geometric-mean speed-up vs torch fp32 |", "| --- | ---: |"]
    for b, s in dec["geomean_speedup_vs_torch_fp32"].items():
        lines.append(f"| {b} | {s:.2f} |")
    lines += [
        "",
        f"- Fastest backend overall: `{dec['fastest_backend']}`",
        f"- **preferred_variant: {dec['preferred_variant']}** (written into bundle.json by `turnwise export`; "
        "`load_bundle(variant=\"auto\")` follows it)",
        f"- Best bundle variant per batch size (CPU): {dec['preferred_variant_by_batch']['cpu']}",
        f"- Rule: {dec['rule']}",
        "",
        "## GPU (fp16)",
        "",
    ]
    for name, info in res["gpu"].items():
        status = "measured (rows above)" if info.get("measured") else f"skipped — {info['reason']}"
        lines.append(f"- {name}: {status}")
    lines += ["", "## Parity of the benchmarked bundle (untrained heads; informational)", "",
              "| variant | probe windows | max abs logit diff | min label agreement | measured on |",
              "| --- | ---: | ---: | ---: | --- |"]
    for v, p in res["parity"].items():
        lines.append(f"| {v} | {p['windows']} | {p['max_abs_diff']:.3g} | {p['min_label_agreement']:.4f} | "
                     f"{p['measured_on']['device']} |")
    lines += ["", "Label agreement of untrained heads measures their (near-tied) margins more than the "
              "engine; real bundles are gated at >= 99 % by the exporter.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- workers

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


def run_worker(name: str, work: Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    import subprocess

    env = {**os.environ, "OMP_WAIT_POLICY": omp_wait_policy()}
    subprocess.run([sys.executable, "-m", "benchmarks.backends", "--worker", name, "--work", str(work)],
                   cwd=REPO, check=True, env=env)
    timings = json.loads((work / f"timings-{name}.json").read_text(encoding="utf-8"))
    with np.load(work / f"out-{name}.npz") as z:
        outputs = {k: z[k] for k in z.files}
    return timings, outputs


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random BERT, two shapes, seconds")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per cell (default 1.5; quick 0.2)")
    ap.add_argument("--min-reps", type=int, default=None, help="minimum timed calls per cell (default 3; quick 2)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.work)
        return 0

    import onnxruntime as ort
    from rich.console import Console

    console = Console(stderr=True)
    say = console.log
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 1.5)
    min_reps = args.min_reps if args.min_reps is not None else (2 if args.quick else 3)
    batches, seqs = ((1, 8), (64,)) if args.quick else (BATCHES, SEQS)
    available = ort.get_available_providers()
    gpu = {name: prov in available for name, prov in GPU_BACKENDS.items()}
    backends = [*CPU_BACKENDS, *(name for name, ok in gpu.items() if ok)]

    started = time.perf_counter()
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="turnwise-bench-") as tmp:
        work = Path(tmp)
        art = build_artifacts(work, args.quick, any(gpu.values()), say)
        tok = art["tokenizer"]
        shared = {
            "work": str(work), "ckpt": str(work / "ckpt"), "files": {k: str(v) for k, v in art["files"].items()},
            "vocab": int(art["arch"]["vocab_size"]), "cls_id": tok.cls_token_id, "sep_id": tok.sep_token_id,
            "config": {"threads": args.threads, "budget": budget, "min_reps": min_reps,
                       "batches": list(batches), "seqs": list(seqs)},
        }
        (work / "artifacts.json").write_text(json.dumps(shared), encoding="utf-8")
        results: dict[str, tuple[list[dict[str, Any]], dict[str, np.ndarray]]] = {}
        for i, name in enumerate(backends, 1):
            say(f"[{i}/{len(backends)}] timing {name} over {len(batches) * len(seqs)} shapes")
            results[name] = run_worker(name, work)

    ref_t, ref_out = results["torch_fp32"]
    ref_median = {(t["batch"], t["seq"]): t["median_s"] for t in ref_t}
    cells: list[dict[str, Any]] = []
    for seq in seqs:
        for batch in batches:
            flops = batch * flops_per_sequence(art["arch"], seq, art["n_logits"])
            for name in backends:
                timings, outs = results[name]
                t = next(x for x in timings if x["batch"] == batch and x["seq"] == seq)
                keys = [k for k in ref_out if k.startswith(f"{batch}x{seq}:")]
                diff = max(float(np.abs(outs[k].astype(np.float64) - ref_out[k]).max()) for k in keys)
                cells.append({
                    "backend": name, "batch": batch, "seq": seq,
                    "median_ms": t["median_s"] * 1e3, "p90_ms": t["p90_s"] * 1e3, "min_ms": t["min_s"] * 1e3,
                    "reps": t["reps"],
                    "throughput_seq_s": batch / t["median_s"],
                    "gflop_per_call": flops / 1e9,
                    "gflops_per_s": flops / t["median_s"] / 1e9,
                    "speedup_vs_torch_fp32": ref_median[(batch, seq)] / t["median_s"],
                    "max_abs_diff_vs_torch_fp32": diff,
                })
    gpu_info = {name: ({"measured": True} if ok else
                       {"measured": False, "reason": f"{GPU_BACKENDS[name]} not in this onnxruntime build "
                                                     f"(available: {', '.join(available)})"})
                for name, ok in gpu.items()}
    res = {
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "quick": args.quick,
        "duration_s": time.perf_counter() - started,
        "hardware": hardware(args.threads),
        "versions": versions(),
        "loadavg": {"before": before, "after": loadavg()},
        "timing": {"budget_s": budget, "min_reps": min_reps, "warmup": 1, "isolation": "one process per backend",
                   "omp_wait_policy": omp_wait_policy()},
        "shapes": {"batches": list(batches), "seqs": list(seqs)},
        "model": {"backbone": art["backbone"], "arch": art["arch"], "fused": art["fused"],
                  "quantization": art["quantization"]},
        "flops_formula": "L*(8*T*H^2 + 4*T*H*I + 4*T^2*H) + 2*H*C per sequence",
        "cells": cells,
        "gpu": gpu_info,
        "parity": art["parity"],
    }
    res["decision"] = decide(cells, {k: bool(v) for k, v in gpu.items()})
    res["preferred_variant"] = res["decision"]["preferred_variant"]
    res["fastest_backend"] = res["decision"]["fastest_backend"]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "backends-quick" if args.quick else "backends"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(res), encoding="utf-8")
    console.print(markdown(res))
    say(f"wrote {args.out / (stem + '.json')} and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
