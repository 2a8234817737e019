#!/usr/bin/env bash
# make evidence: regenerate the paper's Table 1 on public data (docs/evidence.md), at the cpu preset.
#   DailyDialog act (primary, with the alpha and intra/inter ablations) and MELD sentiment (secondary),
#   each with the simulated and the zeroshot teacher; then the pairwise-vs-pointwise investigation.
# Two runs at a time with one thread each (on 2 cores that beats one run on two threads), about
# 2.5 hours on a 2-core CPU. With a GPU: PRESET=full (the device is picked automatically).
set -euo pipefail
cd "$(dirname "$0")/.."
TW=".venv/bin/turnwise"
OUT="${OUT:-benchmarks/results}"
PRESET="${PRESET:-cpu}"
LOGS="${RUNS:-runs}/evidence"
mkdir -p "$LOGS"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONUNBUFFERED=1

lane() {  # lane NAME ARGS...: one table1 run, logged
  local name=$1; shift
  echo "start $name (log: $LOGS/$name.log)"
  "$TW" experiment table1 --preset "$PRESET" --out "$OUT" "$@" > "$LOGS/$name.log" 2>&1 \
    || { echo "FAILED $name: see $LOGS/$name.log" >&2; return 1; }
  echo "done  $name"
}

( lane dailydialog-simulated --dataset dailydialog --task act --teacher simulated &&
  lane meld-simulated --dataset meld --task sentiment --teacher simulated --val-dialogues 40 --test-dialogues 150 --no-ablations ) &
A=$!
( lane dailydialog-zeroshot --dataset dailydialog --task act --teacher zeroshot &&
  lane meld-zeroshot --dataset meld --task sentiment --teacher zeroshot --val-dialogues 40 --test-dialogues 150 --no-ablations ) &
B=$!
# Investigation (docs/evidence.md): does longer pretraining separate pairwise from pointwise, and does the
# per-dialogue drift of the simulated teacher (the paper's H2) matter? One seed, 1% and 5% gold.
for drift in 1.0 0.0; do
  lane "investigation-drift$drift" --dataset dailydialog --task act --teacher simulated --seeds 0 \
    --gold-fractions 0.01,0.05 --methods pointwise,pairwise --no-ablations --pretrain-steps 400 \
    --noise "{\"accuracy\": 0.70, \"drift\": $drift}" --out "$OUT/investigation/pretrain400-drift$drift"
done
# ... and does a faster head learning rate while pretraining (the encoder's 5e-5 barely moves fresh heads)?
lane investigation-headlr --dataset dailydialog --task act --teacher simulated --seeds 0 \
  --gold-fractions 0.01,0.05 --methods pointwise,pairwise --no-ablations --pretrain-head-lr 1e-3 \
  --out "$OUT/investigation/headlr1e-3-drift1.0"
wait $A
wait $B
echo "Table 1 outputs in $OUT (table1-*.json/.md/.png); write-up: docs/evidence.md"
