"""Quality of the streaming encoder on DailyDialog acts (MiniLM), against the flat window.

Two parts, each a plain finetuning run on 100 % gold labels, evaluated on the whole official test split
(every turn of every test dialogue):

- ``equal``: flat (128-token windows of up to 12 turns) and streaming (512-token turn-causal spans)
  trained on the same first N train dialogues for the same number of epochs.
- ``full``: streaming on the whole train split for as many epochs as fit the time asked for.

Writes benchmarks/results/streaming-quality.{json,md,png} (the PNG: confusion matrices). Each run is
merged into the JSON as it finishes, so a part can be re-run alone (``--part equal|full``).

    python -m benchmarks.streaming_quality [--part all] [--train-dialogues 1000] [--epochs 2] [--full-epochs 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from turnwise.machine import cpu_flags, cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "streaming-quality"


def run_one(encoder: str, train_d: list, val_d: list, test_d: list, epochs: int, work: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    from trainer.data import source_tasks
    from trainer.evaluate import evaluate_path
    from trainer.train import TrainConfig, train

    schema = source_tasks("dailydialog").select(["act"])
    cfg = TrainConfig(objective="none", encoder=encoder, backbone=args.backbone, gold_fraction=1.0,
                      finetune_epochs=epochs, finetune_lr=args.lr, head_lr=1e-3, max_tokens=128, max_turns=12,
                      max_context_tokens=512, token_budget=args.token_budget, batch_size=32, patience=2,
                      precision=args.precision, save_every=10**9, tasks=["act"], seed=0)
    out = work / f"{encoder}-{len(train_d)}-e{epochs}-b{args.token_budget}"
    t0 = time.perf_counter()
    last = [0.0]

    def progress(phase: str, step: int, total: int, info: dict[str, float]) -> None:
        if time.perf_counter() - last[0] > 60 or step == total or "val" in info:
            last[0] = time.perf_counter()
            print(f"  {encoder} {step}/{total} {' '.join(f'{k}={v:.4f}' for k, v in info.items())} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    res = train(cfg, train_d, schema, out, val_dialogues=val_d, progress=progress)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = evaluate_path(out, test_d, tasks=["act"])
    eval_s = time.perf_counter() - t1
    m = report["tasks"]["act"]
    return {"encoder": encoder, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n_test_turns": m["n"],
            "per_class_f1": m["per_class_f1"], "labels": m["labels"], "confusion": m["confusion"],
            "train_dialogues": len(train_d), "epochs": epochs, "steps": res.steps, "lr": args.lr,
            "token_budget": args.token_budget if encoder == "streaming" else None,
            "batch_size": 32 if encoder == "flat" else None, "best_step": res.best_step,
            "best_val_accuracy": res.best_metric, "precision": res.precision, "throughput": res.throughput,
            "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "wall_s": round(train_s + eval_s, 1),
            "checkpoint": str(out.relative_to(RESULTS.parent.parent)) if out.is_relative_to(RESULTS.parent.parent)
            else out.name}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Streaming vs flat encoder, DailyDialog acts ({r.get('backbone', 'minilm')})", "",
             f"Machine: {r['hardware']['cpu']}, {r['hardware']['cores']} threads, flags "
             f"{' '.join(r['hardware']['flags'])}. {r.get('note', '')}", "",
             "Test: the whole official test split (every turn). 100 % gold, finetuning only.", "",
             "| run | key | batch | train dialogues | epochs | steps | accuracy | macro-F1 | train s | eval s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for part in ("equal_data", "full"):
        for enc, m in (r.get(part) or {}).items():
            if not isinstance(m, dict) or "accuracy" not in m:
                continue
            batch = (f"{m['token_budget']} tokens" if m.get("token_budget") else
                     f"{m.get('batch_size') or 32} windows" if m["encoder"] == "flat" else "?")
            lines.append(f"| {part} | {enc} | {batch} | {m['train_dialogues']} | {m['epochs']} | {m['steps']} | "
                         f"{m['accuracy'] * 100:.2f} | {m['macro_f1'] * 100:.2f} | {m['train_s']:.0f} | "
                         f"{m['eval_s']:.0f} |")
    for part in ("equal_data", "full"):
        if (r.get(part) or {}).get("note"):
            lines += ["", f"{part}: {r[part]['note']}"]
    eq = r.get("equal_data") or {}
    if "flat" in eq and "streaming" in eq:
        da = (eq["streaming"]["accuracy"] - eq["flat"]["accuracy"]) * 100
        df = (eq["streaming"]["macro_f1"] - eq["flat"]["macro_f1"]) * 100
        lines += ["", f"Equal data, streaming minus flat: accuracy {da:+.2f} points, macro-F1 {df:+.2f} points "
                  f"(goal: no worse than -1 and -2)."]
    full = (r.get("full") or {}).get("streaming")
    if full:
        lines += [f"Full split: accuracy {full['accuracy'] * 100:.2f} % (goal >= 85 %: "
                  f"{'met' if full['accuracy'] >= 0.85 else 'missed'})."]
    for part in ("equal_data", "full"):
        for enc, m in (r.get(part) or {}).items():
            if isinstance(m, dict) and "confusion" in m:
                lines += ["", f"Confusion, {part} {enc} (rows gold, columns predicted: {', '.join(m['labels'])}):", ""]
                lines += ["    " + " ".join(f"{x:6d}" for x in row) for row in m["confusion"]]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(f"{part} {enc}", m) for part in ("equal_data", "full") for enc, m in (r.get(part) or {}).items()
            if isinstance(m, dict) and "confusion" in m]
    if not runs:
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4), squeeze=False)
    for ax, (title, m) in zip(axes[0], runs, strict=True):
        conf = np.asarray(m["confusion"], dtype=float)
        norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(conf)):
            for j in range(len(conf)):
                ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
        ax.set_xticks(range(len(m["labels"])), m["labels"], rotation=30, fontsize=8)
        ax.set_yticks(range(len(m["labels"])), m["labels"], fontsize=8)
        ax.set_title(f"{title}\nacc {m['accuracy'] * 100:.1f}  macro-F1 {m['macro_f1'] * 100:.1f}", fontsize=9)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("gold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(r: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(r, indent=2))
    (RESULTS / f"{NAME}.md").write_text(markdown(r))
    plot(r, RESULTS / f"{NAME}.png")


def main() -> None:
    import torch

    from trainer.data import default_data_root, load_source

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", choices=("all", "equal", "full"), default="all")
    ap.add_argument("--data", default=None, help="DailyDialog folder (default: the shared data root)")
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--train-dialogues", type=int, default=1000, help="equal-data runs: first N train dialogues")
    ap.add_argument("--epochs", type=int, default=2, help="equal-data runs: epochs for both encoders")
    ap.add_argument("--full-epochs", type=int, default=3, help="full-split streaming run")
    ap.add_argument("--full-dialogues", type=int, default=None, help="full run: train dialogues (default: all)")
    ap.add_argument("--test-dialogues", type=int, default=None, help="test dialogues (default: all)")
    ap.add_argument("--val-dialogues", type=int, default=200, help="validation dialogues for early stopping")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--encoders", default="streaming,flat", help="equal-data runs: which encoders")
    ap.add_argument("--key-suffix", default="", help="store the equal-data runs as '<encoder><suffix>' "
                    "(extra variants beside the main ones)")
    ap.add_argument("--work", default="runs/streaming-quality")
    ap.add_argument("--note", default="", help="what else ran on the machine (recorded in the results)")
    args = ap.parse_args()

    root = Path(args.data) if args.data else default_data_root() / "dailydialog"
    test_d = load_source("dailydialog", root, "test", max_dialogues=args.test_dialogues)
    val_d = load_source("dailydialog", root, "validation", max_dialogues=args.val_dialogues)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    r = load(RESULTS / f"{NAME}.json")
    r.update({"benchmark": NAME, "backbone": args.backbone, "task": "dailydialog/act",
              "hardware": {"cpu": cpu_name(), "cores": torch.get_num_threads(), "flags": cpu_flags()},
              "torch": torch.__version__, "note": args.note or r.get("note", ""),
              "settings": {"lr": args.lr, "head_lr": 1e-3, "token_budget": args.token_budget, "flat_window_tokens": 128,
                           "flat_window_turns": 12, "max_context_tokens": 512, "val_dialogues": len(val_d),
                           "test_dialogues": len(test_d)}})
    if args.part in ("all", "equal"):
        train_d = load_source("dailydialog", root, "train", max_dialogues=args.train_dialogues)
        eq: dict[str, Any] = r.get("equal_data") or {}
        eq.update({"train_dialogues": len(train_d), "epochs": args.epochs})
        r["equal_data"] = eq
        for enc in [e.strip() for e in args.encoders.split(",") if e.strip()]:
            print(f"equal data: {enc}, {len(train_d)} dialogues, {args.epochs} epochs", flush=True)
            eq[enc + args.key_suffix] = run_one(enc, train_d, val_d, test_d, args.epochs, work, args)
            write(r)
    if args.part in ("all", "full"):
        train_d = load_source("dailydialog", root, "train", max_dialogues=args.full_dialogues)
        print(f"full split: streaming, {len(train_d)} dialogues, {args.full_epochs} epochs", flush=True)
        m = run_one("streaming", train_d, val_d, test_d, args.full_epochs, work, args)
        r["full"] = {"streaming": m, "epochs": args.full_epochs, "wall_s": m["wall_s"],
                     "train_dialogues": len(train_d)}
        write(r)
    print(markdown(r))


if __name__ == "__main__":
    main()
