#!/usr/bin/env bash
# make demo: the whole product on the sample calls, offline, on a laptop CPU.
#   1. an offline teacher scores every turn          (turnwise label --teacher zeroshot)
#   2. pairwise pretraining on those scores, then finetuning on the gold labels (turnwise train)
#   3. evaluation on held-out calls                  (turnwise evaluate)
#   4. export to a verified ONNX bundle              (turnwise export)
#   5. score the held-out calls offline              (turnwise score)
#   6. serve it with the embedded window store and the sample alert rules (turnwise serve)
#   7. stream a held-out call over WebSocket, printing per-utterance scores and alerts (turnwise replay)
#
# samples/dialogues.jsonl: calls 1-48, then 49-108 (written later). Held out, never trained on:
# validation 37-40 + 81-84 (early stopping), test 41-48 + 85-92 (the evaluation and the streamed call).
set -euo pipefail
cd "$(dirname "$0")/.."
TW=".venv/bin/turnwise"
OUT="${RUNS:-runs}/demo"
# DEMO_PORT, else 8765 when it is free, else any free port (another server on 8765 must not answer for ours).
PORT="${DEMO_PORT:-$(.venv/bin/python -c 'import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 8765))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}"
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false

sed -n '1,36p;49,80p;93,108p' samples/dialogues.jsonl > "$OUT/train.jsonl"
sed -n '37,40p;81,84p' samples/dialogues.jsonl > "$OUT/val.jsonl"
sed -n '41,48p;85,92p' samples/dialogues.jsonl > "$OUT/test.jsonl"

echo "== 1/7 teacher: zeroshot ensemble scores for every turn"
$TW label --data "$OUT/train.jsonl" --tasks samples/tasks.yaml --teacher zeroshot --samples 10 \
  --out "$OUT/scores.jsonl" > "$OUT/label-summary.json"

echo "== 2/7 train: pairwise pretraining on teacher scores, then finetuning on gold"
rm -rf "$OUT/checkpoint"
$TW train --data "$OUT/train.jsonl" --val "$OUT/val.jsonl" --tasks samples/tasks.yaml \
  --scores "$OUT/scores.jsonl" --objective pairwise --alpha 0.5 --gold-fraction 1.0 --encoder streaming \
  --pretrain-steps 15 --finetune-epochs 7 --token-budget 256 --lr 1e-4 \
  --select-metric macro_f1 --out "$OUT/checkpoint" > "$OUT/train-summary.json"

echo "== 3/7 evaluate on 16 held-out calls"
$TW evaluate --model "$OUT/checkpoint" --data "$OUT/test.jsonl" --out "$OUT/eval.json"
.venv/bin/python -c "import json,sys; t=json.load(open(sys.argv[1]))['tasks']; print('held-out macro-F1: ' + ', '.join(f'{k} {v[\"macro_f1\"]:.3f}' for k,v in t.items()))" "$OUT/eval.json"

echo "== 4/7 export: the streaming step graph, ONNX fp32, with its parity proof (replayed turn by turn)"
rm -rf "$OUT/bundle"
$TW export --checkpoint "$OUT/checkpoint" --out "$OUT/bundle" --variants fp32 --name turnwise-demo

echo "== 5/7 score the held-out calls offline, each turn with the context the service gives it"
$TW score --model "$OUT/bundle" --data "$OUT/test.jsonl" --out "$OUT/predictions.jsonl" > "$OUT/score-summary.json"

echo "== 6/7 serve on 127.0.0.1:$PORT (embedded window store, alert rules from samples/rules.yaml)"
TURNWISE_BUNDLE="$OUT/bundle" TURNWISE_RULES=samples/rules.yaml \
  $TW serve --host 127.0.0.1 --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
# Ready = /readyz answers with *this* bundle's version (not some other server on the port).
ready() {
  .venv/bin/python - "$PORT" "$OUT/bundle/bundle.json" <<'PY' 2>/dev/null
import json, sys, urllib.request
ready = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1))
sys.exit(ready["model"]["version"] != json.load(open(sys.argv[2]))["version"])
PY
}
for _ in $(seq 1 240); do
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/serve.log"; echo "turnwise serve exited (port $PORT in use?)" >&2; exit 1; }
  ready && break
  sleep 0.5
done
ready || { cat "$OUT/serve.log"; echo "the server on port $PORT did not get ready" >&2; exit 1; }

echo "   live monitor page: http://127.0.0.1:$PORT/monitor   (API documentation: http://127.0.0.1:$PORT/docs)"

echo "== 7/7 stream a held-out call over WebSocket"
$TW replay --url "http://127.0.0.1:$PORT" --data "$OUT/test.jsonl" --ws --max-dialogues 1 --rate 0
.venv/bin/python - "$PORT" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
fired = {m[0]: float(m[1]) for m in re.findall(r'^turnwise_alerts_fired_total\{(.*)\} (\S+)$', text, re.M)}
print(f"alerts fired: {int(sum(fired.values()))} (" + ", ".join(f"{k}: {int(v)}" for k, v in fired.items()) + ")")
sys.exit(0 if fired else "no alert fired on the streamed call: see samples/rules.yaml")
PY

kill -TERM $SERVER
trap - EXIT
wait $SERVER || { echo "the server did not shut down cleanly (exit $?); see $OUT/serve.log" >&2; exit 1; }
echo "demo finished: artefacts in $OUT"
