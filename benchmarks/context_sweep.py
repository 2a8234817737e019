"""Model time per turn against context length: a flat window pass vs a streaming step (no HTTP, no store).

For contexts of 64, 128, 256 and 512 tokens, each in fp32 and int8 of the MiniLM benchmark bundles
(:mod:`benchmarks.bench_bundles`, shared with the service benchmark):

- ``flat``: one ONNX forward of a window of that many tokens ([CLS] + tagged turns + [SEP]) through
  the flat bundle (:meth:`LoadedBundle.infer`): what the flat service pays for every turn;
- ``step``: one incremental step of a 20-token turn over a cache of (context - 20) tokens through the
  streaming bundle (:meth:`LoadedBundle.step`, a :class:`bundle.streaming.StepRequest`): what the
  streaming service pays for a turn whose call state is cached;
- ``rebuild``: one pass of the streaming graph over all the context's tokens, nothing cached: what a
  new call, an evicted state or a re-anchor costs once.

The tokens are the sample calls' own (joined end to end); the cache is the keys/values the streaming
graph computed for them. Every configuration is timed once per round, rounds interleaved (so a change
of machine load hits all of them alike), after ``--warmup`` rounds; median and p90 over ``--reps``.
One ONNX Runtime session per bundle variant with the default intra-op threads, as the service opens it.

Writes ``benchmarks/results/context_sweep.json`` and ``context_sweep.png``, and merges a compact copy
into ``service.json`` under ``"context_sweep"`` when that file exists.

    python -m benchmarks.context_sweep [--reps 50] [--warmup 5] [--contexts 64,128,256,512]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_bundles import DEFAULT_WORKDIR, INT8_LABEL_AGREEMENT, ensure_flat, ensure_streaming
from turnwise.machine import cpu_flags, loadavg, machine_facts

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "samples" / "dialogues.jsonl"
VARIANTS = ("fp32", "int8")
TURN_TOKENS = 20
KINDS = ("flat", "step", "rebuild")


def say(msg: str) -> None:
    print(f"[context_sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- what else ran ---------------------------------------------------------------------------------
def cpu_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command name, user+system clock ticks) of every readable process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            head, tail = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
            fields = tail.split()
            out[int(entry)] = (head.split("(", 1)[1], int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def other_processes(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], wall_s: float,
                    top: int = 8) -> list[dict[str, Any]]:
    """The processes besides this one that used the most CPU while the sweep ran (cores on average)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: list[dict[str, Any]] = []
    for pid, (name, ticks) in after.items():
        if pid == os.getpid():
            continue
        delta = ticks - before.get(pid, (name, 0))[1]
        if delta > 0:
            used.append({"pid": pid, "name": name, "cores": round(delta / tick / wall_s, 3)})
    return sorted(used, key=lambda u: -u["cores"])[:top]


# --- inputs ----------------------------------------------------------------------------------------
def sample_turns(loaded: Any) -> list[list[int]]:
    """Token ids of the sample calls' turns in the turn-causal format ([tag] + text), in order."""
    from turnwise.dialogue import read_jsonl
    from turnwise.window import turn_token_ids

    return [ids for d in read_jsonl(DATA) for ids in turn_token_ids(list(d.turns), loaded.tokenizer, loaded.window)]


def take(turns: list[list[int]], n: int) -> list[list[int]]:
    """Whole turns from the start of ``turns`` holding exactly ``n`` tokens (the last one cut to fit)."""
    out: list[list[int]] = []
    left = n
    for t in turns:
        if left <= 0:
            break
        out.append(t[:left])
        left -= len(out[-1])
    return out


def flat_window(loaded: Any, turns: list[list[int]], n: int) -> list[int]:
    """A flat window of exactly ``n`` tokens: [CLS] + the newest n-2 tokens of tagged turns + [SEP]."""
    body = [tok for t in take(turns, n - 2) for tok in t]
    return [int(loaded.tokenizer.cls_token_id), *body, int(loaded.tokenizer.sep_token_id)]


