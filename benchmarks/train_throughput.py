"""Training throughput of the student, two comparisons in one run (ratios are the numbers to read):

1. fp32 vs bf16 autocast: segments/s for one optimizer step on synthetic batches of fixed length.
2. streaming vs flat encoder: *scored turns per second* of real finetuning steps on DailyDialog train
   dialogues -- flat = one 128-token window per turn (batches of 32), streaming = turn-causal spans
   (one pass scores every turn of a span; batches cut by a token budget) -- in fp32 and bf16.
   ``streaming_speedup`` = streaming over flat turns/s, bf16.

Same model, interleaved repetitions so machine noise hits every variant alike. Writes
benchmarks/results/train_throughput.{json,md}.

    python -m benchmarks.train_throughput [--backbone minilm] [--batch 32] [--tokens 64 128] [--repeats 5]
                                          [--dialogues 400] [--stream-steps 6] [--token-budget 2048]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trainer.losses import single_label_loss
from trainer.model import build_model
from turnwise.machine import cpu_flags, cpu_name
from turnwise.tasks import parse_tasks

RESULTS = Path(__file__).resolve().parent / "results"


def step_time(model, opt, batch, target, bf16: bool) -> float:
    t0 = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with ctx:
        (logits,) = model(**batch)
    loss = single_label_loss(logits.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def streaming_vs_flat(args: argparse.Namespace) -> dict:
    """Scored turns/s of real finetuning steps, flat windows vs turn-causal spans, fp32 and bf16."""
    from trainer.data import default_data_root, load_source, source_tasks
    from trainer.feeds import FlatFeed, SpanFeed
    from trainer.segments import build_segments
    from trainer.spans import build_spans
    from trainer.steps import autocast, finetune_loss
    from trainer.train import TrainConfig
    from turnwise.window import WindowConfig

    root = Path(args.data) if args.data else default_data_root() / "dailydialog"
    dialogues = load_source("dailydialog", root, "train", max_dialogues=args.dialogues)
    schema = source_tasks("dailydialog").select(["act"])
    built = build_model(args.backbone, schema)
    model, pad = built.model.train(), built.tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gold = set(range(len(dialogues)))
    flat_cfg = TrainConfig(encoder="flat", max_tokens=args.flat_tokens, max_turns=12, batch_size=args.batch,
                           finetune_epochs=1)
    stream_cfg = TrainConfig(encoder="streaming", token_budget=args.token_budget, finetune_epochs=1)
    t0 = time.perf_counter()
    feeds = {
        "flat": FlatFeed(build_segments(dialogues, schema, built.tokenizer, flat_cfg.window()), flat_cfg, gold,
                         False, pad),
        "streaming": SpanFeed(build_spans(dialogues, schema, built.tokenizer, WindowConfig.turn_causal(512)),
                              stream_cfg, gold, False, pad),
    }
    prep_s = time.perf_counter() - t0
    device = torch.device("cpu")
    runs: dict[str, dict[str, list[float]]] = {f"{e}_{p}": {"turns": [], "s": [], "tokens": []}
                                               for e in feeds for p in ("fp32", "bf16")}

    def one_step(feed, step: int, bf16: bool) -> tuple[int, float, int]:
        t = time.perf_counter()
        batch = feed.finetune_batch(step)
        with autocast(bf16, device):
            logits, rows = feed.forward(model, model.task_names, batch, device)
        loss, _ = finetune_loss(logits, feed.data, rows)
        opt.zero_grad(set_to_none=True)
        assert loss is not None
        loss.backward()
        opt.step()
        n_tokens = sum(len(feed.data.span_ids[i]) for i in batch) if isinstance(feed, SpanFeed) else \
            sum(len(feed.data.ids[i]) for i in batch)
        return len(rows), time.perf_counter() - t, n_tokens

    for feed in feeds.values():  # warm-up
        for bf16 in (False, True):
            one_step(feed, 0, bf16)
    for step in range(1, args.stream_steps + 1):
        for enc, feed in feeds.items():
            for prec, bf16 in (("fp32", False), ("bf16", True)):
                n, dt, tok = one_step(feed, step, bf16)
                r = runs[f"{enc}_{prec}"]
                r["turns"].append(n)
                r["s"].append(dt)
                r["tokens"].append(tok)
    rows = []
    for key, r in runs.items():
        enc, prec = key.split("_")
        rows.append({"encoder": enc, "precision": prec, "steps": len(r["s"]), "turns": int(sum(r["turns"])),
                     "seconds": round(sum(r["s"]), 3), "turns_per_s": sum(r["turns"]) / sum(r["s"]),
                     "real_tokens_per_step": float(np.mean(r["tokens"])), "turns_per_step": float(np.mean(r["turns"]))})
        print(json.dumps(rows[-1]))
    tps = {(r["encoder"], r["precision"]): r["turns_per_s"] for r in rows}
    return {"dialogues": len(dialogues), "flat_window_tokens": args.flat_tokens, "flat_batch": args.batch,
            "token_budget": args.token_budget, "max_context_tokens": 512, "prepare_s": round(prep_s, 1),
            "rows": rows,
            "streaming_speedup": tps[("streaming", "bf16")] / tps[("flat", "bf16")],
            "streaming_speedup_fp32": tps[("streaming", "fp32")] / tps[("flat", "fp32")]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", default=None, help="DailyDialog folder (default: the shared data root)")
    ap.add_argument("--dialogues", type=int, default=400, help="DailyDialog train dialogues for streaming vs flat")
    ap.add_argument("--stream-steps", type=int, default=6, help="timed steps per variant, streaming vs flat")
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--flat-tokens", type=int, default=128)
    ap.add_argument("--only", choices=("all", "precision", "streaming"), default="all")
    ap.add_argument("--note", default="", help="what else ran on the machine (recorded in the results)")
    args = ap.parse_args()
    schema = parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ["a", "b", "c", "d"]}}})
    built = build_model(args.backbone, schema)
    model = built.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    rows = []
    previous = {}
    if (RESULTS / "train_throughput.json").exists():
        previous = json.loads((RESULTS / "train_throughput.json").read_text())
    if args.only == "streaming":
        args.tokens = []
    for tokens in args.tokens:
        batch = {"input_ids": torch.randint(1000, 20000, (args.batch, tokens), generator=g),
                 "attention_mask": torch.ones(args.batch, tokens, dtype=torch.long),
                 "token_type_ids": torch.zeros(args.batch, tokens, dtype=torch.long)}
        target = torch.randint(0, 4, (args.batch,), generator=g)
        for bf16 in (False, True):  # warm-up
            step_time(model, opt, batch, target, bf16)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for name, bf16 in (("fp32", False), ("bf16", True)):
                times[name].append(step_time(model, opt, batch, target, bf16))
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append({"batch": args.batch, "tokens": tokens,
                     "fp32_segments_per_s": args.batch / med["fp32"],
                     "bf16_segments_per_s": args.batch / med["bf16"],
                     "bf16_speedup": med["fp32"] / med["bf16"], "fp32_step_s": med["fp32"], "bf16_step_s": med["bf16"]})
        print(json.dumps(rows[-1]))
    if not rows:  # --only streaming keeps the last precision table
        rows = previous.get("rows", [])
    del model, opt
    stream = streaming_vs_flat(args) if args.only != "precision" else previous.get("streaming_vs_flat")
    result = {"benchmark": "train_throughput", "backbone": args.backbone, "repeats": args.repeats,
              "hardware": {"cpu": cpu_name(), "cores": torch.get_num_threads(), "flags": cpu_flags()},
              "torch": torch.__version__, "note": args.note, "rows": rows,
              "streaming_vs_flat": stream,
              "streaming_speedup": stream["streaming_speedup"] if stream else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps(result, indent=2))
    md = ["| batch | tokens | fp32 seg/s | bf16 seg/s | bf16 speed-up |", "|---|---|---|---|---|"]
    md += [f"| {r['batch']} | {r['tokens']} | {r['fp32_segments_per_s']:.1f} | {r['bf16_segments_per_s']:.1f} | "
           f"{r['bf16_speedup']:.2f}x |" for r in rows]
    text = (f"# Training throughput ({args.backbone}, {result['hardware']['cpu']}, "
            f"{result['hardware']['cores']} threads, flags {' '.join(result['hardware']['flags'])})\n\n"
            + (f"{args.note}\n\n" if args.note else "") + "## fp32 vs bf16 autocast (synthetic batches)\n\n"
            + "\n".join(md) + "\n")
    if stream:
        text += (f"\n## Streaming vs flat encoder: scored turns/s of finetuning steps\n\n"
                 f"{stream['dialogues']} DailyDialog train dialogues; flat = {stream['flat_window_tokens']}-token "
                 f"windows, batches of {stream['flat_batch']}; streaming = 512-token turn-causal spans, "
                 f"{stream['token_budget']}-token batches.\n\n"
                 "| encoder | precision | turns/s | turns/step | real tokens/step |\n|---|---|---|---|---|\n"
                 + "".join(f"| {r['encoder']} | {r['precision']} | {r['turns_per_s']:.1f} | {r['turns_per_step']:.0f} "
                           f"| {r['real_tokens_per_step']:.0f} |\n" for r in stream["rows"])
                 + f"\n**streaming_speedup (bf16): {stream['streaming_speedup']:.2f}x**; "
                   f"fp32: {stream['streaming_speedup_fp32']:.2f}x\n")
    (RESULTS / "train_throughput.md").write_text(text)


if __name__ == "__main__":
    main()
