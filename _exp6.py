import sys, time, tempfile
from pathlib import Path
import numpy as np
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.model import build_model
from turnwise.tasks import load_tasks
from turnwise.window import WindowConfig
from export.onnx_export import TurnwiseOnnxConfig, export_raw, optimize_fp32, output_name
from export.quantize import PRESETS, quantize_int8, QuantizationPreset
from export.parity import build_probe_set, run_probes, torch_runner, ort_runner, compare
import onnxruntime as ort
which = sys.argv[1]
if which == "untrained":
    schema = load_tasks("samples/tasks.yaml")
    b = build_model("minilm", schema)
    save_checkpoint("/tmp/exp/minilm_ckpt", b.model, b.tokenizer, WindowConfig(), {"backbone": "minilm"})
    ck = load_checkpoint("/tmp/exp/minilm_ckpt")
else:
    ck = load_checkpoint("/tmp/run1")
cfg = TurnwiseOnnxConfig(tasks=tuple(ck.schema.names()))
probes = build_probe_set(ck.tokenizer, ck.window)
ref = run_probes(probes, torch_runner(ck.model, cfg.output_names), 0)
for k, v in ref.items():
    s = np.sort(v, axis=1); print(k, "median top1-top2 margin", np.median(s[:, -1] - s[:, -2]), "min", (s[:, -1] - s[:, -2]).min())
d = Path(tempfile.mkdtemp())
raw = export_raw(ck.model, d / "raw.onnx", cfg)
optimize_fp32(raw, d / "opt.onnx", num_heads=12, hidden_size=384)
for src in ["raw", "opt"]:
    for name, p in [("vnni", PRESETS["avx512_vnni"]), ("accurate", PRESETS["accurate"]), ("avx2", PRESETS["avx2"]), ("heads_q", QuantizationPreset(name="hq", keep_heads_fp32=False))]:
        dst = d / f"{src}_{name}" / "m.onnx"; dst.parent.mkdir()
        quantize_int8(d / f"{src}.onnx", dst, p, head_outputs=list(cfg.output_names), built_from=src)
        s = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        got = run_probes(probes, ort_runner(s), 0)
        c = compare(ck.schema, ref, got, output_name)
        print(src, name, {k: (round(v["max_abs_diff"], 4), round(v["label_agreement"], 4)) for k, v in c.items()})
