"""End-to-end service benchmark: turnwise vs a naive FastAPI server, same model, same Redis, same run.

1. Builds the MiniLM student (:func:`harness.bundles.untrained_bundle`: ``build_model("minilm")`` +
   ``save_checkpoint``; untrained heads, which changes nothing about speed) and exports it, flat
   (``todbert-v1``) and streaming (``turn-causal-v1``, :meth:`WindowConfig.turn_causal`), each in fp32
   and int8 (:mod:`benchmarks.bench_bundles`, cached under ``runs/bench``).
2. Starts a redis-server on a free loopback port (:class:`harness.redis.RedisServer`); every server
   keeps its windows in it.
3. For each server (turnwise flat over REST and WebSocket, the naive server of
   :mod:`benchmarks.naive_server` over REST, turnwise streaming int8 over REST and WebSocket and
   fp32 over REST: :mod:`benchmarks.service_streaming`) a separate load-generator process
   (:mod:`benchmarks.loadgen`) measures one stream (p50/p99 of an otherwise idle server) and then
   sweeps open-loop Poisson load upward until p99 exceeds 1 s (or errors/shortfall appear). Calls
   are ``--call-turns`` turns long (default 60: a support call of several issues, the sample calls
   joined end to end), which is where streaming, one step over the new turn only, pays off.
   ``max_tps_at_p99_100ms`` is the highest answered rate of a stage that held p99 <= 100 ms, < 1%
   errors and >= 90% of the offered rate; ``max_tps_at_p99_1s`` the same under a 1 s p99 (near
   saturation), which still compares the two servers when one of them never meets 100 ms.
4. Profiles the turnwise server under cProfile at ~80% of its max rate, and reads per-stage times from
   its ``/metrics`` and per-thread CPU from /proc, to say what limits throughput.

Writes ``benchmarks/results/service.json``, ``service_latency.png`` and ``service_profile.txt``.
Server and load generator share the same CPU cores (2 on the reference machine), so the load
generator's own CPU use is part of every figure; the JSON records it per stage. The whole run,
bundle builds included, keeps within ``--max-minutes`` (see :class:`benchmarks.service_sweeps.Clock`).

    python -m benchmarks.service_bench [--stage-s 8] [--max-minutes 18] [--call-turns 60]
                                       [--no-ws] [--no-streaming] [--no-profile]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.bench_bundles import DEFAULT_WORKDIR, ensure_flat, ensure_streaming, variants_for
from benchmarks.service_procs import RESULTS, log, one_stream_turns
from benchmarks.service_report import build_result, window_compute, write_results
from benchmarks.service_streaming import streaming_compute
from benchmarks.service_sweeps import Clock, run_servers
from turnwise.machine import loadavg

# The parts, each under benchmarks/: service_procs (the servers' and the load generator's processes,
# shared paths and SLO), service_sweeps (the runs against one redis-server, the profiled run),
# service_readings (headlines, CPU split, /metrics stage means, the cProfile summary) and
# service_report (compute per window, the results file, the plot), service_streaming (the streaming
# bundle's runs and results keys), bench_bundles (the bundles, shared with benchmarks.context_sweep).


# --- main: build bundles, start servers and sweep, write results ---------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--variant", default="fp32", help="flat bundle variant to serve")
    p.add_argument("--stage-s", type=float, default=8.0)
    p.add_argument("--max-minutes", type=float, default=18.0, help="the whole run, bundle builds included")
    p.add_argument("--call-turns", type=int, default=60,
                   help="turns per call (the sample calls joined end to end; 0 = each sample call as it is)")
    p.add_argument("--max-batch-size", type=int, default=8, help="the service default")
    p.add_argument("--max-batch-wait-ms", type=float, default=0.0, help="the service default")
    p.add_argument("--no-ws", action="store_true", help="skip the WebSocket sweeps")
    p.add_argument("--no-streaming", action="store_true", help="skip the streaming bundle's runs")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "service.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    clock = Clock(args.max_minutes, args.stage_s, one_stream_turns(args.max_minutes)[0])
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    ckpt, bundle = ensure_flat(args.workdir, variants_for(args.variant))
    stream = None if args.no_streaming else ensure_streaming(args.workdir)
    compute = window_compute(bundle, args.call_turns)
    if stream is not None:
        compute["streaming"] = streaming_compute(stream, args.call_turns)
    log(f"bundles ready after {clock.elapsed():.0f}s of the {clock.budget_s:.0f}s budget")
    load_before = loadavg()
    sweeps = run_servers(args, ckpt, bundle, clock, stream)
    write_results(args.out, build_result(args, sweeps, compute, load_before, clock), sweeps.runs)


if __name__ == "__main__":
    main()