def step_case(loaded: Any, turns: list[list[int]], n: int) -> Any:
    """A 20-token turn over the keys/values the streaming graph computes for the ``n - 20`` tokens before it."""
    from bundle.streaming import StepRequest

    context = take(turns, n - TURN_TOKENS)
    rest = turns[len(context):]
    new = next(t for t in rest if len(t) >= 2)
    new = (new + [tok for t in rest[1:] for tok in t[1:]])[:TURN_TOKENS]  # one tag, 19 words' tokens
    (_logits, kv), = loaded.step([loaded.rebuild_request(context)])
    return StepRequest([new], np.ascontiguousarray(kv))


def cases(flat: dict[str, Any], stream: dict[str, Any], contexts: list[int]) -> dict[tuple[str, str, int], Callable]:
    """(kind, variant, context) -> a call that runs it once."""
    turns = sample_turns(next(iter(stream.values())))
    out: dict[tuple[str, str, int], Callable] = {}
    for v in VARIANTS:
        for n in contexts:
            seq = flat_window(flat[v], turns, n)
            assert len(seq) == n, (len(seq), n)
            out[("flat", v, n)] = lambda b=flat[v], s=seq: b.infer([s])
            req = step_case(stream[v], turns, n)
            assert len(req.past) + req.n_new == n, (len(req.past), req.n_new, n)
            out[("step", v, n)] = lambda b=stream[v], r=req: b.step([r])
            rebuild = stream[v].rebuild_request(take(turns, n))
            out[("rebuild", v, n)] = lambda b=stream[v], r=rebuild: b.step([r])
    return out


def measure(runs: dict[tuple[str, str, int], Callable], reps: int, warmup: int) -> dict[tuple, list[float]]:
    times: dict[tuple, list[float]] = {k: [] for k in runs}
    for r in range(warmup + reps):
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[key].append((time.perf_counter() - t0) * 1000)
    return times


# --- results ---------------------------------------------------------------------------------------
def row(kind: str, n: int, ms: list[float]) -> dict[str, Any]:
    computed = {"flat": n, "step": TURN_TOKENS, "rebuild": n}[kind]
    return {"context_tokens": n, "tokens_computed": computed, "cached_tokens": n - TURN_TOKENS if kind == "step" else 0,
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "mean_ms": round(float(np.mean(ms)), 3), "min_ms": round(float(np.min(ms)), 3), "reps": len(ms)}


def compact(results: dict[str, dict[str, list[dict[str, Any]]]], contexts: list[int]) -> dict[str, Any]:
    def series(key: str) -> dict[str, list[float]]:
        return {f"{kind}_{v}": [r[key] for r in results[kind][v]] for kind in KINDS for v in VARIANTS}

    p50 = series("p50_ms")
    return {
        "context_tokens": contexts,
        "p50_ms": p50,
        "p90_ms": series("p90_ms"),
        "speedup_step_vs_flat_p50": {v: [round(f / s, 2) for f, s in zip(p50[f"flat_{v}"], p50[f"step_{v}"],
                                                                          strict=True)] for v in VARIANTS},
    }


