"""The figures and Markdown tables of a Table 1 run (:mod:`trainer.experiment`), drawn from its JSON alone.

Every figure uses the same colour for a method (:data:`COLOURS`), draws error bars of ± one standard
deviation over the seeds (said in the legend), a dashed line at the majority-class score of the test
split when the result knows it, and -- on the accuracy panel -- the paper's own Table 1 values as
hollow reference markers (:data:`PAPER_TABLE1`: a different, private intent data set, so a level to
compare shapes against, not a target). Titles name dataset, task, teacher and training variant.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from turnwise.jsonl import dumps_json

MAIN_METHODS = ("finetune_only", "pointwise", "pairwise", "pairwise+pointwise")
COMBINED = "pairwise+pointwise"  # a suffix "@w" names another pointwise weight: pairwise+pointwise@0.5
COLOURS = {"finetune_only": "#7f7f7f", "pointwise": "#1f77b4", "pairwise": "#d62728",
           "pairwise+pointwise": "#2ca02c", "pairwise_alpha0": "#9467bd", "pairwise_alpha1": "#8c564b",
           "pairwise_inter": "#e377c2", "pairwise+pointwise@0.5": "#17becf"}
# Liu et al. (arXiv 2503.05620), Table 1, at 1 / 5 / 10 / 25 % gold (private intent data, ToD-BERT, an
# LLM ensemble as teacher).
PAPER_TABLE1 = {"gold_fractions": [0.01, 0.05, 0.10, 0.25],
                "finetune_only": [27.3, 29.5, 34.7, 69.6], "pointwise": [31.8, 33.4, 47.2, 77.3],
                "pairwise": [38.4, 45.8, 52.1, 78.4]}


def is_main(name: str) -> bool:
    """Methods run at every gold fraction (the rest are ablations, at the smallest one)."""
    return name in MAIN_METHODS or name.startswith(COMBINED + "@")


def in_paper_order(names: Any) -> list[str]:
    """Table 1's methods in the paper's order, then the weight variants, then the ablations alphabetically."""
    present = set(names)
    variants = sorted((n for n in present if n.startswith(COMBINED + "@")), key=lambda n: float(n.split("@")[1]))
    main = [n for n in MAIN_METHODS if n in present] + variants
    return main + sorted(present - set(main))


def colour(name: str) -> str:
    return COLOURS.get(name, "#bcbd22" if name.startswith(COMBINED + "@") else "#000000")


def stem(result: dict[str, Any]) -> str:
    """``table1-<dataset>-<teacher>``; a one-vs-rest task adds itself: ``table1-<dataset>-act-question-<teacher>``."""
    task = str(result.get("task", ""))
    middle = f"-{task.replace(':', '-')}" if ":" in task else ""
    return f"table1-{result['dataset']}{middle}-{result['teacher']}"


def majority(dialogues: Sequence[Any], task: str) -> dict[str, Any] | None:
    """Accuracy and macro-F1 (over the labels present, as :mod:`trainer.evaluate` averages it) of always
    answering the most frequent gold label of ``dialogues``."""
    labels = [t.labels[task] for d in dialogues for t in d.turns if task in t.labels]
    if not labels:
        return None
    values, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    acc = float(counts.max() / counts.sum())
    return {"label": str(values[counts.argmax()]), "accuracy": acc,
            "macro_f1": 2 * acc / (1 + acc) / len(values)}


def scale(result: dict[str, Any]) -> float:
    """What turns the result's scores into percent: 1 for ``unit: percent``, 100 for the first round's
    files, which kept fractions."""
    return 1.0 if result.get("unit") == "percent" else 100.0


def as_percent(maj: dict[str, Any] | None) -> dict[str, Any] | None:
    """:func:`majority` (fractions) in percent, as a result with ``unit: percent`` keeps it."""
    return None if maj is None else {**maj, "accuracy": 100 * maj["accuracy"], "macro_f1": 100 * maj["macro_f1"]}


def _cell(m: dict[str, Any], k: int, mean_key: str, std_key: str, x: float, seeds: int) -> str:
    if m[mean_key][k] is None:
        return ""
    n = m.get("n", [seeds] * len(m[mean_key]))[k]
    short = f" (n={n})" if n < seeds else ""  # a partial run: fewer seeds than planned behind this cell
    return f"{x * m[mean_key][k]:.1f} ± {x * m[std_key][k]:.1f}{short}"


def _table(result: dict[str, Any], mean_key: str, std_key: str) -> list[str]:
    fr = result["gold_fractions"]
    x, seeds = scale(result), len(result.get("config", {}).get("seeds", [])) or 1
    lines = [f"| method | {' | '.join(f'{f:.0%} gold' for f in fr)} |", "|---" * (len(fr) + 1) + "|"]
    for name in in_paper_order(result["methods"]):
        m = result["methods"][name]
        cells = []
        for f in fr:
            if f in m["gold_fractions"]:
                cells.append(_cell(m, m["gold_fractions"].index(f), mean_key, std_key, x, seeds))
            else:
                cells.append("")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def _teacher_line(info: dict[str, Any]) -> str:
    h2 = info.get("h2") or {}
    if h2.get("slope_intra") is None or h2.get("slope_inter") is None:
        return ""
    return (f"Teacher check (paper Fig. 4), P(y_i > y_j) against ΔS: slope {h2['slope_intra']:.3f} intra-session vs "
            f"{h2['slope_inter']:.3f} inter-session; ECE {info.get('ece', float('nan')):.3f}.")


def teacher_title(result: dict[str, Any], accuracy_digits: int = 3) -> str:
    """What a title says of the teacher: its name and accuracy on the training dialogues; a table of
    finetune-only runs (the budget check) never runs its teacher."""
    if set(result.get("config", {}).get("methods", result["methods"])) <= {"finetune_only"}:  # planned, not run
        return "teacher: none (finetune-only)"
    acc = result["teacher_info"].get("accuracy_on_train")
    measured = f"accuracy on train {acc:.{accuracy_digits}f}" if isinstance(acc, float) else "not run yet"
    return f"teacher: {result['teacher_label']} ({measured})"


def machine_label(m: dict[str, Any]) -> str:
    """A run's machine in a few words: ``AMD EPYC (avx2, avx512f), 1 thread``, or the GPU it trained on."""
    where = m.get("gpu") or f"{m.get('cpu', '?')} ({', '.join(m.get('flags', [])) or 'no speed flags read'})"
    threads = m.get("threads")
    return f"{where}, {threads} thread{'s' if threads != 1 else ''}" if threads else where


