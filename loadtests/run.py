"""``make loadtest``: redis-server + ``turnwise serve`` on loopback, locust headless, results to files.

    python -m loadtests.run                     # MiniLM bundle, 30 calls, 2-4 s between turns, ~100 s
    python -m loadtests.run --model tiny --peak-users 6 --ramp-s 4 --hold-s 14 \\
        --turn-pause-min 0.2 --turn-pause-max 0.5 --out /tmp/smoke      # the smoke run of the test suite
    python -m loadtests.run --url http://turnwise.example:8080 ...      # an already running deployment

Writes ``<out>/<name>_stats.csv``, ``_stats_history.csv``, ``_failures.csv``, ``_exceptions.csv``
(locust), ``<name>_summary.json`` (turns, requests, per-name percentiles, errors, SLO verdict, the
served model, the server's per-stage times from ``/metrics``, machine load) and ``<name>_latency.png``;
logs of the service, Redis and locust go to ``--logs`` (``runs/loadtest/logs``). The exit code is
locust's: 0 when the SLO gate passed, 1 on a breach.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loadtests.report import peak_rate, plot_latency, read_history, server_side, turn_series
from loadtests.stack import ROOT, build_bundle, redis_server, service

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm", help="bundle to build and serve")
    p.add_argument("--bundle", type=Path, help="serve this bundle instead of building one")
    p.add_argument("--bundle-cache", type=Path, default=ROOT / "runs" / "loadtest", help="where built bundles live")
    p.add_argument("--url", help="load an already running service instead of starting Redis + the service")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="loadtest", help="file name prefix of the results")
    p.add_argument("--logs", type=Path, default=ROOT / "runs" / "loadtest" / "logs",
                   help="service, Redis and locust logs (kept out of the results, which are committed)")
    p.add_argument("--peak-users", type=int, default=30)
    p.add_argument("--ramp-s", type=float, default=30.0)
    p.add_argument("--ramp-steps", type=int, default=3)
    p.add_argument("--hold-s", type=float, default=60.0)
    p.add_argument("--turn-pause-min", type=float, default=2.0)
    p.add_argument("--turn-pause-max", type=float, default=4.0)
    p.add_argument("--ws-weight", type=int, default=3)
    p.add_argument("--rest-weight", type=int, default=1)
    p.add_argument("--slo-p99-ms", type=float, default=500.0)
    p.add_argument("--slo-max-error-ratio", type=float, default=0.01)
    p.add_argument("--dialogues", default=str(ROOT / "samples" / "dialogues.jsonl"))
    p.add_argument("--source", default="jsonl")
    p.add_argument("--split", default=None)
    p.add_argument("--max-dialogues", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra TURNWISE_* settings for the service (repeatable)")
    return p.parse_args(argv)


def locust_command(args: argparse.Namespace, host: str, prefix: Path, summary: Path) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "--csv", str(prefix), "--csv-full-history", "--only-summary", "--loglevel", "INFO",
           "--exit-code-on-error", "1", "--summary-json", str(summary)]
    for opt in ("peak_users", "ramp_s", "ramp_steps", "hold_s", "turn_pause_min", "turn_pause_max", "ws_weight",
                "rest_weight", "slo_p99_ms", "slo_max_error_ratio", "dialogues", "source", "max_dialogues"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.split:
        cmd += ["--split", args.split]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    return cmd


def run_locust(args: argparse.Namespace, host: str, prefix: Path, summary: Path, log_path: Path) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    limit = args.ramp_s + args.hold_s + 120
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(locust_command(args, host, prefix, summary), stdout=logf, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
        try:
            return proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"locust did not finish within {limit:.0f}s (log: {log_path})") from None


def shown(path: str | Path) -> str:
    """A path as the results files show it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def finish(args: argparse.Namespace, prefix: Path, summary_path: Path, rc: int,
           stack: dict[str, Any]) -> dict[str, Any]:
    """Plot, merge what only the runner knows into the summary, print the headline figures."""
    if not summary_path.exists():
        raise RuntimeError(f"locust wrote no summary (exit code {rc}); see {args.logs / 'locust.log'}")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    history = Path(f"{prefix}_stats_history.csv")
    series = turn_series(read_history(history)) if history.exists() else {}
    png = plot_latency(series, Path(f"{prefix}_latency.png"),
                       title=f"turnwise live calls: {stack.get('model', {}).get('name', '?')} "
                             f"({stack.get('model', {}).get('variant', '?')}), peak {args.peak_users} calls",
                       slo_p99_ms=args.slo_p99_ms)
    summary["at_peak"] = peak_rate(series)
    if "bundle" in stack:
        stack["bundle"] = shown(stack["bundle"])
    summary["stack"] = stack
    summary["exit_code"] = rc
    if "dialogues" in summary.get("plan", {}):
        summary["plan"]["dialogues"] = shown(summary["plan"]["dialogues"])
    summary["files"] = {k: shown(v) for k, v in {
        "stats_csv": Path(f"{prefix}_stats.csv"), "history_csv": history, "png": png, "summary": summary_path}.items()}
    summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    t, r = summary["turns"], summary["requests"]
    print(f"users (peak): {summary['peak_users']}  turns: {t['requests']} ({t['per_s']:.1f}/s over the run, "
          f"{summary['at_peak']['turns_per_s']:.1f}/s at the peak)")
    if t["requests"]:
        print(f"turn latency ms: p50 {t['p50_ms']:.0f}  p95 {t['p95_ms']:.0f}  p99 {t['p99_ms']:.0f}  "
              f"max {t['max_ms']:.0f}")
    print(f"requests: {r['requests']}  failures: {r['failures']} (ratio {r['error_ratio']:.4f})")
    server = stack.get("server", {})
    if server.get("stage_mean_ms"):
        stages = "  ".join(f"{k} {v:.1f}" for k, v in sorted(server["stage_mean_ms"].items()))
        print(f"server-side mean ms per stage: {stages}  (mean batch size {server.get('mean_batch_size')})")
    slo = summary["slo"]
    print("SLO gate: " + ("passed" if slo["passed"] else "FAILED: " + "; ".join(slo["breaches"])))
    print(f"results: {summary_path.parent}/{prefix.name}_*")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / args.name
    logs = args.logs
    logs.mkdir(parents=True, exist_ok=True)
    summary_path = Path(f"{prefix}_summary.json")
    summary_path.unlink(missing_ok=True)
    stack: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                         "loadavg_before": os.getloadavg()},
                             "locust": version("locust")}
    with contextlib.ExitStack() as es:
        if args.url:
            host = args.url.rstrip("/")
            stack["service"] = "external"
        else:
            bundle = args.bundle or build_bundle(args.model, args.bundle_cache / f"{args.model}-bundle")
            redis_url = es.enter_context(redis_server(logs / "redis.log"))
            extra = dict(kv.split("=", 1) for kv in args.service_env)
            host, ready = es.enter_context(service(bundle, redis_url, logs / "service.log", env=extra))
            stack.update({"service": "turnwise serve (loopback)", "bundle": str(bundle), "model": ready["model"],
                          "store": ready["store"], "service_env": extra})
        started = time.time()
        rc = run_locust(args, host, prefix, summary_path, logs / "locust.log")
        stack["wall_s"] = round(time.time() - started, 1)
        try:
            with urllib.request.urlopen(f"{host}/metrics", timeout=10) as r:
                stack["server"] = server_side(r.read().decode())
        except (OSError, ValueError) as err:  # metrics are context; their absence must not fail the run
            stack["server"] = {"error": f"{type(err).__name__}: {err}"}
    stack["machine"]["loadavg_after"] = os.getloadavg()
    finish(args, prefix, summary_path, rc, stack)
    return rc


if __name__ == "__main__":
    sys.exit(main())
