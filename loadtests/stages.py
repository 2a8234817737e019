"""The ramp plan behind the locust ``LoadTestShape``: stepped ramp-up, then a hold at the peak.

Steps (rather than a straight line) leave a plateau at each load level, so the latency-over-time
plot reads as latency vs. concurrent calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    until_s: float  # the stage lasts until this many seconds into the run
    users: int
    spawn_rate: float  # users started per second when entering the stage


def ramp_stages(peak_users: int, ramp_s: float, hold_s: float, steps: int = 4) -> list[Stage]:
    """``steps`` equal steps up to ``peak_users`` over ``ramp_s`` seconds, then ``hold_s`` at the peak."""
    if peak_users < 1:
        raise ValueError("peak_users must be >= 1")
    if ramp_s < 0 or hold_s <= 0:
        raise ValueError("ramp_s must be >= 0 and hold_s > 0")
    steps = max(1, min(steps, peak_users)) if ramp_s > 0 else 1
    stages: list[Stage] = []
    step_s = ramp_s / steps if ramp_s > 0 else 0.0
    previous = 0
    for k in range(1, steps + 1 if ramp_s > 0 else 1):
        users = math.ceil(peak_users * k / steps)
        # Spawn a step's users within a quarter of the step, so most of it runs at its level.
        rate = max(1.0, (users - previous) / max(step_s / 4, 0.5))
        stages.append(Stage(until_s=round(step_s * k, 3), users=users, spawn_rate=rate))
        previous = users
    hold_rate = max(1.0, (peak_users - previous) / 0.5) if previous < peak_users else max(1.0, float(peak_users))
    stages.append(Stage(until_s=round(ramp_s + hold_s, 3), users=peak_users, spawn_rate=hold_rate))
    return stages


def stage_at(stages: list[Stage], t: float) -> Stage | None:
    """The stage running at ``t`` seconds, or None once the plan is over (locust then stops)."""
    for stage in stages:
        if t < stage.until_s:
            return stage
    return None
