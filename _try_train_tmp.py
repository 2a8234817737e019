import time
from pathlib import Path
from trainer.train import TrainConfig, train
from turnwise.dialogue import read_jsonl
from turnwise.tasks import load_tasks
t=time.time()
ds = read_jsonl("samples/dialogues.jsonl")
schema = load_tasks("samples/tasks.yaml")
res = train(TrainConfig(objective="none", finetune_epochs=3, batch_size=16, precision="fp32", finetune_lr=5e-5), ds, schema, "runs/bench/minilm-trained-ckpt")
print("train", time.time()-t)
from export.cli import run_export
t=time.time()
try:
    run_export(Path("runs/bench/minilm-trained-ckpt"), Path("runs/bench/minilm-trained-bundle"), ["fp32", "int8"], name="minilm-bench", version="1")
except Exception as e:
    print("EXPORT FAILED", e)
print("export", time.time()-t)
