#!/usr/bin/env bash
# make demo: the whole product on the sample calls, offline, on a laptop CPU.
#   1. an offline teacher scores every turn          (turnwise label --teacher zeroshot)
#   2. pairwise pretraining on those scores, then finetuning on the gold labels (turnwise train)
#   3. evaluation on held-out calls                  (turnwise evaluate)
#   4. export to a verified ONNX bundle              (turnwise export)
#   5. serve it with the embedded window store       (turnwise serve)
#   6. stream a held-out call over WebSocket, printing per-utterance scores (turnwise replay)
set -euo pipefail
cd "$(dirname "$0")/.."
TW=".venv/bin/turnwise"
OUT="${RUNS:-runs}/demo"
PORT="${DEMO_PORT:-8765}"
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false

head -n 36 samples/dialogues.jsonl > "$OUT/train.jsonl"
sed -n '37,40p' samples/dialogues.jsonl > "$OUT/val.jsonl"
tail -n 8 samples/dialogues.jsonl > "$OUT/test.jsonl"

echo "== 1/6 teacher: zeroshot ensemble scores for every turn"
$TW label --data "$OUT/train.jsonl" --tasks samples/tasks.yaml --teacher zeroshot --samples 10 \
  --out "$OUT/scores.jsonl" > "$OUT/label-summary.json"

echo "== 2/6 train: pairwise pretraining on teacher scores, then finetuning on gold"
rm -rf "$OUT/checkpoint"
$TW train --data "$OUT/train.jsonl" --val "$OUT/val.jsonl" --tasks samples/tasks.yaml \
  --scores "$OUT/scores.jsonl" --objective pairwise --alpha 0.5 --gold-fraction 1.0 --encoder flat \
  --pretrain-steps 15 --finetune-epochs 3 --batch-size 16 --max-tokens 64 --max-turns 6 --lr 5e-5 \
  --out "$OUT/checkpoint" > "$OUT/train-summary.json"

echo "== 3/6 evaluate on 8 held-out calls"
$TW evaluate --model "$OUT/checkpoint" --data "$OUT/test.jsonl" --out "$OUT/eval.json"

echo "== 4/6 export: ONNX fp32 with parity proof (int8 needs a model trained longer than the demo to keep 99% label agreement)"
rm -rf "$OUT/bundle"
$TW export --checkpoint "$OUT/checkpoint" --out "$OUT/bundle" --variants fp32 --name turnwise-demo

echo "== 5/6 serve on 127.0.0.1:$PORT (embedded window store)"
TURNWISE_BUNDLE="$OUT/bundle" $TW serve --host 127.0.0.1 --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen(\"http://127.0.0.1:$PORT/readyz\", timeout=1)" 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/serve.log"; exit 1; }
  sleep 0.5
done

echo "== 6/6 stream a held-out call over WebSocket"
$TW replay --url "http://127.0.0.1:$PORT" --data "$OUT/test.jsonl" --ws --max-dialogues 1 --rate 0

kill -TERM $SERVER
trap - EXIT
wait $SERVER || { echo "the server did not shut down cleanly (exit $?); see $OUT/serve.log" >&2; exit 1; }
echo "demo finished: artefacts in $OUT"