def markdown(result: dict[str, Any]) -> str:
    """Accuracy and macro-F1 tables (mean ± std over seeds), as Markdown."""
    info = result["teacher_info"]
    lines = [f"### {result['dataset']} {result['task']} — {teacher_title(result)}", "", "Accuracy (%)", "",
             *_table(result, "mean", "std"), "", "Macro-F1 (%)", "",
             *_table(result, "macro_f1_mean", "macro_f1_std"), "",
             f"On {result['sizes']['test']} test dialogues, mean ± std over seeds {result['config']['seeds']}; "
             f"wall time {result['wall_s'] / 60:.1f} min" + (" (teacher, pretrainings and finetunings summed, "
                                                            "over every start of the run)." if "resumed_runs" in result
                                                            else ".")]
    if result.get("complete") is False:
        done = len(result.get("runs", []))
        lines.insert(1, f"\n**Partial: {done} of {result.get('planned_runs', '?')} runs finished** "
                        "(`n=` marks a cell with fewer seeds than planned).")
    maj, x = result.get("majority"), scale(result)
    if maj:
        lines.append(f"Majority class '{maj['label']}': {x * maj['accuracy']:.1f} % accuracy, "
                     f"{x * maj['macro_f1']:.1f} % macro-F1.")
    if any(n.startswith(COMBINED) for n in result["methods"]):
        w = result["config"].get("pointwise_weight")
        lines.append(f"`{COMBINED}` uses pointwise weight w = {w}; `{COMBINED}@w` names another w.")
    machines = Counter(machine_label(r["machine"]) for r in result.get("runs", [])
                       if r.get("machine") and not r.get("shared_from"))  # a kept run counts where it ran
    if machines:  # wall times depend on it, and a table resumed on another machine mixes them
        unknown = sum(not r.get("machine") for r in result.get("runs", []))
        lines.append("Finetuning runs by machine: " + "; ".join(f"{m}: {n}" for m, n in sorted(machines.items()))
                     + (f"; not recorded (run before runs recorded it): {unknown}" if unknown else "") + ".")
    shared = Counter(r["shared_from"] for r in result.get("runs", []) if r.get("shared_from"))
    for sibling, n in sorted(shared.items()):  # finetune-only does not see the teacher
        lines.append(f"{n} finetune-only run{'s' if n > 1 else ''} kept from {sibling} (the same training "
                     "settings; finetune-only never sees the teacher).")
    if _teacher_line(info):
        lines.append(_teacher_line(info))
    return "\n".join(lines) + "\n"


