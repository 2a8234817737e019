"""The MiniLM bundles the service benchmark and the context sweep measure, built once per workdir.

- ``minilm-bundle`` (flat, ``todbert-v1``: 12 turns / 128 tokens) exported from ``minilm-ckpt``, which
  is kept: the naive PyTorch server runs it;
- ``minilm-stream-bundle`` (streaming, ``turn-causal-v1``: :meth:`WindowConfig.turn_causal`, 512-token
  spans re-anchored to 256) from a checkpoint of the same untrained student saved with that window.

Both are exported with fp32 and int8 (:data:`VARIANTS`) and reused while they are intact
(:func:`harness.bundles.untrained_bundle`). Untrained heads change nothing about speed, but their logits
are near ties, so int8 agrees with fp32 on fewer labels than a trained model's (0.95 on the probe set,
where the export asks 0.99): int8's parity gate is :data:`INT8_LABEL_AGREEMENT` here, and the bundle's
parity record says so (max |logit diff| is recorded as always).

    python -m benchmarks.bench_bundles [--workdir runs/bench]   # build both now
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from harness.bundles import is_intact, untrained_bundle
from turnwise.names import CHECKPOINT_META

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "int8")
DEFAULT_WORKDIR = Path(os.environ.get("RUNS", REPO / "runs")) / "bench"
INT8_LABEL_AGREEMENT = 0.8


def tolerances() -> dict:
    from export.parity import Tolerance

    return {"int8": Tolerance(max_abs_diff=None, min_label_agreement=INT8_LABEL_AGREEMENT)}


def say(msg: str) -> None:
    print(f"[bench_bundles {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def variants_for(*extra: str) -> list[str]:
    return sorted({*VARIANTS, *extra})


def ensure_flat(workdir: Path, variants: list[str] | None = None) -> tuple[Path, Path]:
    """(checkpoint, bundle) of the flat MiniLM student; the naive server runs the checkpoint in PyTorch."""
    variants = variants or variants_for()
    ckpt, bundle = workdir / "minilm-ckpt", workdir / "minilm-bundle"
    if not (is_intact(bundle, variants) and (ckpt / CHECKPOINT_META).exists()):
        say(f"building the flat MiniLM student and exporting {variants} (once; cached in {workdir})")
    untrained_bundle(bundle, kind="minilm", variants=variants, name="minilm-bench", version="1", checkpoint=ckpt,
                     tolerances=tolerances())
    return ckpt, bundle


def ensure_streaming(workdir: Path, variants: list[str] | None = None) -> Path:
    """The streaming (turn-causal-v1) MiniLM bundle."""
    from turnwise.window import WindowConfig

    variants = variants or variants_for()
    bundle = workdir / "minilm-stream-bundle"
    if not is_intact(bundle, variants, WindowConfig.turn_causal()):
        say(f"building the streaming MiniLM student and exporting {variants} (once; cached in {workdir})")
    return untrained_bundle(bundle, kind="minilm", variants=variants, streaming=True, name="minilm-stream-bench",
                            version="1", tolerances=tolerances())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    say(f"flat: {ensure_flat(args.workdir)[1]}")
    say(f"streaming: {ensure_streaming(args.workdir)}")


if __name__ == "__main__":
    main()
