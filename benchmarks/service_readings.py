"""Reading what a service benchmark run measured: a run's headline figures, the per-stage CPU split,
the service's own stage means from ``/metrics``, and the cProfile summary (``service_profile.txt``).
"""

from __future__ import annotations

import pstats
import sysconfig
from pathlib import Path
from typing import Any

import httpx

from benchmarks.service_procs import REPO


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
                "turnwise_stage_duration_seconds_sum",
                "turnwise_stage_duration_seconds_count",
                "turnwise_batch_size_sum",
                "turnwise_batch_size_count",
            )
        ):
            key, value = line.rsplit(" ", 1)
            sums[key] = float(value)
    out: dict[str, Any] = {}
    for stage in ("store", "tokenize", "queue", "inference"):
        n = sums.get(f'turnwise_stage_duration_seconds_count{{stage="{stage}"}}', 0.0)
        if n:
            total = sums[f'turnwise_stage_duration_seconds_sum{{stage="{stage}"}}']
            out[f"{stage}_ms_mean"] = round(1000 * total / n, 3)
    if sums.get("turnwise_batch_size_count"):
        out["batch_size_mean"] = round(sums["turnwise_batch_size_sum"] / sums["turnwise_batch_size_count"], 2)
        out["batches"] = int(sums["turnwise_batch_size_count"])
    return out


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