def variant(result: dict[str, Any]) -> str:
    """The training setting in a few words, for titles."""
    c = result.get("config", {})
    ctx = (f"{c.get('max_context_tokens')}-token spans" if c.get("encoder") == "streaming"
           else f"{c.get('max_tokens')}-token windows")
    pre = (f"{c['pretrain_epochs']} pretraining epoch(s)" if c.get("pretrain_epochs")
           else f"{c.get('pretrain_steps')} pretraining steps")
    preset = f"{c['preset']} preset, " if c.get("preset") else ""
    return f"{preset}{c.get('encoder', 'flat')} encoder, {ctx}, {pre}, {result['sizes']['train']} train dialogues"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = result.get("config", {}).get("seeds", [])
    x100 = scale(result)
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8))
    maj = result.get("majority")
    for ax, (key, std_key, label, maj_key) in zip(axes, [("mean", "std", "test accuracy (%)", "accuracy"),
                                                         ("macro_f1_mean", "macro_f1_std", "test macro-F1 (%)",
                                                          "macro_f1")], strict=True):
        names = in_paper_order(result["methods"])
        for i, name in enumerate(names):
            m = result["methods"][name]
            nudge = 1 + 0.025 * (i - (len(names) - 1) / 2)  # side by side: equal results stay visible
            x = [100 * f * nudge for f in m["gold_fractions"]]
            mean, std = np.array(m[key], float), np.array(m[std_key], float)  # None (not run yet) -> NaN
            ax.errorbar(x, x100 * mean, yerr=x100 * std, marker="o" if is_main(name) else "x", capsize=3,
                        color=colour(name), label=name, ls="-" if is_main(name) else "none")
        if maj:
            ax.axhline(x100 * maj[maj_key], color="black", ls="--", lw=1,
                       label=f"majority class ({maj['label']})")
        if key == "mean":
            for name in ("finetune_only", "pointwise", "pairwise"):
                ax.plot([100 * f for f in PAPER_TABLE1["gold_fractions"]], PAPER_TABLE1[name], ls="none",
                        marker="D", mfc="none", color=colour(name), ms=6, label=f"paper's Table 1: {name}")
        ax.set_xscale("log")
        ticks = [100 * f for f in sorted({*result["gold_fractions"], *PAPER_TABLE1["gold_fractions"]})]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("gold dialogues (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    partial = (f" — PARTIAL: {len(result.get('runs', []))} of {result.get('planned_runs')} runs"
               if result.get("complete") is False else "")
    fig.suptitle(f"{result['dataset']} — task {result['task']} — {teacher_title(result, 2)}{partial}\n"
                 f"{variant(result)}", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, title_fontsize=8,
               title=f"error bars: ± std over {len(seeds)} seed(s)\n◇ paper's Table 1 (private intent\ndata): "
                     "reference only")
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: Path) -> Path:
    """JSON, Markdown and PNG of a run; returns the Markdown path."""
    name = stem(result)
    (out / f"{name}.json").write_text(dumps_json(result, indent=2), encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(result), encoding="utf-8")
    plot(result, out / f"{name}.png")
    return out / f"{name}.md"


def read_result(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable table1 result ({err})") from None
    if not isinstance(result, dict) or not {"dataset", "teacher", "methods", "gold_fractions"} <= set(result):
        raise ValueError(f"{path}: not a table1 result (missing dataset/teacher/methods/gold_fractions)")
    return result
