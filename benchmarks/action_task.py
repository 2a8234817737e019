"""The clarify-or-answer ``action`` task on MultiWOZ and SGD: train on the split the data has besides test,
evaluate on test, write ``benchmarks/results/action.json``.

    nice -n 10 .venv/bin/python -m benchmarks.action_task --out benchmarks/results/action.json

MultiWOZ ships validation and test only, so the model trains on validation (a seeded 10 % of it held out
for early stopping) and is tested on test; SGD trains on its train files (10 % held out) and is tested on
the test files that are present. A small CPU budget: ``--train-dialogues``, ``--test-dialogues`` and
``--max-steps`` cap each run (the defaults fit a few minutes per run on two cores).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainer.data import default_data_root, load_source, source_tasks
from trainer.evaluate import evaluate_path
from trainer.train import TrainConfig, train
from turnwise.dialogue import Dialogue
from turnwise.jsonl import dumps_json

RUNS = {"multiwoz": ("validation", "test"), "sgd": ("train", "test")}


def class_balance(dialogues: list[Dialogue]) -> dict[str, Any]:
    c = Counter(t.labels["action"] for d in dialogues for t in d.turns if "action" in t.labels)
    n = sum(c.values())
    return {"turns": n, "counts": dict(sorted(c.items())),
            "fractions": {k: round(v / n, 4) for k, v in sorted(c.items())} if n else {}}


def _log_every(n: int, what: str):
    def progress(phase: str, step: int, total: int, shown: dict[str, float]) -> None:
        if step % n == 0 or step == total:
            print(f"  {what} {phase} step {step}/{total} loss {shown.get('loss', float('nan')):.4f}", flush=True)
    return progress


def run_one(source: str, args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    from cli.train import split_off

    train_split, test_split = RUNS[source]
    root = default_data_root() / source
    train_all = load_source(source, root, train_split, max_dialogues=args.train_dialogues)
    train_d, val_d = split_off(train_all, 0.1, seed)
    test_d = load_source(source, root, test_split, max_dialogues=args.test_dialogues)
    schema = source_tasks(source).select(["action"])
    cfg = TrainConfig(objective="none", backbone="minilm", encoder="streaming", tasks=["action"],
                      finetune_epochs=args.epochs, max_steps=args.max_steps, select_metric="macro_f1",
                      save_every=10_000, patience=2, seed=seed, precision=args.precision)
    t0 = time.perf_counter()
    out = work / f"{source}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    res = train(cfg, train_d, schema, out, val_dialogues=val_d, progress=_log_every(10, source))
    train_s = time.perf_counter() - t0
    report = evaluate_path(out, test_d, tasks=["action"])
    m = report["tasks"]["action"]
    majority = max(class_balance(test_d)["fractions"].values())
    return {"source": source, "seed": seed, "train_split": train_split, "test_split": test_split,
            "train_dialogues": len(train_d), "val_dialogues": len(val_d), "test_dialogues": len(test_d),
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "per_class_f1": m["per_class_f1"],
            "labels": m["labels"], "confusion": m["confusion"], "test_turns": m["n"],
            "majority_class_accuracy": majority, "finetune_steps": res.steps, "val_best_macro_f1": res.best_metric,
            "train_wall_s": round(train_s, 1), "class_balance": {"train": class_balance(train_d),
                                                                  "test": class_balance(test_d)},
            "settings": asdict(cfg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/action.json"))
    ap.add_argument("--sources", default="multiwoz,sgd")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--train-dialogues", type=int, default=400)
    ap.add_argument("--test-dialogues", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (bf16 skips the timing probe)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="no training: combine the runs of "
                    "these result files (e.g. one per source, run side by side) into --out")
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if args.merge:
        import json

        files = [json.loads(f.read_text(encoding="utf-8")) for f in args.merge]
        runs = [r for f in files for r in f["runs"]]
        t0 -= sum(f["wall_s"] for f in files)
        args.sources = ""
    with tempfile.TemporaryDirectory(prefix="turnwise-action-") as tmp:
        for source in [x for x in args.sources.split(",") if x]:
            for seed in (int(s) for s in args.seeds.split(",")):
                r = run_one(source, args, seed, Path(tmp))
                print(f"{source} seed {seed}: accuracy {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} "
                      f"({r['train_wall_s']:.0f} s training)", flush=True)
                runs.append(r)
                _write(args, runs, t0)
    _write(args, runs, t0)
    print(args.out)


def _write(args: argparse.Namespace, runs: list[dict[str, Any]], t0: float) -> None:
    result = {"task": "action", "labels": ["clarify", "answer", "other"], "backbone": "minilm",
              "note": "MultiWOZ: trained on validation (the release here has no train split), tested on test; "
                      "SGD: trained on the train files present, tested on the test files present (a partial "
                      "official test split). Capped CPU budget, see settings.",
              "budget": {"train_dialogues": args.train_dialogues, "test_dialogues": args.test_dialogues,
                         "epochs": args.epochs, "max_steps": args.max_steps},
              "runs": runs, "wall_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps_json(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
