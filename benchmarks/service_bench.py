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
import os
from pathlib import Path

from benchmarks.service_procs import REPO, RESULTS, log
from benchmarks.service_report import build_result, window_compute, write_results
from benchmarks.service_sweeps import Clock, run_servers
from harness.bundles import is_intact, untrained_bundle
from harness.machine import loadavg
from turnwise.names import CHECKPOINT_META

# The parts, each under benchmarks/: service_procs (the servers' and the load generator's processes,
# shared paths and SLO), service_sweeps (the runs against one redis-server, the profiled run),
# service_readings (headlines, CPU split, /metrics stage means, the cProfile summary) and
# service_report (compute per window, the results file, the plot).


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
