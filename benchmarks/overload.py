"""Overload benchmark: open-loop arrivals at twice the server's measured capacity.

1. Starts ``python -m service.serve`` on a bundle (``--bundle``; default: the flat MiniLM bench bundle,
   built once by :mod:`benchmarks.bench_bundles`), or uses a running server (``--url``).
2. Capacity: a closed loop of ``--concurrency`` clients for ``--probe-s`` seconds; turns answered per
   second is the capacity.
3. Overload: Poisson arrivals at ``--factor`` x capacity for ``--duration-s`` seconds, each a new
   call's first turn over REST (latency counts from the scheduled arrival: no coordinated omission).
4. Writes ``benchmarks/results/overload.json``: counts by status, latency p50/p99 of the 429s (how
   early overload is answered), of the admitted (200) turns against the latency budget, and of the
   504s, and the Retry-After values sent.

    python -m benchmarks.overload --bundle runs/bench/minilm-bundle --duration-s 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.service_procs import REPO, RESULTS, log, server
from harness.ports import free_port

TEXTS = ["Hi, my card was charged twice.", "Can you check my order status?", "I want to cancel my plan.",
         "Thanks, that fixed it.", "Why is my bill so high this month?", "Please transfer me to billing."]


REPEAT = 1  # --text-repeat: each utterance is a sample text this many times (heavier turns, lower capacity)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(values)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "max_ms": float(arr.max())}


async def post_turn(c: httpx.AsyncClient, call_id: str) -> tuple[int, float | None, float | None]:
    """(status, Retry-After, the server's own timings_ms.total of a 200) of one new call's first turn;
    status 0 on a transport error or timeout."""
    try:
        r = await c.post(f"/v1/dialogues/{call_id}/turns",
                         json={"seq": 0, "speaker": "customer", "text": " ".join([random.choice(TEXTS)] * REPEAT)})
    except httpx.HTTPError:
        return 0, None, None
    retry = r.headers.get("retry-after")
    total = r.json().get("timings_ms", {}).get("total") if r.status_code == 200 else None
    return r.status_code, float(retry) if retry is not None else None, total


async def capacity(c: httpx.AsyncClient, concurrency: int, seconds: float) -> float:
    """Turns per second answered 200 by ``concurrency`` closed-loop clients."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < stop:
            status, _, _ = await post_turn(c, f"probe-{k}-{n}")
            n += 1
            done += status == 200
    started = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done / (time.monotonic() - started)


async def overload(c: httpx.AsyncClient, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    results: list[tuple[int, float, float | None]] = []  # (status, latency ms from the schedule, retry-after)
    server_ms: list[float] = []  # timings_ms.total of the 200s: the part of the latency inside the handler

    async def one(k: int, scheduled: float) -> None:
        status, retry, total = await post_turn(c, f"over-{seed}-{k}")
        results.append((status, (time.monotonic() - scheduled) * 1000, retry))
        if total is not None:
            server_ms.append(total)

    tasks = []
    start = time.monotonic()
    at, k = start, 0
    while at < start + seconds:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(k, at)))
        k += 1
        at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    by_status: dict[int, list[float]] = {}
    for status, ms, _ in results:
        by_status.setdefault(status, []).append(ms)
    retries = Counter(r for s, _, r in results if s == 429 and r is not None)
    return {
        "offered_rate": rate,
        "duration_s": seconds,
        "requests": len(results),
        "counts": {str(s): len(v) for s, v in sorted(by_status.items())},
        "rejected_429": percentiles(by_status.get(429, [])),
        "admitted_200": percentiles(by_status.get(200, [])),
        # client-observed minus this = time before the handler: the client's and the server's event loops
        "admitted_200_server_total": percentiles(server_ms),
        "expired_504": percentiles(by_status.get(504, [])),
        "retry_after_s": {str(k): v for k, v in sorted(retries.items())},
    }


@contextlib.contextmanager
def target(args: argparse.Namespace) -> Iterator[str]:
    if args.url:
        yield args.url.rstrip("/")
        return
    bundle = args.bundle
    if bundle is None:
        from benchmarks.bench_bundles import DEFAULT_WORKDIR, ensure_flat

        bundle = ensure_flat(DEFAULT_WORKDIR)[1]
    port = free_port()
    env = {**os.environ, "TURNWISE_BUNDLE": str(bundle), "TURNWISE_HOST": "127.0.0.1", "TURNWISE_PORT": str(port),
           "TURNWISE_RELOAD_POLL_S": "0", "TURNWISE_LOG_LEVEL": "warning", "TOKENIZERS_PARALLELISM": "false",
           "TURNWISE_LATENCY_BUDGET_MS": str(args.budget_ms)}
    env.pop("TURNWISE_REDIS_URL", None)
    logdir = REPO / "runs" / "overload-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    with server("overload", [sys.executable, "-m", "service.serve"], env, port, logdir):
        yield f"http://127.0.0.1:{port}"


async def main_async(args: argparse.Namespace, url: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=2048)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout_s, limits=limits) as c:
        cap = args.rate / args.factor if args.rate else await capacity(c, args.concurrency, args.probe_s)
        log(f"capacity {cap:.1f} turns/s; offering {cap * args.factor:.1f}/s for {args.duration_s:.0f} s")
        result = await overload(c, cap * args.factor, args.duration_s, args.seed)
    return {"capacity_turns_per_s": cap, "factor": args.factor, "latency_budget_ms": args.budget_ms, **result}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (else one is started on --bundle)")
    p.add_argument("--bundle", type=Path, help="bundle to serve (default: the MiniLM bench bundle)")
    p.add_argument("--factor", type=float, default=2.0, help="offered rate / measured capacity")
    p.add_argument("--rate", type=float, default=0.0, help="capacity to assume instead of measuring it")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop clients of the capacity probe")
    p.add_argument("--probe-s", type=float, default=5.0)
    p.add_argument("--duration-s", type=float, default=20.0)
    p.add_argument("--budget-ms", type=float, default=1000.0, help="TURNWISE_LATENCY_BUDGET_MS of a started server")
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-repeat", type=int, default=1,
                   help="each utterance is a sample text repeated this often: heavier turns lower the capacity to a "
                   "rate one load-generating process can offer twice over")
    p.add_argument("--out", type=Path, default=RESULTS / "overload.json")
    args = p.parse_args(argv)
    global REPEAT
    REPEAT = max(1, args.text_repeat)
    os.chdir(REPO)
    with target(args) as url:
        result = {"served": str(args.bundle or args.url or "minilm bench bundle"), "text_repeat": REPEAT,
                  **asyncio.run(main_async(args, url))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}: {result['counts']}, 429 p50/p99 {result['rejected_429']['p50_ms']}/"
        f"{result['rejected_429']['p99_ms']} ms, admitted p99 {result['admitted_200']['p99_ms']} ms")


if __name__ == "__main__":
    main()
