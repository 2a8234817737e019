"""Chain-of-Intent on MultiDoGO: the estimated intent chains (JSON + heat maps) and the downstream claim in
miniature, intent accuracy of a model trained on 5 % gold dialogues vs 5 % gold + N generated dialogues.

    nice -n 10 .venv/bin/python -m benchmarks.chain_of_intent --out benchmarks/results

1. Per domain, the chain estimated on the whole train split: ``chain_of_intent_multidogo.json`` (all six
   domains) and heat maps ``chain_of_intent_multidogo.png`` (the experiment's domain) and
   ``chain_of_intent_multidogo_<domain>.png``.
2. For each seed, in one domain (default airline): a seeded 5 % of the train dialogues is the gold data;
   the chain and the example utterances are estimated from those gold dialogues only (no other label is
   seen); ``--generated`` dialogues come from the ``sample`` emission (utterances drawn from the gold
   dialogues). Model A trains on the gold dialogues, model B on gold + generated; both are the offline
   MiniLM backbone, streaming encoder, early stopping on the dev split, tested on the test split:
   ``chain_of_intent_downstream.json``. The LLM emission needs an endpoint, which this run does not have:
   it is not part of these results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data import default_data_root, load_source, source_tasks
from trainer.evaluate import evaluate_path
from trainer.generate.hmm import IntentHMM
from trainer.generate.plot import plot_hmm
from trainer.generate.run import generate_sampled
from trainer.train import TrainConfig, pick_gold_dialogues, train
from turnwise.dialogue import Dialogue
from turnwise.jsonl import dumps_json

TASK = "intent"


def estimated_chains(root: Path, out: Path, domain: str, smoothing: float) -> dict[str, Any]:
    from trainer.data.multidogo import DOMAINS

    chains = {}
    for dom in DOMAINS:
        train_d = load_source("multidogo", root, "train", domains=[dom])
        chains[dom] = IntentHMM.estimate(train_d, TASK, smoothing=smoothing).to_dict()
        plot_hmm(chains[dom], out / f"chain_of_intent_multidogo_{dom}.png",
                 title=f"MultiDoGO {dom}: intent chain estimated on {len(train_d)} train dialogues "
                       f"(smoothing {smoothing})")
    shutil.copyfile(out / f"chain_of_intent_multidogo_{domain}.png", out / "chain_of_intent_multidogo.png")
    result = {"dataset": "multidogo", "task": TASK, "split": "train", "smoothing": smoothing,
              "note": "per domain: states = intents seen in the train split; turn_count = P(T) over labelled "
                      "(customer) turns; initial = pi; transitions = A (row: from, column: to); *_counts: raw "
                      "counts before smoothing",
              "domains": chains}
    (out / "chain_of_intent_multidogo.json").write_text(dumps_json(result, indent=2) + "\n", encoding="utf-8")
    return result


def _log_every(n: int):
    def progress(phase: str, step: int, total: int, shown: dict[str, float]) -> None:
        if step % n == 0 or step == total:
            print(f"  {phase} step {step}/{total} loss {shown.get('loss', float('nan')):.4f}", flush=True)
    return progress


def _fit(cfg: TrainConfig, train_d: list[Dialogue], val_d: list[Dialogue], test_d: list[Dialogue],
         work: Path) -> dict[str, Any]:
    schema = source_tasks("multidogo").select([TASK])
    t0 = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)
    res = train(cfg, train_d, schema, work, val_dialogues=val_d, progress=_log_every(10))
    wall = time.perf_counter() - t0
    m = evaluate_path(work, test_d, tasks=[TASK])["tasks"][TASK]
    shutil.rmtree(work, ignore_errors=True)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "test_turns": m["n"], "finetune_steps": res.steps,
            "val_best_accuracy": res.best_metric, "train_dialogues": len(train_d),
            "train_turns": sum(len(d.turns) for d in train_d), "train_wall_s": round(wall, 1)}


def downstream(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    train_all = load_source("multidogo", root, "train", domains=[args.domain])
    val_d = load_source("multidogo", root, "validation", domains=[args.domain], max_dialogues=args.val_dialogues)
    test_d = load_source("multidogo", root, "test", domains=[args.domain], max_dialogues=args.test_dialogues)
    runs: list[dict[str, Any]] = []
    if args.from_partial is not None:  # summarise the runs an interrupted invocation finished
        runs = [r for f in args.from_partial for r in json.loads(f.read_text(encoding="utf-8"))]
        args.seeds = sorted({r["seed"] for r in runs if r["condition"] == "gold+generated"})
        runs = [r for r in runs if r["seed"] in args.seeds]
    with tempfile.TemporaryDirectory(prefix="turnwise-coi-") as tmp:
        for seed in [] if args.from_partial is not None else args.seeds:
            gold = [train_all[i] for i in pick_gold_dialogues(train_all, [TASK], args.gold_fraction, seed)]
            generated, hmm = generate_sampled(gold, TASK, args.generated, seed=seed, smoothing=args.smoothing)
            cfg = TrainConfig(objective="none", backbone="minilm", encoder="streaming", tasks=[TASK],
                              finetune_epochs=args.epochs, max_steps=args.max_steps, save_every=10_000, patience=2,
                              seed=seed, precision=args.precision)
            for name, data in (("gold", gold), ("gold+generated", gold + generated)):
                r = _fit(cfg, data, val_d, test_d, Path(tmp) / f"{name}-{seed}")
                r.update({"condition": name, "seed": seed, "gold_dialogues": len(gold),
                          "generated_dialogues": len(data) - len(gold), "hmm_states": len(hmm.states)})
                print(f"seed {seed} {name}: accuracy {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} "
                      f"({r['finetune_steps']} steps, {r['train_wall_s']:.0f} s)", flush=True)
                runs.append(r)
                if args.partial is not None:
                    args.partial.write_text(dumps_json(runs, indent=2) + "\n", encoding="utf-8")
    summary: dict[str, Any] = {}
    for name in ("gold", "gold+generated"):
        acc = [r["accuracy"] for r in runs if r["condition"] == name]
        f1 = [r["macro_f1"] for r in runs if r["condition"] == name]
        summary[name] = {"accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                         "macro_f1_mean": float(np.mean(f1)), "macro_f1_std": float(np.std(f1)), "seeds": len(acc)}
    by = {(r["condition"], r["seed"]): r for r in runs}
    summary["paired_gain_per_seed"] = {
        str(sd): {k: round(by["gold+generated", sd][k] - by["gold", sd][k], 6) for k in ("accuracy", "macro_f1")}
        for sd in args.seeds if ("gold", sd) in by and ("gold+generated", sd) in by}
    cfg = TrainConfig(objective="none", backbone="minilm", encoder="streaming", tasks=[TASK],
                      finetune_epochs=args.epochs, max_steps=args.max_steps, save_every=10_000, patience=2,
                      precision=args.precision)
    return {"dataset": "multidogo", "domain": args.domain, "task": TASK, "gold_fraction": args.gold_fraction,
            "generated_dialogues": args.generated, "emission": "sample",
            "llm_emission": "not run: no LLM endpoint was available for these results",
            "sizes": {"train_split": len(train_all), "validation": len(val_d), "test": len(test_d)},
            "summary": summary, "runs": runs,
            "settings": {k: v for k, v in asdict(cfg).items() if k != "seed"} | {"smoothing": args.smoothing}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--domain", default="airline")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--gold-fraction", type=float, default=0.05)
    ap.add_argument("--generated", type=int, default=300)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--val-dialogues", type=int, default=60)
    ap.add_argument("--test-dialogues", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (bf16 skips the timing probe)")
    ap.add_argument("--skip-downstream", action="store_true")
    ap.add_argument("--downstream-out", type=Path, default=None, help="downstream JSON (default: in --out)")
    ap.add_argument("--skip-chains", action="store_true", help="do not rewrite the chain JSON and heat maps")
    ap.add_argument("--partial", type=Path, default=None, help="also write the runs here after each one")
    ap.add_argument("--from-partial", type=Path, nargs="+", default=None,
                    help="no training: summarise the finished runs of --partial files (the seeds whose both "
                    "conditions finished)")
    args = ap.parse_args()
    root = default_data_root() / "multidogo"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.from_partial is None and not args.skip_chains:
        estimated_chains(root, args.out, args.domain, args.smoothing)
    if args.skip_downstream:
        return
    result = downstream(root, args)
    # summarised from --partial files: each run's own train_wall_s is what was measured
    result["wall_s"] = None if args.from_partial else round(time.perf_counter() - t0, 1)
    if args.from_partial:
        result["combined_from"] = [f.name for f in args.from_partial]
    path = args.downstream_out or args.out / "chain_of_intent_downstream.json"
    path.write_text(dumps_json(result, indent=2) + "\n", encoding="utf-8")
    print(path)


if __name__ == "__main__":
    main()
