"""The soak test's measurements and report: RSS of the service processes over time, per-phase latency,
the machine (CPU flags, what else used the CPU) and the plot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from loadtests.soak_client import Audit


class RssSampler:
    """Every ``every_s``: the resident set size (MiB) of each process ``procs()`` names ({label: pid})."""

    def __init__(self, procs: Callable[[], dict[str, int]], audit: Audit, every_s: float = 2.0):
        self.procs, self.audit, self.every_s = procs, audit, every_s
        self.samples: list[tuple[float, str, int, float]] = []  # (t, label, pid, MiB)

    def sample(self) -> None:
        for label, pid in self.procs().items():
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.samples.append((self.audit.now(), label, pid, rss))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_s)

    def growth(self, warmup_s: float) -> dict[str, Any]:
        """Per process (label@pid): RSS first seen, after the warm-up (the baseline), at the end; growth %
        from the baseline to the end."""
        out: dict[str, Any] = {}
        for key in dict.fromkeys(f"{label}@{pid}" for _, label, pid, _ in self.samples):
            series = [(t, mb) for t, label, pid, mb in self.samples if f"{label}@{pid}" == key]
            t_first = series[0][0]
            base = next(((t, mb) for t, mb in series if t >= t_first + warmup_s), series[-1])
            end = series[-1]
            out[key] = {"lived_s": round(series[-1][0] - t_first, 1), "first_mib": round(series[0][1], 1),
                        "start_mib": round(base[1], 1),
                        "start_at_s": round(base[0], 1), "end_mib": round(end[1], 1), "end_at_s": round(end[0], 1),
                        "peak_mib": round(max(mb for _, mb in series), 1),
                        "growth_pct": round((end[1] - base[1]) / base[1] * 100, 2)}
        return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))], 1)


def phases(audit: Audit, bounds: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Latency p50/p99 of the turns first sent in each phase (name, start s, end s)."""
    out = {}
    for name, start, end in bounds:
        recs = [r for r in audit.turns.values() if start <= r.sent_at < end]
        lat = [r.latency_ms for r in recs if r.latency_ms is not None]
        turn = [r.turn_ms for r in recs if r.turn_ms is not None]
        out[name] = {"start_s": round(start, 1), "end_s": round(end, 1), "turns": len(recs), "answered": len(lat),
                     "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                     "turn_p50_ms": percentile(turn, 50), "turn_p99_ms": percentile(turn, 99)}
    return out


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "", list[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": flags, "logical_cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


class OtherLoad:
    """CPU seconds used during the run by processes that are not the soak's own (what else ran)."""

    def __init__(self, ours: Callable[[], set[int]]):
        self.ours = ours
        self.start = self._times()
        self.t0 = time.monotonic()
        self.load_start = os.getloadavg()

    @staticmethod
    def _times() -> dict[int, tuple[str, float]]:
        out = {}
        for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            try:
                ct = p.info["cpu_times"]
                name = " ".join((p.info["cmdline"] or [p.info["name"] or "?"])[:3])[:80]
                out[p.pid] = (name, ct.user + ct.system)
            except (psutil.Error, TypeError, AttributeError):
                continue
        return out

    def report(self, top: int = 8) -> dict[str, Any]:
        end, wall = self._times(), time.monotonic() - self.t0
        ours = self.ours() | {os.getpid()}
        used = [(name, cpu - self.start.get(pid, (name, 0.0))[1], pid) for pid, (name, cpu) in end.items()
                if pid not in ours]
        used = sorted((u for u in used if u[1] > 0.5), key=lambda u: -u[1])[:top]
        return {"loadavg_start": [round(x, 2) for x in self.load_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "other_processes": [{"cmd": _relative(n), "pid": pid, "cpu_s": round(s, 1),
                                     "cores": round(s / wall, 2)} for n, s, pid in used]}


REPO = Path(__file__).resolve().parents[1]


def _relative(cmd: str) -> str:
    """A command line with this checkout's path left out (results files carry no machine paths)."""
    return cmd.replace(f"{REPO}{os.sep}", "")


def plot(audit: Audit, rss: RssSampler, faults: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    answered = sorted((r.answered_at, r.latency_ms) for r in audit.turns.values()
                      if r.answered_at is not None and r.latency_ms is not None)
    if answered:
        ax1.scatter([a for a, _ in answered], [b for _, b in answered], s=3, alpha=0.35, label="turn latency")
        bucket: dict[int, list[float]] = {}
        for t, ms in answered:
            bucket.setdefault(int(t // 5), []).append(ms)
        xs = sorted(bucket)
        ax1.plot([x * 5 + 2.5 for x in xs], [percentile(bucket[x], 99) for x in xs], color="C3", label="p99 (5 s)")
        ax1.plot([x * 5 + 2.5 for x in xs], [percentile(bucket[x], 50) for x in xs], color="C2", label="p50 (5 s)")
    ax1.set_yscale("log")
    ax1.set_ylabel("ms (send -> scores)")
    ax1.legend(loc="upper left", fontsize=8)
    for key in dict.fromkeys(f"{label}@{pid}" for _, label, pid, _ in rss.samples):
        pts = [(t, mb) for t, label, pid, mb in rss.samples if f"{label}@{pid}" == key]
        ax2.plot([t for t, _ in pts], [mb for _, mb in pts], label=key)
    ax2.set_ylabel("RSS (MiB)")
    ax2.set_xlabel("seconds since start")
    ax2.legend(loc="upper left", fontsize=8)
    for f in faults:
        for ax in (ax1, ax2):
            ax.axvline(f["at_s"], color="k", linestyle="--", linewidth=0.8)
        ax1.annotate(f["kind"], (f["at_s"], 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=8,
                     va="top", ha="right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
