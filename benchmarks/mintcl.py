"""MINT-CL on MultiDoGO: flat path classifier vs hierarchical heads vs hierarchical + response ranking.

    nice -n 10 .venv/bin/python -m benchmarks.mintcl --out benchmarks/results/mintcl-multidogo.json

The label is the ``domain/intent`` path (85 paths, 6 domains). Three methods, each trained with the
``turnwise train`` command on the same JSONL files and budget (flat windows, the offline MiniLM
backbone, ``--max-steps`` finetuning steps) and scored with ``turnwise evaluate`` on test:

- ``flat``: one multiclass head over the 85 paths; its domain is the predicted path's first part;
- ``hierarchical``: label-attention heads per level, the path decoded by beam search;
- ``hierarchical_rank``: the same plus the response-ranking loss (``--rank-weight``, 0.3 as the paper).

Accuracy is reported for the domain (the path's first part), the intent name (its last part, right
even under the wrong domain) and the full path.

The CPU budget caps the data: the first ``--train-per-domain`` / ``--val-per-domain`` /
``--test-per-domain`` dialogues of each domain's split. Every run's record is written as soon as it
finishes (a rerun skips the runs already in ``--out``); ``--plot`` writes the bar chart next to it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainer.data import default_data_root, multidogo
from turnwise.dialogue import write_jsonl
from turnwise.jsonl import dumps_json
from turnwise.tasks import TaskSchema

TASK = multidogo.PATH_TASK_NAME
METHODS = ("flat", "hierarchical", "hierarchical_rank")
LEVELS = ("domain", "intent", "path")


def prepare(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """JSONL splits (first N dialogues per domain) and the two task schemas, in ``work``."""
    root = default_data_root() / "multidogo"
    counts = {}
    for split, n in (("train", args.train_per_domain), ("validation", args.val_per_domain),
                     ("test", args.test_per_domain)):
        dias = [d for dom in multidogo.DOMAINS
                for d in multidogo.load(root, split, domains=[dom], max_dialogues=n)]
        dias = multidogo.with_intent_paths(dias)
        write_jsonl(dias, work / f"{split}.jsonl")
        counts[split] = {"dialogues": len(dias), "turns": sum(TASK in t.labels for d in dias for t in d.turns)}
    for name, task in (("flat", multidogo.FLAT_PATH_TASK), ("hierarchical", multidogo.PATH_TASK)):
        schema = TaskSchema(tasks={TASK: task})
        (work / f"tasks-{name}.yaml").write_text(yaml.safe_dump(schema.to_dict(), sort_keys=False), encoding="utf-8")
    return counts


def _cli(*argv: str) -> None:
    subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *argv], check=True,
                   stdout=subprocess.DEVNULL)


def level_accuracy(report: dict[str, Any]) -> dict[str, float]:
    """Accuracy of the domain (first part of the path), the intent name (last part, whatever the
    domain) and the full path, from the path confusion matrix (flat and hierarchical reports alike)."""
    m = report["tasks"][TASK]
    labels, conf = m["labels"], np.asarray(m["confusion"])
    parts = [lab.split("/") for lab in labels]
    domain = np.asarray([p[0] for p in parts])
    intent = np.asarray([p[-1] for p in parts])
    total = conf.sum()
    return {"domain": float(conf[domain[:, None] == domain[None, :]].sum() / total),
            "intent": float(conf[intent[:, None] == intent[None, :]].sum() / total),
            "path": float(np.trace(conf) / total)}


def run_one(method: str, seed: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = work / f"{method}-s{seed}"
    schema = "flat" if method == "flat" else "hierarchical"
    rank = args.rank_weight if method == "hierarchical_rank" else 0.0
    t0 = time.perf_counter()
    _cli("train", "--data", str(work / "train.jsonl"), "--val", str(work / "validation.jsonl"),
         "--tasks", str(work / f"tasks-{schema}.yaml"), "--out", str(out), "--objective", "none",
         "--encoder", "flat", "--max-tokens", str(args.max_tokens), "--max-turns", str(args.max_turns),
         "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps), "--finetune-epochs", "1",
         "--lr", str(args.lr), "--precision", "fp32", "--save-every", "100000", "--seed", str(seed),
         "--rank-weight", str(rank), "--rank-batch", str(args.rank_batch))
    train_s = time.perf_counter() - t0
    _cli("evaluate", "--model", str(out), "--data", str(work / "test.jsonl"), "--out", str(out / "test.json"))
    report = json.loads((out / "test.json").read_text(encoding="utf-8"))
    m = report["tasks"][TASK]
    return {"method": method, "seed": seed, "rank_weight": rank, "test_turns": m["n"],
            "accuracy": level_accuracy(report), "path_macro_f1": m["macro_f1"],
            "train_s": round(train_s, 1), "total_s": round(time.perf_counter() - t0, 1)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        out[method] = {"seeds": [r["seed"] for r in mine], **{
            level: {"mean": float(np.mean([r["accuracy"][level] for r in mine])),
                    "std": float(np.std([r["accuracy"][level] for r in mine], ddof=1)) if len(mine) > 1 else 0.0}
            for level in LEVELS}}
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    methods = [m for m in METHODS if m in summary]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(LEVELS))
    for i, m in enumerate(methods):
        means = [summary[m][lv]["mean"] for lv in LEVELS]
        stds = [summary[m][lv]["std"] for lv in LEVELS]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=f"{m} (n={len(summary[m]['seeds'])})")
    ax.set_xticks(x, list(LEVELS))
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("MultiDoGO domain/intent, MiniLM, same budget (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/mintcl-multidogo.json"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "turnwise-mintcl")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--train-per-domain", type=int, default=100)
    p.add_argument("--val-per-domain", type=int, default=10)
    p.add_argument("--test-per-domain", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--max-turns", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rank-weight", type=float, default=0.3)
    p.add_argument("--rank-batch", type=int, default=8)
    p.add_argument("--plot", action="store_true", help="only redraw the chart from --out")
    args = p.parse_args(argv)
    png = args.out.with_suffix(".png")
    if args.plot:
        plot(json.loads(args.out.read_text(encoding="utf-8")), png)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work", "plot", "seeds", "methods")}
    result: dict[str, Any] = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "runs": []}
    result["data"] = prepare(args.work, args)
    done = {(r["method"], r["seed"]) for r in result["runs"]}
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            rec = run_one(method, seed, args.work, args)
            print(dumps_json(rec), flush=True)
            result["runs"].append(rec)
            result["summary"] = summarise(result["runs"])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(dumps_json(result, indent=2), encoding="utf-8")
            plot(result, png)


if __name__ == "__main__":
    main()
