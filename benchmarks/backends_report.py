"""The backend benchmark's results: the machine and library versions, one row per (backend, batch, seq)
cell against ``torch_fp32``, the results file (``backends.json``) with its decision, and ``backends.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.backends_decision import decide, flops_per_sequence
from benchmarks.backends_runners import Timed, omp_wait_policy
from turnwise.machine import cpu_flags, cpu_name, loadavg

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")


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


def cells_of(results: dict[str, Timed], art: dict[str, Any], backends: list[str], batches: tuple[int, ...],
             seqs: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per (seq, batch, backend): latency, throughput, GFLOP/s, speed-up and max |Δ| vs torch_fp32."""
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
    return cells


def build_result(*, quick: bool, started: float, threads: int, before: list[float], budget: float, min_reps: int,
                 batches: tuple[int, ...], seqs: tuple[int, ...], art: dict[str, Any], cells: list[dict[str, Any]],
                 gpu_info: dict[str, dict[str, Any]], gpu: dict[str, bool]) -> dict[str, Any]:
    """The results file: machine, timing method, shapes, model, every cell, GPU status, parity, the decision."""
    res = {
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "quick": quick,
        "duration_s": time.perf_counter() - started,
        "hardware": hardware(threads),
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
    return res


def write_results(out: Path, res: dict[str, Any]) -> str:
    """``backends.json`` and ``backends.md`` in ``out`` (``backends-quick.*`` for ``--quick``); returns the stem."""
    out.mkdir(parents=True, exist_ok=True)
    stem = "backends-quick" if res["quick"] else "backends"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(res), encoding="utf-8")
    return stem


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
