"""The figures of a calibration report (:mod:`trainer.teachers.calibration`): ECE vs N, reliability, H2 pairs.

Drawn from the report dict alone (what ``calibration.json`` holds), with matplotlib's Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _title(report: Mapping[str, Any], what: str) -> str:
    t = report.get("teacher", {})
    kind = t.get("kind", "?")
    name = "SIMULATED TEACHER" if kind == "simulated" else f"{kind} teacher"
    model = str(t.get("model", "")).split(" (")[0].split("/")[-1]  # short: the title must fit the figure
    return f"{what} — task '{report['task']}', {name} ({model})"


def plot_report(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """``ece_vs_n.png`` (when the report has the curve), ``reliability.png`` and ``h2_pairs.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    figures = [("ece_vs_n.png", _ece_vs_n)] if "ece_vs_n" in report else []
    figures += [("reliability.png", _reliability), ("h2_pairs.png", _h2_pairs)]
    paths = []
    for name, draw in figures:
        fig = draw(plt, report)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def _ece_vs_n(plt: Any, report: Mapping[str, Any]) -> Any:
    curve = report["ece_vs_n"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["n"] for r in curve]
    ax.errorbar(ns, [r["ece"] for r in curve], yerr=[r["ece_std"] for r in curve], marker="o", ms=3, capsize=2)
    ax.set_xlabel("ensemble size N (votes per turn)")
    ax.set_ylabel(f"ECE ({report['n_buckets']} buckets)")
    ax.set_title(_title(report, "ECE vs N"), fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _reliability(plt: Any, report: Mapping[str, Any]) -> Any:
    diagrams = [("N=1", report.get("reliability_n1")), (f"N={report['n_votes']}", report["reliability_stored_n"])]
    diagrams = [(k, v) for k, v in diagrams if v]
    fig, axes = plt.subplots(1, len(diagrams), figsize=(4.5 * len(diagrams), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], diagrams, strict=True):
        mids = [(r["lo"] + r["hi"]) / 2 for r in rows]
        freq = [r["frequency"] if r["frequency"] is not None else 0.0 for r in rows]
        ax.bar(mids, freq, width=1 / len(rows), edgecolor="k", alpha=0.7, label="observed frequency")
        conf = [(r["mean_confidence"], r["frequency"]) for r in rows if r["count"]]
        ax.plot([c for c, _ in conf], [f for _, f in conf], "ro-", ms=4, label="(mean S, frequency)")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        for m, r in zip(mids, rows, strict=True):
            ax.text(m, 0.02, str(r["count"]), ha="center", fontsize=6, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("teacher score S (one-vs-rest)")
        ax.set_ylabel("fraction positive")
        ax.set_title(f"reliability, {name}", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(_title(report, "Reliability"), fontsize=8)
    return fig


def _h2_pairs(plt: Any, report: Mapping[str, Any]) -> Any:
    h2 = report["h2"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, color in (("intra", "tab:blue"), ("inter", "tab:orange")):
        cur = h2[key]
        pts = [(b["mean_delta"], b["p_first_higher"]) for b in cur["buckets"] if b["count"]]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o", color=color,
                    label=f"{key}-session ({cur['pairs']} pairs)")
        if cur["slope"] is not None:
            xs = np.linspace(0, 1, 11)
            ax.plot(xs, cur["intercept"] + cur["slope"] * xs, "-", color=color,
                    label=f"{key} fit: slope {cur['slope']:.3f}")
    ax.set_xlabel("ΔS = S_i - S_j (teacher prefers i)")
    ax.set_ylabel("P(y_i > y_j)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(_title(report, "H2: intra vs inter pairs"), fontsize=8)
    return fig
