"""The backend benchmark's arithmetic and its decision: FLOPs per sequence, and which bundle variant
the measured speed-ups make ``preferred_variant`` (see :mod:`benchmarks.backends` for the formula and rule).
"""

from __future__ import annotations

import math
from typing import Any

# Which bundle variant a measured ORT backend is (the bundle's fp32 file is the optimized graph).
BUNDLE_VARIANT = {"ort_fp32_optimized": "fp32", "ort_int8": "int8"}


def flops_per_sequence(arch: dict[str, Any], seq: int, n_logits: int) -> float:
    """F(T) = L*(8*T*H^2 + 4*T*H*I + 4*T^2*H) + 2*H*C (see the docstring of :mod:`benchmarks.backends`)."""
    layers, h, i = arch["num_layers"], arch["hidden_size"], arch["intermediate_size"]
    return layers * (8 * seq * h * h + 4 * seq * h * i + 4 * seq * seq * h) + 2 * h * n_logits


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def decide(cells: list[dict[str, Any]], gpu_measured: dict[str, bool]) -> dict[str, Any]:
    speedups: dict[str, list[float]] = {}
    for c in cells:
        if c.get("speedup_vs_torch_fp32") is not None:
            speedups.setdefault(c["backend"], []).append(c["speedup_vs_torch_fp32"])
    score = {b: round(geomean(v), 3) for b, v in speedups.items()}
    cpu_candidates = {b: s for b, s in score.items() if b in BUNDLE_VARIANT}
    best_cpu = max(cpu_candidates, key=cpu_candidates.__getitem__) if cpu_candidates else None
    fastest = max(score, key=score.__getitem__) if score else None
    per_batch: dict[str, str] = {}
    for batch in sorted({c["batch"] for c in cells}):
        sub = [c for c in cells if c["batch"] == batch and c["backend"] in BUNDLE_VARIANT]
        agg: dict[str, list[float]] = {}
        for c in sub:
            agg.setdefault(c["backend"], []).append(c["speedup_vs_torch_fp32"])
        if agg:
            per_batch[str(batch)] = BUNDLE_VARIANT[max(agg, key=lambda b: geomean(agg[b]))]
    preferred = {"cpu": BUNDLE_VARIANT[best_cpu] if best_cpu else "fp32", "cuda": "fp16", "tensorrt": "fp16"}
    return {
        "geomean_speedup_vs_torch_fp32": score,
        "fastest_backend": fastest,
        "preferred_variant": preferred,
        "preferred_variant_by_batch": {"cpu": per_batch},
        "gpu_preference_measured": gpu_measured,
        "rule": "cpu: the bundle variant (fp32 = optimized graph, int8) with the best geometric-mean speed-up "
                "over torch_fp32 across all cells; cuda/tensorrt: fp16 unless measured otherwise",
    }
