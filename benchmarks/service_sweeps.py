"""The service benchmark's runs: turnwise (REST, then WebSocket in the same process), the naive server,
turnwise serving the streaming bundle (:mod:`benchmarks.service_streaming`) and turnwise under cProfile,
all against one redis-server, within the run's ``--max-minutes`` budget.

The budget: every run planned has a cap on its load sweep (:data:`SWEEP_CAP_S`) and costs about
:attr:`Clock.overhead_s` besides (server start and warm-up, the one-stream measurement); a run's sweep gets
its cap's share of the time left after the overhead of it and of every run still to come, so a run
that ends early leaves its time to the later ones. An optional run whose share is under two stages
is skipped (and recorded so).
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

from benchmarks.service_procs import RESULTS, load_options, loadgen, log, server
from benchmarks.service_readings import headline, profile_summary, scrape_stage_means
from harness.ports import free_port
from harness.redis import RedisServer

# Most seconds of load sweep per run, and roughly what a run costs besides its sweep.
SWEEP_CAP_S = {"turnwise": 150.0, "turnwise_ws": 100.0, "naive": 150.0, "turnwise_streaming_int8_rest": 150.0,
               "turnwise_streaming_int8_ws": 100.0, "turnwise_streaming_fp32_rest": 100.0,
               "turnwise_streaming_int8_rest_1thread": 120.0, "turnwise_streaming_int8_ws_1thread": 80.0}
OVERHEAD_S = 15.0  # at 300 one-stream turns; see Clock.overhead_s
REQUIRED = ("turnwise", "naive")  # run even when their share is short (the headline and its baseline)


class Clock:
    """The run's wall time against its ``--max-minutes`` budget, and the runs still planned in it."""

    def __init__(self, max_minutes: float, stage_s: float = 8.0, one_stream_turns: int = 300):
        self.started = time.monotonic()
        self.budget_s = max_minutes * 60
        self.stage_s = stage_s
        # a server's start and warm-up (~5 s) and its one-stream measurement (~30 ms a turn)
        self.overhead_s = 5.0 + (OVERHEAD_S - 5.0) * one_stream_turns / 300
        self.plan: dict[str, float] = {}  # run -> its sweep cap (s); "profile" -> its one stage

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def share(self, name: str) -> float | None:
        """Seconds for run ``name``'s sweep (it leaves the plan); None: skip it, too little time is left."""
        cap = self.plan.pop(name, SWEEP_CAP_S.get(name, 100.0))
        caps = cap + sum(self.plan.values())
        avail = self.remaining() - self.overhead_s * (1 + len(self.plan))
        seconds = min(cap, avail * cap / caps) if caps else 0.0
        least = 2 * (self.stage_s + 1.5)
        if seconds < least:
            return max(least, 30.0) if name in REQUIRED else None
        return seconds

    def skip(self, name: str) -> None:
        self.plan.pop(name, None)


