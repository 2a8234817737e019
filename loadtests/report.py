"""After a run: the latency-over-time PNG and the turns/s at the peak, from locust's CSV history.

Locust appends to ``<prefix>_stats_history.csv`` every second; with ``--csv-full-history`` each row
holds one request name's cumulative count and the percentiles of its last 10 s (plus an
``Aggregated`` row). Rates are computed here from count deltas: locust's own ``Requests/s`` column
is a trailing average that still includes the ramp-up at the start of the hold.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadtests.slo import TURN_ENTRIES

PERCENTILES = ("50%", "95%", "99%")


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # "N/A" before the first request of a window
        return None


def read_history(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def turn_series(rows: list[dict[str, str]], smooth: int = 5) -> dict[str, list[tuple[float, float | None]]]:
    """Per timestamp (s since the first row): users, cumulative turns (WS + REST), turns/s (count
    deltas over ``smooth`` samples), failures/s, and the 10-s-window percentiles of the busier turn entry."""
    if not rows:
        return {}
    t0 = min(int(r["Timestamp"]) for r in rows)
    by_ts: dict[int, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_ts[int(r["Timestamp"])].append(r)
    turn_keys = set(TURN_ENTRIES)
    series: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for ts in sorted(by_ts):
        t = float(ts - t0)
        group = by_ts[ts]
        turns = [r for r in group if (r["Type"], r["Name"]) in turn_keys]
        agg = next((r for r in group if r["Name"] == "Aggregated"), None)
        series["users"].append((t, _num(group[0]["User Count"])))
        series["turns"].append((t, sum(_num(r["Total Request Count"]) or 0.0 for r in turns)))
        series["failures_per_s"].append((t, _num(agg["Failures/s"]) if agg else None))
        busiest = max(turns, key=lambda r: _num(r["Total Request Count"]) or 0.0, default=None)
        for p in PERCENTILES:
            series[p].append((t, _num(busiest[p]) if busiest else None))
    counts = series["turns"]
    for i, (t, c) in enumerate(counts):
        j = max(0, i - smooth)
        t_j, c_j = counts[j]
        series["turns_per_s"].append((t, ((c or 0.0) - (c_j or 0.0)) / (t - t_j) if t > t_j else None))
    return dict(series)


def peak_rate(series: dict[str, list[tuple[float, float | None]]]) -> dict[str, Any]:
    """Turns/s while the user count was at its highest (the hold): count delta / time delta."""
    users = series.get("users", [])
    top = max((u for _, u in users if u is not None), default=0)
    at_top = [(t, c) for (t, u), (_, c) in zip(users, series.get("turns", []), strict=True)
              if u == top and c is not None]
    if len(at_top) < 2 or at_top[-1][0] <= at_top[0][0]:
        return {"users": top, "turns_per_s": 0.0, "seconds": 0.0}
    (t_a, c_a), (t_b, c_b) = at_top[0], at_top[-1]
    return {"users": top, "turns_per_s": (c_b - c_a) / (t_b - t_a), "seconds": t_b - t_a}


def plot_latency(series: dict[str, list[tuple[float, float | None]]], out: Path, *, title: str,
                 slo_p99_ms: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_load) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for p, style in zip(PERCENTILES, ("-", "--", ":"), strict=True):
        pts = [(t, v) for t, v in series.get(p, []) if v is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=f"turn p{p.rstrip('%')} (last 10 s)")
    top = max((v for p in PERCENTILES for _, v in series.get(p, []) if v is not None), default=0.0)
    if slo_p99_ms is not None and slo_p99_ms <= 2 * top:
        ax.axhline(slo_p99_ms, color="red", linewidth=0.8, label=f"SLO p99 {slo_p99_ms:g} ms")
    elif slo_p99_ms is not None:  # far above what was measured: a line there would flatten the curves
        title += f" (SLO p99 {slo_p99_ms:g} ms, off scale)"
    ax.set_ylim(bottom=0)
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    users = [(t, v) for t, v in series.get("users", []) if v is not None]
    if users:
        ax_load.step(*zip(*users, strict=True), where="post", color="gray", label="concurrent calls (users)")
    ax_load.set_ylabel("users")
    ax_load.set_xlabel("seconds since start")
    ax_rate = ax_load.twinx()
    rate = [(t, v) for t, v in series.get("turns_per_s", []) if v is not None]
    fails = [(t, v) for t, v in series.get("failures_per_s", []) if v is not None]
    if rate:
        ax_rate.plot(*zip(*rate, strict=True), color="tab:blue", label="turns/s")
    if fails and any(v for _, v in fails):
        ax_rate.plot(*zip(*fails, strict=True), color="tab:red", label="failures/s")
    ax_rate.set_ylabel("per second")
    ax_rate.set_ylim(bottom=0)
    handles = ax_load.get_legend_handles_labels()[0] + ax_rate.get_legend_handles_labels()[0]
    ax_load.legend(handles=handles, loc="upper left", fontsize=8)
    ax_load.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def server_side(metrics_text: str) -> dict[str, Any]:
    """Mean time per serving stage, mean end-to-end time per endpoint and mean batch size, from the
    service's ``/metrics`` after the run (the server's view of where a turn's time went)."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            label = sample.labels.get("stage") or sample.labels.get("endpoint") or ""
            if sample.name.endswith("_sum"):
                sums[(sample.name[:-4], label)] += sample.value
            elif sample.name.endswith("_count"):
                counts[(sample.name[:-6], label)] += sample.value

    def means(metric: str, scale: float) -> dict[str, float]:
        return {label: round(sums[(m, label)] / n * scale, 3)
                for (m, label), n in counts.items() if m == metric and n > 0}

    batch = means("turnwise_batch_size", 1.0)
    return {
        "stage_mean_ms": means("turnwise_stage_duration_seconds", 1000.0),
        "request_mean_ms": means("turnwise_request_duration_seconds", 1000.0),
        "mean_batch_size": next(iter(batch.values()), None),
        "model_calls": counts.get(("turnwise_batch_size", ""), 0.0),
    }

