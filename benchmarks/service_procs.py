"""The service benchmark's processes: the servers under test (started, awaited ready, stopped) and the
load-generator process (:mod:`benchmarks.loadgen`) driven against them; the paths and SLO they share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "samples" / "dialogues.jsonl"
SLO_MS = 100.0
ONE_STREAM_TURNS, ONE_STREAM_WARMUP = 300, 30  # at the default budget (14 min); fewer in a shorter run


def one_stream_turns(max_minutes: float) -> tuple[int, int]:
    """(measured turns, warm-up turns) of each one-stream measurement: 300 + 30 in a 14-minute run, scaled
    down with a shorter budget (at least 50 + 5), so a short run still reaches every server's sweep."""
    turns = max(50, min(ONE_STREAM_TURNS, round(ONE_STREAM_TURNS * max_minutes / 14)))
    return turns, max(5, round(turns * ONE_STREAM_WARMUP / ONE_STREAM_TURNS))


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The load generator's call length and one-stream size for this run's arguments."""
    turns, warmup = one_stream_turns(args.max_minutes)
    return {"call_turns": args.call_turns, "turns": turns, "warmup": warmup}


def log(msg: str) -> None:
    print(f"[service_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
    call_turns: int = 0,
    turns: int = ONE_STREAM_TURNS,
    warmup: int = ONE_STREAM_WARMUP,
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
        "--call-turns",
        str(call_turns),
        "--turns",
        str(turns),
        "--warmup",
        str(warmup),
    ]
    if ws:
        cmd.append("--ws")
    if metrics_url:
        cmd += ["--metrics-url", metrics_url]
    subprocess.run(cmd, cwd=REPO, check=True, timeout=max_seconds + 120)
    return json.loads(out.read_text())
