"""Training throughput of the student: segments/s for one optimizer step, fp32 vs bf16 autocast.

Same model, same batches, interleaved repetitions so machine noise hits both variants alike; the
ratio is the number to read. Writes benchmarks/results/train_throughput.{json,md}.

    python -m benchmarks.train_throughput [--backbone minilm] [--batch 32] [--tokens 64 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from trainer.losses import single_label_loss
from trainer.model import build_model
from turnwise.tasks import parse_tasks

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    schema = parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ["a", "b", "c", "d"]}}})
    built = build_model(args.backbone, schema)
    model = built.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    rows = []
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
    result = {"benchmark": "train_throughput", "backbone": args.backbone, "repeats": args.repeats,
              "hardware": {"cpu": cpu_name(), "cores": torch.get_num_threads(), "flags": cpu_flags()},
              "torch": torch.__version__, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps(result, indent=2))
    md = ["| batch | tokens | fp32 seg/s | bf16 seg/s | bf16 speed-up |", "|---|---|---|---|---|"]
    md += [f"| {r['batch']} | {r['tokens']} | {r['fp32_segments_per_s']:.1f} | {r['bf16_segments_per_s']:.1f} | "
           f"{r['bf16_speedup']:.2f}x |" for r in rows]
    (RESULTS / "train_throughput.md").write_text(
        f"# Training throughput ({args.backbone}, {result['hardware']['cpu']}, "
        f"{result['hardware']['cores']} threads)\n\n"
        + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
