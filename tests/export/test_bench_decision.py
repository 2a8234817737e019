"""The backend benchmark's arithmetic and its decision rule (the timing itself runs in `make bench`)."""

from __future__ import annotations

import pytest

# benchmarks/ is importable from the repository root (pytest's pythonpath; make bench runs it with `python -m`).
from benchmarks.backends_decision import decide, flops_per_sequence, geomean

MINILM = {"num_layers": 6, "hidden_size": 384, "intermediate_size": 1536}


def test_flops_formula_for_minilm() -> None:
    # L * (8 T H^2 + 4 T H I + 4 T^2 H) + 2 H C at T = 128, C = 9 logits
    expected = 6 * (8 * 128 * 384**2 + 4 * 128 * 384 * 1536 + 4 * 128**2 * 384) + 2 * 384 * 9
    assert flops_per_sequence(MINILM, 128, 9) == expected
    assert flops_per_sequence(MINILM, 128, 9) / 1e9 == pytest.approx(2.87, abs=0.01)
    # linear in T for the projections, quadratic only through attention
    linear = 6 * (8 * 384**2 + 4 * 384 * 1536)
    assert flops_per_sequence(MINILM, 256, 0) - 2 * flops_per_sequence(MINILM, 128, 0) == 6 * 4 * 384 * (
        256**2 - 2 * 128**2)
    assert linear == 2 * 6 * (4 * 384**2 + 2 * 384 * 1536)  # = 2 x non-embedding weights per token


def _cells(speedups: dict[str, float]) -> list[dict]:
    return [{"backend": b, "batch": batch, "seq": 64, "speedup_vs_torch_fp32": s * (1 + 0.01 * batch)}
            for b, s in speedups.items() for batch in (1, 8)]


def test_decision_prefers_the_fastest_bundle_variant() -> None:
    d = decide(_cells({"torch_fp32": 1.0, "torch_bf16_autocast": 0.7, "ort_fp32_raw": 1.2,
                       "ort_fp32_optimized": 1.5, "ort_int8": 2.0}), {"ort_cuda_fp16": False})
    assert d["preferred_variant"] == {"cpu": "int8", "cuda": "fp16", "tensorrt": "fp16"}
    assert d["fastest_backend"] == "ort_int8"
    d = decide(_cells({"torch_fp32": 1.0, "torch_bf16_autocast": 3.0, "ort_fp32_optimized": 1.5,
                       "ort_int8": 1.2}), {})
    # a PyTorch backend can be the fastest, but a bundle can only prefer one of its own variants
    assert d["fastest_backend"] == "torch_bf16_autocast" and d["preferred_variant"]["cpu"] == "fp32"
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
