"""Backend benchmark: which engine should serve the student on this machine?

``python -m benchmarks.backends`` (``make bench``) builds the real MiniLM-L6 student
(``trainer.model.build_model("minilm", schema)``; untrained heads cost the same as trained ones),
exports it with the real exporter into a temporary bundle, and times on identical inputs:

- ``torch_fp32``           PyTorch eager, float32 (the reference every ratio is taken against)
- ``torch_bf16_autocast``  PyTorch eager under ``torch.autocast("cpu", dtype=torch.bfloat16)``
- ``ort_fp32_raw``         ONNX Runtime on the raw traced graph (ORT's default session optimizations only)
- ``ort_fp32_optimized``   ONNX Runtime on the bundle's fp32 graph (offline transformer fusions)
- ``ort_int8``             ONNX Runtime on the bundle's int8 graph (dynamic quantization)
- ``ort_cuda_fp16`` / ``ort_tensorrt_fp16``  only where onnxruntime has those providers (else recorded skipped)

for batch 1, 8, 32 x sequence 64, 128, 256 (every token real: attention_mask all ones). Per cell: median
and p90 latency, throughput (sequences/s), achieved GFLOP/s and the speed-up over ``torch_fp32``; each
backend's logits are also compared with ``torch_fp32`` on the same batch.

FLOPs (multiply-add = 2 FLOPs), per sequence of T tokens for a BERT encoder with L layers, hidden H,
FFN width I, plus heads with C logits in total:

    F(T) = L * (8*T*H^2 + 4*T*H*I + 4*T^2*H) + 2*H*C
           ^ Q,K,V,O projections  ^ FFN in+out  ^ QK^T and AV

i.e. 2 x (non-embedding weight count) x T plus the attention terms. Embedding lookups, LayerNorm,
softmax, GELU and bias adds are ignored (< 2 % here). MiniLM-L6 (L=6, H=384, I=1536) at T=128:
~2.87 GFLOP per sequence.

Timing: each backend runs in its own process (PyTorch's OpenMP pool and ORT's thread pool both
spin-wait after a call; in one process they steal each other's cores). One warm-up call, then
repetitions until ``--budget`` seconds and at least ``--min-reps`` calls per cell. Threads:
``--threads`` (default: all cores) for both PyTorch and ORT intra-op pools.
The machine's load average is recorded before and after: other processes on a shared machine inflate
latencies, and the numbers are only as good as that.

Decision: ``preferred_variant["cpu"]`` is the bundle variant (fp32 = the optimized graph, or int8)
with the best geometric-mean speed-up over all cells; the exporter copies it into bundle.json and the
loader's ``variant="auto"`` follows it. If a PyTorch backend is fastest overall, that is reported too
(``fastest_backend``) — a bundle carries no PyTorch weights, so serving it would be a service change.
GPU providers default to fp16 unless measured here.

``--quick`` runs a tiny random BERT on two small shapes (seconds) and writes ``backends-quick.*`` so
that it never decides the default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.backends_artifacts import build_artifacts
from benchmarks.backends_report import build_result, cells_of, markdown, write_results
from benchmarks.backends_runners import REPO, Timed, run_worker, worker
from turnwise.machine import loadavg

# The parts, each under benchmarks/: backends_artifacts (checkpoint, bundle, raw graph), backends_runners
# (inputs, runners, timing, the per-backend worker process), backends_decision (FLOPs, the decision rule)
# and backends_report (machine facts, cells, the results file, the markdown).

RESULTS = REPO / "benchmarks" / "results"
BATCHES = (1, 8, 32)
SEQS = (64, 128, 256)
CPU_BACKENDS = ("torch_fp32", "torch_bf16_autocast", "ort_fp32_raw", "ort_fp32_optimized", "ort_int8")
GPU_BACKENDS = {"ort_cuda_fp16": "CUDAExecutionProvider", "ort_tensorrt_fp16": "TensorrtExecutionProvider"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random BERT, two shapes, seconds")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per cell (default 1.5; quick 0.2)")
    ap.add_argument("--min-reps", type=int, default=None, help="minimum timed calls per cell (default 3; quick 2)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.work)
        return 0

    import onnxruntime as ort
    from rich.console import Console

    console = Console(stderr=True)
    say = console.log
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 1.5)
    min_reps = args.min_reps if args.min_reps is not None else (2 if args.quick else 3)
    batches, seqs = ((1, 8), (64,)) if args.quick else (BATCHES, SEQS)
    available = ort.get_available_providers()
    gpu = {name: prov in available for name, prov in GPU_BACKENDS.items()}
    backends = [*CPU_BACKENDS, *(name for name, ok in gpu.items() if ok)]

    started = time.perf_counter()
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="turnwise-bench-") as tmp:
        work = Path(tmp)
        art = build_artifacts(work, args.quick, any(gpu.values()), say)
        tok = art["tokenizer"]
        shared = {
            "work": str(work), "ckpt": str(work / "ckpt"), "files": {k: str(v) for k, v in art["files"].items()},
            "vocab": int(art["arch"]["vocab_size"]), "cls_id": tok.cls_token_id, "sep_id": tok.sep_token_id,
            "config": {"threads": args.threads, "budget": budget, "min_reps": min_reps,
                       "batches": list(batches), "seqs": list(seqs)},
        }
        (work / "artifacts.json").write_text(json.dumps(shared), encoding="utf-8")
        results: dict[str, Timed] = {}
        for i, name in enumerate(backends, 1):
            say(f"[{i}/{len(backends)}] timing {name} over {len(batches) * len(seqs)} shapes")
            results[name] = run_worker(name, work)

    cells = cells_of(results, art, backends, batches, seqs)
    gpu_info = {name: ({"measured": True} if ok else
                       {"measured": False, "reason": f"{GPU_BACKENDS[name]} not in this onnxruntime build "
                                                     f"(available: {', '.join(available)})"})
                for name, ok in gpu.items()}
    res = build_result(quick=args.quick, started=started, threads=args.threads, before=before, budget=budget,
                       min_reps=min_reps, batches=batches, seqs=seqs, art=art, cells=cells, gpu_info=gpu_info,
                       gpu=gpu)
    stem = write_results(args.out, res)
    console.print(markdown(res))
    say(f"wrote {args.out / (stem + '.json')} and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
