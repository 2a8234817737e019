"""The SLO gate: p99 latency of scored turns and the error ratio of all requests.

The locustfile's ``quitting`` listener feeds it locust's final stats and sets the process exit code:
0 when every objective holds, 1 on a breach. A run that scored no turn at all is a breach too: an
empty run proves nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Which locust stats entries are scored turns: (request type, name).
WS_TURN = ("WS", "/v1/stream [turn]")
REST_TURN = ("POST", "/v1/dialogues/{id}/turns")
TURN_ENTRIES = (WS_TURN, REST_TURN)


@dataclass(frozen=True)
class Thresholds:
    p99_ms: float  # turns: 99th percentile of the time from sending a turn to its scores
    max_error_ratio: float  # all requests: failures / requests


@dataclass
class SloResult:
    passed: bool
    thresholds: dict[str, float]
    measured: dict[str, float]
    breaches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_slo(*, turns: int, turn_p99_ms: float, requests: int, failures: int, thresholds: Thresholds) -> SloResult:
    error_ratio = failures / requests if requests else 0.0
    breaches = []
    if turns == 0:
        breaches.append("no turn was scored")
    if turns and turn_p99_ms > thresholds.p99_ms:
        breaches.append(f"turn p99 {turn_p99_ms:.1f} ms > {thresholds.p99_ms:g} ms")
    if error_ratio > thresholds.max_error_ratio:
        breaches.append(f"error ratio {error_ratio:.4f} ({failures}/{requests}) > {thresholds.max_error_ratio:g}")
    return SloResult(
        passed=not breaches,
        thresholds=asdict(thresholds),
        measured={"turns": turns, "turn_p99_ms": turn_p99_ms, "requests": requests, "failures": failures,
                  "error_ratio": error_ratio},
        breaches=breaches,
    )
