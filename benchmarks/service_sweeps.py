"""The service benchmark's runs: turnwise (REST, then WebSocket in the same process), the naive server,
and turnwise under cProfile, all against one redis-server, within the run's ``--max-minutes`` budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.service_procs import RESULTS, loadgen, log, server
from benchmarks.service_readings import headline, profile_summary, scrape_stage_means
from harness.ports import free_port
from harness.redis import RedisServer


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