@dataclass
class Sweeps:
    """What the servers' runs produced: loadgen results per server, turnwise's own stage means, the profile."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    turnwise_stage_means: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # run -> why it did not run
    stream_variants: list[str] = field(default_factory=list)  # what the streaming bundle holds
    stream_stage_means: dict[str, Any] = field(default_factory=dict)  # variant -> /metrics means


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
    seconds = clock.share("turnwise") or 30.0
    log(f"turnwise (REST): one stream, then the load sweep ({seconds:.0f}s) [{clock.remaining():.0f}s left]")
    with server("turnwise", [sys.executable, "-m", "service.serve"], tw.env, tw.port, tmp) as proc:
        sweeps.runs["turnwise"] = loadgen(
            tw.url,
            tmp / "tw.json",
            mode="both",
            server_pid=proc.pid,
            stage_s=args.stage_s,
            max_seconds=seconds,
            metrics_url=tw.url + "/metrics",
            prefix="tw",
            **load_options(args),
        )
        sweeps.turnwise_stage_means = scrape_stage_means(tw.url)
        tw_best = headline(sweeps.runs["turnwise"])["max_tps_at_p99_100ms"] or 20.0
        seconds_ws = clock.share("turnwise_ws") if "turnwise_ws" in clock.plan else None
        if seconds_ws is not None:
            log(f"turnwise (WebSocket): load sweep ({seconds_ws:.0f}s) [{clock.remaining():.0f}s left]")
            sweeps.runs["turnwise_ws"] = loadgen(
                tw.url,
                tmp / "tw_ws.json",
                mode="both",
                server_pid=proc.pid,
                ws=True,
                start_rate=round(0.7 * tw_best),
                stage_s=args.stage_s,
                max_seconds=seconds_ws,
                metrics_url=tw.url + "/metrics",
                prefix="tws",
                **load_options(args),
            )
        elif not args.no_ws:
            sweeps.skipped["turnwise_ws"] = f"not enough of --max-minutes left ({clock.remaining():.0f}s)"
    return tw_best


def sweep_naive(args: argparse.Namespace, ckpt: Path, redis_url: str, base_env: dict[str, str], tmp: Path,
                clock: Clock, sweeps: Sweeps) -> None:
    """The naive server (:mod:`benchmarks.naive_server`) over REST: one stream, then the sweep."""
    naive_port = free_port()
    seconds = clock.share("naive") or 30.0
    log(f"naive server (REST): one stream, then the load sweep ({seconds:.0f}s) [{clock.remaining():.0f}s left]")
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
            max_seconds=seconds,
            prefix="naive",
            **load_options(args),
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
            **load_options(args),
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


def plan_runs(args: argparse.Namespace, clock: Clock, stream_bundle: Path | None) -> None:
    """The runs this invocation makes, in order, into ``clock.plan``."""
    from benchmarks.service_streaming import STREAM_RUNS, run_name

    names = ["turnwise", *([] if args.no_ws else ["turnwise_ws"]), "naive"]
    if stream_bundle is not None:
        names += [run_name(k) for k, _v, ws, _e in STREAM_RUNS if not (ws and args.no_ws)]
    clock.plan = {n: SWEEP_CAP_S[n] for n in names}
    if not args.no_profile:
        clock.plan["profile"] = args.stage_s + 5  # one fixed-rate stage


def run_servers(args: argparse.Namespace, ckpt: Path, bundle: Path, clock: Clock,
                stream_bundle: Path | None = None) -> Sweeps:
    """One redis-server for every run; turnwise (REST, WebSocket), the naive server, turnwise serving the
    streaming bundle (when given), then the profile."""
    from benchmarks.service_streaming import sweep_streaming

    sweeps = Sweeps()
    plan_runs(args, clock, stream_bundle)
    with tempfile.TemporaryDirectory(prefix="twbench-") as tmp_s, RedisServer(Path(tmp_s)) as redis:
        tmp = Path(tmp_s)
        base_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        tw = turnwise_config(args, bundle, redis.url, base_env)
        tw_best = sweep_turnwise(args, tw, tmp, clock, sweeps)
        sweep_naive(args, ckpt, redis.url, base_env, tmp, clock, sweeps)
        if stream_bundle is not None:
            from bundle.manifest import read_manifest

            sweeps.stream_variants = sorted(read_manifest(stream_bundle)["variants"])
            stream = turnwise_config(args, stream_bundle, redis.url, base_env)
            sweep_streaming(args, stream, tmp, clock, sweeps)
        if not args.no_profile:
            clock.skip("profile")
            if clock.remaining() > clock.overhead_s + args.stage_s + 10:
                sweeps.profile = profile_turnwise(args, tw, tmp, clock, tw_best)
            else:
                sweeps.skipped["profile"] = f"not enough of --max-minutes left ({clock.remaining():.0f}s)"
    return sweeps
