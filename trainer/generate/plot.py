"""A heat map of an estimated intent chain: the transition matrix A, with pi and P(T) beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_hmm(hmm: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """``hmm``: :meth:`trainer.generate.hmm.IntentHMM.to_dict` output. Rows of A are sorted like the states."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = list(hmm["states"])
    a = np.asarray(hmm["transitions"], dtype=float)
    pi = np.asarray(hmm["initial"], dtype=float)
    k = len(states)
    size = max(6.0, 0.42 * k + 3)
    fig = plt.figure(figsize=(size + 4.5, size))
    grid = fig.add_gridspec(2, 3, width_ratios=[k, 2.0, 2.4], height_ratios=[1, 1], wspace=0.12, hspace=0.45)
    ax = fig.add_subplot(grid[:, 0])
    im = ax.imshow(a, cmap="viridis", vmin=0, vmax=max(0.05, float(a.max())))
    ax.set_xticks(range(k), states, rotation=70, ha="right", fontsize=8)
    ax.set_yticks(range(k), states, fontsize=8)
    ax.set_xlabel("next intent $s_{t+1}$")
    ax.set_ylabel("intent $s_t$")
    ax.set_title("transition matrix A  (row = from, column = to)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if a[i, j] >= 0.1:
                    ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if a[i, j] > 0.6 * a.max() else "white")
    ax_pi = fig.add_subplot(grid[:, 1], sharey=ax)  # one bar per row of A
    ax_pi.barh(range(k), pi, color="tab:orange")
    ax_pi.tick_params(axis="y", labelleft=False)
    ax_pi.set_title("initial intent $\\pi$", fontsize=9)
    ax_t = fig.add_subplot(grid[1, 2])
    ax_t.bar(hmm["turn_count"]["T"], hmm["turn_count"]["p"], color="tab:green")
    ax_t.set_title("turns per dialogue P(T)", fontsize=9)
    ax_t.set_xlabel("T", fontsize=8)
    fig.colorbar(im, ax=fig.add_subplot(grid[0, 2], frame_on=False, xticks=[], yticks=[]), fraction=0.5,
                 label="A[from, to]")
    fig.suptitle(title or f"Chain-of-Intent: task '{hmm['task']}', {hmm['dialogues']} dialogues, "
                          f"smoothing {hmm['smoothing']}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
