"""``make soak``: live calls for minutes against two ``turnwise serve`` processes on one real
redis-server, with three faults mid-run, and an audit that every turn was answered exactly once.

    python -m loadtests.soak                                   # 10 min, 100 calls, MiniLM streaming bundle
    python -m loadtests.soak --calls 1000 --name soak-1000     # the 1,000-call run
    python -m loadtests.soak --model tiny --calls 12 --minutes 1 --pause-min 0.3 --pause-max 0.8 --out /tmp/s

Everything runs on loopback: redis-server and both services on free ports, the callers
(:mod:`loadtests.soak_client`: one WebSocket per call, a turn every ``--pause-min``..``--pause-max`` s,
the turns of samples/dialogues.jsonl) in this process. The services serve ``<work>/models/current``, a
symlink to a copy of the bundle. The faults, at 30 %, 50 % and 70 % of the run:

1. ``redis``: redis-server is killed (SIGKILL) and started again on the same port ``--redis-outage-s``
   later (empty: nothing is persisted; calls go on from the turns they send next);
2. ``reload``: a new version of the bundle (a copy, version ``<v>-reloaded``, re-sealed) is published
   by re-pointing the symlink, and ``POST /v1/admin/reload`` is sent to both services;
3. ``sigterm``: one service gets SIGTERM; its calls are closed with 1012 and go on on the other
   (the caller resends the unanswered turn); a replacement is started on the same port.

Writes ``<out>/<name>.json`` (``--name``, default ``soak``: the audit, per-phase latency, error frames
by code, RSS of each service process after the warm-up and at the end, the machine and what else ran
on it) and ``<out>/<name>.png``. The exit code is 0 when nothing was lost or duplicated, every fault was
injected, the drained service closed its calls with 1012 and RSS grew less than ``--max-rss-growth``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bundle.manifest import seal
from harness.ports import free_port
from harness.redis import RedisServer
from loadtests.calls import CallBook
from loadtests.soak_client import Audit, Pace, drive
from loadtests.soak_report import OtherLoad, RssSampler, cpu_info, phases, plot
from loadtests.stack import ROOT, turnwise_command

FAULT_AT = {"redis": 0.3, "reload": 0.5, "sigterm": 0.7}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100, help="concurrent live calls")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the calls run")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="soak.json and soak.png go here")
    p.add_argument("--name", default="soak", help="file name of the results: <out>/<name>.json and .png")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "soak", help="bundle copies, logs, Redis dir")
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm", help="bundle to build and serve")
    p.add_argument("--flat", action="store_true", help="a flat-window bundle instead of the streaming one")
    p.add_argument("--bundle", type=Path, help="serve this bundle instead of building one")
    p.add_argument("--pause-min", type=float, default=2.0, help="seconds between a call's turns, at least")
    p.add_argument("--pause-max", type=float, default=4.0, help="... and at most")
    p.add_argument("--redis-outage-s", type=float, default=3.0)
    p.add_argument("--max-rss-growth", type=float, default=5.0, help="percent, baseline after the warm-up")
    p.add_argument("--warmup-s", type=float, help="RSS baseline and the steady phase start after this "
                   "(default 10 %% of the run, at most 60 s); streaming bundles fill their state cache "
                   "(TURNWISE_STATE_CACHE_MB) for a while first")
    p.add_argument("--dialogues", type=Path, default=ROOT / "samples" / "dialogues.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra TURNWISE_* settings for both services (repeatable)")
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Service:
    """One ``turnwise serve`` process on a fixed loopback port (a replacement reuses the port)."""

    def __init__(self, name: str, bundle: Path, env: dict[str, str], logs: Path):
        self.name, self.bundle, self.env, self.logs = name, bundle, env, logs
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> Service:
        self.starts += 1
        log = (self.logs / f"{self.name}-{self.starts}.log").open("wb")
        cmd = [*turnwise_command(), "serve", "--bundle", str(self.bundle), "--host", "127.0.0.1",
               "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready (log: {self.logs}/{self.name}-{self.starts}.log)")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def build_bundle(args: argparse.Namespace) -> Path:
    if args.bundle is not None:
        return Path(args.bundle)
    from harness.bundles import untrained_bundle

    kind = f"{args.model}-{'flat' if args.flat else 'stream'}"
    say(f"bundle: untrained {kind} (built once, cached in {args.work / 'bundles'})")
    return untrained_bundle(args.work / "bundles" / kind, kind=args.model, streaming=not args.flat,
                            name=f"soak-{kind}", version="soak-1")


def publish_new_version(models: Path) -> str:
    """Copy the served version, give it a new version (re-sealed), re-point ``current`` at it."""
    current = models / "current"
    old = Path(os.path.realpath(current))
    manifest = json.loads((old / "bundle.json").read_text())
    version = f"{manifest['version']}-reloaded"
    new = models / version
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(old, new)
    manifest["version"] = version
    (new / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    seal(new)
    tmp = models / "current.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(new.name, target_is_directory=True)
    os.replace(tmp, current)
    return version


async def inject(kind: str, at_s: float, audit: Audit, redis: RedisServer, services: list[Service],
                 models: Path, outage_s: float, faults: list[dict[str, Any]]) -> None:
    await asyncio.sleep(max(0.0, at_s - audit.now()))
    fault: dict[str, Any] = {"kind": kind, "at_s": round(audit.now(), 1)}
    say(f"fault: {kind} at {fault['at_s']} s")
    if kind == "redis":
        assert redis.proc is not None
        redis.proc.kill()  # SIGKILL: an outage, not a clean shutdown
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(redis.start)
        fault |= {"back_at_s": round(audit.now(), 1), "ok": True}
    elif kind == "reload":
        version = await asyncio.to_thread(publish_new_version, models)
        answers = []
        async with httpx.AsyncClient(timeout=120) as http:
            for s in services:
                r = await http.post(f"{s.url}/v1/admin/reload")
                answers.append({"service": s.name, "status": r.status_code, "body": r.json()})
        fault |= {"version": version, "answers": answers, "done_at_s": round(audit.now(), 1),
                  "ok": all(a["status"] == 200 and a["body"].get("reloaded") for a in answers)}
    else:
        victim = services[0]
        code = await asyncio.to_thread(victim.stop, signal.SIGTERM)
        fault |= {"service": victim.name, "exit_code": code, "exited_at_s": round(audit.now(), 1)}
        await asyncio.to_thread(victim.start)
        fault |= {"replacement_ready_at_s": round(audit.now(), 1), "ok": code == 0}
    faults.append(fault)


async def soak(args: argparse.Namespace, redis: RedisServer, services: list[Service], models: Path,
               audit: Audit) -> tuple[list[dict[str, Any]], RssSampler, OtherLoad]:
    seconds = args.minutes * 60
    book = CallBook.load(args.dialogues, "jsonl", None, None, run_id=f"soak{int(time.time())}", seed=args.seed)
    pace = Pace(pause_s=(args.pause_min, args.pause_max), retry_after_s=1.0)

    def procs() -> dict[str, int]:
        out = {s.name: s.proc.pid for s in services if s.proc is not None and s.proc.poll() is None}
        if redis.proc is not None and redis.proc.poll() is None:
            out["redis"] = redis.proc.pid
        return out

    rss = RssSampler(procs, audit)
    other = OtherLoad(lambda: set(procs().values()))
    faults: list[dict[str, Any]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(rss.run(stop))
    injectors = [asyncio.create_task(inject(k, f * seconds, audit, redis, services, models, args.redis_outage_s,
                                            faults)) for k, f in FAULT_AT.items()]
    await drive([f"ws://127.0.0.1:{s.port}/v1/stream" for s in services], book, args.calls, seconds, pace, audit,
                seed=args.seed)
    await asyncio.gather(*injectors)
    stop.set()
    await sampler
    return sorted(faults, key=lambda f: f["at_s"]), rss, other


def report(args: argparse.Namespace, audit: Audit, faults: list[dict[str, Any]], rss: RssSampler, other: OtherLoad,
           bundle: Path, wall_s: float) -> dict[str, Any]:
    seconds = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else min(60.0, 0.1 * seconds)
    at = {f["kind"]: f["at_s"] for f in faults}
    bounds = [("warmup", 0.0, warmup), ("steady", warmup, at.get("redis", seconds)),
              ("after_redis_kill", at.get("redis", seconds), at.get("reload", seconds)),
              ("after_reload", at.get("reload", seconds), at.get("sigterm", seconds)),
              ("after_sigterm", at.get("sigterm", seconds), audit.now())]
    services = {k: v for k, v in rss.growth(warmup).items() if not k.startswith("redis@")}
    summary = audit.summary()
    checks = {
        "nothing_lost": summary["lost"] == 0, "nothing_duplicated": summary["duplicated"] == 0,
        "every_turn_accounted_for": summary["accounted_for"],
        "faults_injected": sorted(at) == sorted(FAULT_AT) and all(f.get("ok") for f in faults),
        "drain_closed_with_1012": summary["server_closes_by_code"].get("1012", 0) > 0,
        # judged on the processes that served at least half the run (not the SIGTERMed one's replacement)
        "rss_growth_below_limit": all(v["growth_pct"] < args.max_rss_growth for v in services.values()
                                      if v["lived_s"] >= 0.5 * seconds),
    }
    manifest = json.loads((bundle / "bundle.json").read_text())
    return {
        "config": {"calls": args.calls, "minutes": args.minutes, "pause_s": [args.pause_min, args.pause_max],
                   "bundle": {"name": manifest["name"], "version": manifest["version"],
                              "window": manifest["window"], "variants": sorted(manifest["variants"])},
                   "replicas": 2, "redis": "redis-server on loopback (no persistence)",
                   "service_env": args.service_env, "fault_at_fraction": FAULT_AT, "warmup_s": warmup},
        "passed": all(checks.values()), "checks": checks, "audit": summary, "phases": phases(audit, bounds),
        "faults": faults, "rss": {"services": services, "redis": {k: v for k, v in rss.growth(warmup).items()
                                                                  if k.startswith("redis@")}},
        "machine": {**cpu_info(), **other.report()}, "wall_s": round(wall_s, 1),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.calls + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # one socket per call, on both sides
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(args)
    models = args.work / "models"
    shutil.rmtree(models, ignore_errors=True)
    models.mkdir(parents=True)
    shutil.copytree(bundle, models / "v1")
    (models / "current").symlink_to("v1", target_is_directory=True)
    started = time.monotonic()
    with RedisServer(args.work, log_path=logs / "redis.log") as redis:
        env = {**os.environ, "TURNWISE_REDIS_URL": redis.url, "TURNWISE_LOG_LEVEL": "warning",
               "TURNWISE_RELOAD_POLL_S": "0", "TURNWISE_INTRA_OP_THREADS": "1", "TURNWISE_INTRA_OP_SPINNING": "false",
               "TOKENIZERS_PARALLELISM": "false", **dict(kv.split("=", 1) for kv in args.service_env)}
        services = [Service(f"serve-{i}", models / "current", env, logs) for i in (0, 1)]
        try:
            for s in services:
                s.start()
            say(f"{args.calls} calls for {args.minutes:g} min against {', '.join(s.url for s in services)}")
            audit = Audit()
            faults, rss, other = asyncio.run(soak(args, redis, services, models, audit))
        finally:
            for s in services:
                s.stop()
    result = report(args, audit, faults, rss, other, bundle, time.monotonic() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(audit, rss, faults, args.out / f"{args.name}.png",
         f"soak: {args.calls} calls, {args.minutes:g} min, {result['config']['bundle']['name']}; "
         f"lost {result['audit']['lost']}, duplicated {result['audit']['duplicated']}")
    a = result["audit"]
    say(f"turns {a['turns_sent']}: answered {a['answered']}, refused {a['refused']}, lost {a['lost']}, "
        f"duplicated {a['duplicated']}; checks {result['checks']}")
    say(f"wrote {args.out / args.name}.json and .png")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
