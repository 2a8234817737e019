"""Facts about the machine a benchmark, load test or experiment ran on, for its results file."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The CPU features that decide training and inference speed here (bf16 and AMX matmuls, AVX-512, AVX2).
SPEED_FLAG_PREFIXES = ("avx512_bf16", "amx", "avx512f", "avx2")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows, else "unknown"."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags(prefixes: tuple[str, ...] | None = SPEED_FLAG_PREFIXES) -> list[str]:
    """The CPU's feature flags that start with one of ``prefixes`` (all of them with None), sorted."""
    flags = next((ln.split(":", 1)[1].split() for ln in _cpuinfo().splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if prefixes is None or f.startswith(prefixes))


def memory_gb() -> float | None:
    """Total memory in GiB (/proc/meminfo), or None where it cannot be read."""
    try:
        return round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages (other processes inflate every latency), [] where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_facts() -> dict[str, Any]:
    """What a results file records about the machine: CPU, cores, memory, OS and Python."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "flags": cpu_flags(),
    }
