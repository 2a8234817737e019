import time, tempfile, torch
from pathlib import Path
from trainer.model import build_model
from trainer.checkpoint import save_checkpoint
from turnwise.tasks import load_tasks
from turnwise.window import WindowConfig, encode_windows, pad_batch, segments
from turnwise.dialogue import read_jsonl
from export.pipeline import export_bundle, ExportOptions
t0 = time.time()
schema = load_tasks("samples/tasks.yaml")
b = build_model("minilm", schema, seed=0)
m = b.model.eval(); w = WindowConfig()
wins, labels = [], {t: [] for t in schema.names()}
for d in read_jsonl("samples/dialogues.jsonl"):
    for i, seg in enumerate(segments(d.turns, w)):
        wins.append(seg)
        for t in schema.names(): labels[t].append(schema[t].index(d.turns[i].labels[t]))
seqs = encode_windows(wins, b.tokenizer, w)
feats = []
with torch.no_grad():
    for i in range(0, len(seqs), 32):
        f = pad_batch(seqs[i:i+32], 0)
        feats.append(m.encode(*(torch.from_numpy(f[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))))
X = torch.cat(feats); print("features", X.shape, time.time()-t0)
opt = torch.optim.Adam(m.heads.parameters(), lr=1e-2)
for step in range(300):
    loss = sum(torch.nn.functional.cross_entropy(m.heads[t](X), torch.tensor(labels[t])) for t in schema.names())
    opt.zero_grad(); loss.backward(); opt.step()
print("loss", float(loss), time.time()-t0)
d = Path(tempfile.mkdtemp())
save_checkpoint(d / "ckpt", m, b.tokenizer, w, {"backbone": "minilm"})
r = export_bundle(d / "ckpt", d / "b", ExportOptions(variants=("fp32", "int8", "fp16"), bench_results=None), progress=print)
for v, rec in r.manifest["parity"].items():
    print(v, rec["max_abs_diff"], rec["min_label_agreement"], {k: v2["label_agreement"] for k, v2 in rec["outputs"].items()})
print(r.manifest["graphs"]["int8"]["attempts"], time.time()-t0)