def plot(results: dict[str, dict[str, list[dict[str, Any]]]], path: Path, reps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"flat": ("tab:blue", "o-"), "step": ("tab:purple", "s-"), "rebuild": ("tab:gray", "^:")}
    fig, ax = plt.subplots(figsize=(8, 5))
    for kind in KINDS:
        color, marker = style[kind]
        for v in VARIANTS:
            rows = results[kind][v]
            x = [r["context_tokens"] for r in rows]
            p50 = np.array([r["p50_ms"] for r in rows])
            p90 = np.array([r["p90_ms"] for r in rows])
            label = {"flat": "flat window pass", "step": f"streaming step ({TURN_TOKENS}-token turn over the cache)",
                     "rebuild": "streaming rebuild (span in one pass)"}[kind]
            ax.errorbar(x, p50, yerr=[np.zeros_like(p50), p90 - p50], fmt=marker, color=color, capsize=3,
                        alpha=1.0 if v == "int8" else 0.55, label=f"{label}, {v}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([r["context_tokens"] for r in results["flat"][VARIANTS[0]]])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("context tokens (window length; cache + new turn)")
    ax.set_ylabel(f"model time per turn (ms; p50, bar to p90 of {reps})")
    ax.set_title("MiniLM-L6 per-turn model time vs context, ONNX Runtime CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def hardware(session: Any) -> dict[str, Any]:
    import onnxruntime

    facts = machine_facts()
    return {**facts, "flags_all": " ".join(cpu_flags(None)), "onnxruntime": onnxruntime.__version__,
            "providers": session.get_providers(),
            "intra_op_threads": session.get_session_options().intra_op_num_threads or "default (one per core)"}


def merge_into_service(service_json: Path, entry: dict[str, Any]) -> bool:
    if not service_json.exists():
        return False
    data = json.loads(service_json.read_text())
    data["context_sweep"] = entry
    service_json.write_text(json.dumps(data, indent=2) + "\n")
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--contexts", default="64,128,256,512")
    p.add_argument("--out", type=Path, default=RESULTS / "context_sweep.json", help="the PNG is written beside it")
    p.add_argument("--service-json", type=Path, default=RESULTS / "service.json",
                   help="merge a compact copy into this file when it exists")
    args = p.parse_args(argv)
    contexts = sorted(int(c) for c in args.contexts.split(","))
    if min(contexts) <= TURN_TOKENS or max(contexts) > 512:
        p.error(f"contexts must be in ({TURN_TOKENS}, 512]")
    from bundle.loader import load_bundle

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.workdir.mkdir(parents=True, exist_ok=True)
    _ckpt, flat_dir = ensure_flat(args.workdir)
    stream_dir = ensure_streaming(args.workdir)
    flat = {v: load_bundle(flat_dir, variant=v) for v in VARIANTS}
    stream = {v: load_bundle(stream_dir, variant=v) for v in VARIANTS}
    runs = cases(flat, stream, contexts)
    say(f"{len(runs)} configurations x ({args.warmup} warm-up + {args.reps}) rounds")
    load_before, ticks_before, t0 = loadavg(), cpu_ticks(), time.perf_counter()
    times = measure(runs, args.reps, args.warmup)
    wall = time.perf_counter() - t0
    others = other_processes(ticks_before, cpu_ticks(), wall)
    results = {kind: {v: [row(kind, n, times[(kind, v, n)]) for n in contexts] for v in VARIANTS} for kind in KINDS}
    short = compact(results, contexts)
    result = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": short,
        "results": results,
        "method": {
            "flat": "LoadedBundle.infer on one window of exactly N tokens (flat MiniLM bundle, todbert-v1)",
            "step": f"LoadedBundle.step: one {TURN_TOKENS}-token turn over a cache of N-{TURN_TOKENS} tokens "
                    "(streaming MiniLM bundle, turn-causal-v1), batch of one as the service runs it "
                    "(TURNWISE_STREAM_BATCH_SIZE=1)",
            "rebuild": "LoadedBundle.step on all N tokens with nothing cached (a new call, eviction or re-anchor)",
            "tokens": "the sample calls' turns, joined end to end; the cache is what the graph computed for them",
            "timing": f"time.perf_counter around the call (feed building included), {args.warmup} warm-up rounds, "
                      f"then {args.reps} rounds, every configuration once per round (interleaved); p50/p90",
            "bundles": {"flat": flat_dir.name, "streaming": stream_dir.name, "backbone": "all-MiniLM-L6-v2",
                        "heads": "untrained (speed does not depend on the weights)",
                        "int8_parity_gate": f"label agreement >= {INT8_LABEL_AGREEMENT} (untrained heads: "
                                            "near-tied logits)"},
        },
        "hardware": hardware(flat["fp32"].session),
        "what_else_ran": {"load_average_before": load_before, "load_average_after": loadavg(), "niceness": os.nice(0),
                          "other_processes_cpu": others, "wall_s": round(wall, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plot(results, png, args.reps)
    entry = {"source": args.out.name, "created_at": result["created_at"], "reps": args.reps, **short,
             "load_average_before": load_before}
    merged = merge_into_service(args.service_json, entry)
    say(f"wrote {args.out} and {png}" + (f"; merged into {args.service_json}" if merged else ""))
    for v in VARIANTS:
        say(f"{v}: p50 ms flat {short['p50_ms'][f'flat_{v}']} | step {short['p50_ms'][f'step_{v}']} | "
            f"rebuild {short['p50_ms'][f'rebuild_{v}']} (contexts {contexts})")


if __name__ == "__main__":
    main()
