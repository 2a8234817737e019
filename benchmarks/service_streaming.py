"""The service benchmark's streaming runs: turnwise serving the turn-causal-v1 MiniLM bundle (int8 over
REST and WebSocket in one server process, then fp32 over REST), against the same redis-server as the
flat runs, and what the results file says about them.

Each turn of a call is one ONNX step over only its own tokens, attending to the call's cached
keys/values (``TURNWISE_STATE_CACHE_MB``); a new call, an evicted state or a re-anchor (the span
outgrew 512 tokens: it restarts with the last <= 256 tokens) is one pass over the span ("rebuilt").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.service_procs import DATA, load_options, loadgen, log, server
from benchmarks.service_readings import headline, scrape_stage_means

if TYPE_CHECKING:
    from benchmarks.service_sweeps import Clock, Sweeps, Turnwise

# (key in turnwise_streaming_runs, variant, over WebSocket, server settings beyond the defaults); runs
# with the same variant and settings share one server process. The last one measures the other end of
# the CPU trade-off on a small machine: one intra-op thread that never spins, leaving the other core to
# the event loop and the store client.
ONE_THREAD = {"TURNWISE_INTRA_OP_THREADS": "1", "TURNWISE_INTRA_OP_SPINNING": "false"}
STREAM_RUNS: tuple[tuple[str, str, bool, dict[str, str]], ...] = (
    ("int8_rest", "int8", False, {}), ("int8_ws", "int8", True, {}), ("fp32_rest", "fp32", False, {}),
    ("int8_rest_1thread", "int8", False, ONE_THREAD), ("int8_ws_1thread", "int8", True, ONE_THREAD))
WEBSOCKET = {k: ws for k, _v, ws, _e in STREAM_RUNS}
RUN_PREFIX = "turnwise_streaming_"  # the runs' names in sweeps.runs (stages, one_stream, cpu_split)
GOAL = {"tps_at_p99_100ms": 300, "ratio": 4, "p99_ms_1stream": 15}


def run_name(key: str) -> str:
    return RUN_PREFIX + key


def sweep_streaming(args: argparse.Namespace, tw: Turnwise, tmp: Path, clock: Clock, sweeps: Sweeps) -> None:
    """The streaming runs, each a one-stream measurement then the open-loop sweep (WebSocket: the sweep
    starts at 70% of the REST run's max rate, as for the flat bundle)."""
    served = sweeps.stream_variants
    servers = list(dict.fromkeys((v, tuple(sorted(e.items()))) for _k, v, _ws, e in STREAM_RUNS))
    for variant, extra in servers:
        keys = [k for k, v, _ws, e in STREAM_RUNS
                if (v, tuple(sorted(e.items()))) == (variant, extra) and run_name(k) in clock.plan]
        if not keys:
            continue
        if variant not in served:
            for k in keys:
                clock.skip(run_name(k))
                sweeps.skipped[run_name(k)] = f"the streaming bundle has no {variant} variant (export: {served})"
            continue
        try:
            run_variant(args, tw, variant, keys, tmp, clock, sweeps, dict(extra))
        except (RuntimeError, subprocess.SubprocessError, OSError) as err:  # the flat results still count
            log(f"turnwise streaming {variant} failed: {err!r}")
            for k in keys:
                clock.skip(run_name(k))
                sweeps.skipped.setdefault(run_name(k), f"failed: {type(err).__name__}: {str(err)[-500:]}")


def run_variant(args: argparse.Namespace, tw: Turnwise, variant: str, keys: list[str], tmp: Path, clock: Clock,
                sweeps: Sweeps, extra: dict[str, str]) -> None:
    """One server process serving ``variant`` of the streaming bundle (``extra`` settings); the runs
    ``keys`` against it."""
    env = {**tw.env, "TURNWISE_VARIANT": variant, **extra}
    rest_best = 20.0
    with server(f"turnwise-stream-{variant}", [sys.executable, "-m", "service.serve"], env, tw.port, tmp) as proc:
        for key in keys:
            name, ws = run_name(key), WEBSOCKET[key]
            seconds = clock.share(name)
            if seconds is None:
                sweeps.skipped[name] = f"not enough of --max-minutes left ({clock.remaining():.0f}s)"
                continue
            log(f"turnwise streaming {variant} ({'WebSocket' if ws else 'REST'}): one stream, then the load "
                f"sweep ({seconds:.0f}s) [{clock.remaining():.0f}s left]")
            sweeps.runs[name] = loadgen(
                tw.url, tmp / f"{name}.json", mode="both", server_pid=proc.pid, ws=ws,
                start_rate=round(0.7 * rest_best) if ws else 0.0, stage_s=args.stage_s, max_seconds=seconds,
                metrics_url=tw.url + "/metrics", prefix=f"s{variant}{'w' if ws else 'r'}",
                **load_options(args))
            if not ws:
                rest_best = headline(sweeps.runs[name])["max_tps_at_p99_100ms"] or 20.0
        sweeps.stream_stage_means[variant + ("_1thread" if extra else "")] = scrape_stage_means(tw.url)


# --- compute per turn ------------------------------------------------------------------------------
def streaming_compute(bundle: Path, call_turns: int) -> dict[str, Any]:
    """What the streaming bundle computes per turn of the benchmark's calls: new tokens, cached context,
    the share of turns that rebuild their span, and the encoder's FLOPs (dense layers over the new tokens,
    attention of the new tokens over cache + new)."""
    from benchmarks.loadgen import call_scripts
    from bundle.loader import load_bundle
    from turnwise.window import plan_spans, turn_token_ids

    loaded = load_bundle(bundle, warmup=False)
    arch = loaded.manifest.get("architecture") or {}
    h, inter, layers = arch.get("hidden_size", 384), arch.get("intermediate_size", 1536), arch.get("num_layers", 6)
    dense = 2 * layers * (4 * h * h + 2 * h * inter)
    new_tok, context, flops, rebuilt, turns = [], [], [], 0, 0
    for call in call_scripts(DATA, call_turns):
        lengths = [len(t) for t in turn_token_ids([{"speaker": s, "text": x} for s, x in call],
                                                   loaded.tokenizer, loaded.window)]
        for span in plan_spans(lengths, loaded.window):
            for t in range(span.first, span.end):
                turns += 1
                past = sum(lengths[span.start : t])
                if t == span.first:  # a call's first turn or a re-anchor: the span's turns in one pass
                    rebuilt += 1
                    n, past = past + lengths[t], 0
                else:
                    n = lengths[t]
                new_tok.append(n)
                context.append(past + n)
                flops.append(dense * n + 4 * layers * n * (past + n) * h)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    kv_bytes = 4 * layers * 2 * h  # float32 keys and values of one token
    per_call_mb = mean(context) * kv_bytes / 2**20
    return {
        "turns": turns,
        "turns_per_call": call_turns,
        "window": loaded.window.to_dict(),
        "rebuilt_turn_share": round(rebuilt / turns, 4),
        "tokens_computed_per_turn_mean": round(mean(new_tok), 1),
        "context_tokens_per_turn_mean": round(mean(context), 1),
        "context_tokens_per_turn_max": max(context),
        "encoder_gflop_per_turn": round(mean(flops) / 1e9, 4),
        "note": "the first turn of every call and every re-anchor rebuild the span; the rest are incremental",
        "kv_bytes_per_token": kv_bytes,
        "state_mb_per_call_mean": round(per_call_mb, 2),
        "calls_in_512mb_state_cache": int(512 / per_call_mb),
        "cache_note": "the load generator gives an arrival to an idle call at once, so only a few calls are live "
        "at a time and their states stay cached (evictions per stage: sweep_steps_by_mode). Live calls pause "
        "seconds between turns: at R turns/s and one turn per call every T s, R*T calls are live, and past "
        "calls_in_512mb_state_cache of them (TURNWISE_STATE_CACHE_MB) states are evicted and rebuilt",
    }


# --- results ---------------------------------------------------------------------------------------
def run_headline(run: dict[str, Any], variant: str, transport: str) -> dict[str, Any]:
    one = run.get("one_stream") or {}
    steps: dict[str, int] = {}
    for stage in run.get("stages", []):
        for k, v in (stage.get("server_stage_means") or {}).items():
            if k.startswith("steps_") or k == "state_evictions":
                steps[k] = steps.get(k, 0) + int(v)
    return {**headline(run), "variant": variant, "transport": transport,
            "model_ms_1stream": one.get("model_ms"), "sweep_steps_by_mode": steps}


def streaming_results(runs: dict[str, dict[str, Any]], skipped: dict[str, str], tw: dict[str, Any],
                      naive: dict[str, Any]) -> dict[str, Any]:
    """The results file's streaming keys: the best REST variant, every run, the ratios and the goal."""
    out: dict[str, Any] = {}
    per_run: dict[str, Any] = {}
    for key, variant, ws, extra in STREAM_RUNS:
        name = run_name(key)
        if name in runs:
            per_run[key] = {**run_headline(runs[name], variant, "ws" if ws else "rest"), "settings": extra}
        elif name in skipped:
            per_run[key] = {"skipped": skipped[name], "variant": variant}
    rest = {k: r for k, r in per_run.items() if "_rest" in k and "skipped" not in r}
    if not per_run:
        return {}
    best_key = max(rest, key=lambda k: (rest[k]["max_tps_at_p99_100ms"], rest[k]["max_tps_at_p99_1s"]), default=None)
    best = {**rest[best_key], "run": best_key} if best_key else None
    out["turnwise_streaming"] = best
    out["turnwise_streaming_runs"] = per_run
    if best is None:
        return out
    if naive["max_tps_at_p99_100ms"]:
        basis, a, b = "max_tps_at_p99_100ms", best["max_tps_at_p99_100ms"], naive["max_tps_at_p99_100ms"]
    else:
        basis, a, b = "max_tps_at_p99_1s (the naive server held p99 <= 100 ms at no stage)", \
            best["max_tps_at_p99_1s"], naive["max_tps_at_p99_1s"]
    ratio = round(a / b, 2) if b else None
    out["ratio_streaming_vs_naive"] = ratio
    out["ratio_streaming_vs_naive_basis"] = basis
    flat = tw["max_tps_at_p99_100ms"]
    out["ratio_streaming_vs_flat"] = round(best["max_tps_at_p99_100ms"] / flat, 2) if flat else None
    p99 = best["p99_ms_1stream"]
    out["goal_streaming"] = {
        **GOAL,
        "met": {
            "tps_at_p99_100ms": best["max_tps_at_p99_100ms"] >= GOAL["tps_at_p99_100ms"],
            "ratio": ratio is not None and ratio >= GOAL["ratio"],
            "p99_ms_1stream": p99 is not None and p99 <= GOAL["p99_ms_1stream"],
        },
        "measured": {"tps_at_p99_100ms": best["max_tps_at_p99_100ms"], "ratio": ratio, "p99_ms_1stream": p99,
                     "variant": best["variant"]},
    }
    return out
