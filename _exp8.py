import tempfile, time
from pathlib import Path
import numpy as np, onnxruntime as ort
from trainer.checkpoint import load_checkpoint
from export.onnx_export import TurnwiseOnnxConfig, export_raw, optimize_fp32
from export.quantize import PRESETS, quantize_int8
ck = load_checkpoint("/tmp/exp/minilm_ckpt")
cfg = TurnwiseOnnxConfig(tasks=tuple(ck.schema.names()))
d = Path(tempfile.mkdtemp())
raw = export_raw(ck.model, d / "raw.onnx", cfg)
optimize_fp32(raw, d / "opt.onnx", num_heads=12, hidden_size=384)
models = {"raw_fp32": d/"raw.onnx", "opt_fp32": d/"opt.onnx"}
for src in ["raw", "opt"]:
    for name in ["avx512_vnni", "accurate"]:
        dst = d / f"{src}_{name}" / "m.onnx"; dst.parent.mkdir()
        quantize_int8(d / f"{src}.onnx", dst, PRESETS[name], head_outputs=list(cfg.output_names), built_from=src)
        models[f"{src}_{name}"] = dst
rng = np.random.default_rng(0)
so = ort.SessionOptions(); so.intra_op_num_threads = 2
sess = {k: ort.InferenceSession(str(v), so, providers=["CPUExecutionProvider"]) for k, v in models.items()}
for b, t in [(1, 64), (8, 128)]:
    ids = rng.integers(1000, 20000, (b, t)); feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    res = {k: [] for k in sess}
    for k, s in sess.items(): s.run(None, feed)
    for r in range(5):
        for k, s in sess.items():
            ts = []
            for _ in range(5 if b == 8 else 20):
                t0 = time.perf_counter(); s.run(None, feed); ts.append(time.perf_counter() - t0)
            res[k].append(np.median(ts) * 1000)
    print(b, t, {k: round(min(v), 2) for k, v in res.items()})
