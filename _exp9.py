import sys, tempfile
from pathlib import Path
import numpy as np, onnx
from trainer.checkpoint import load_checkpoint
from export.onnx_export import TurnwiseOnnxConfig, export_raw, output_name
from export.parity import build_probe_set, run_probes, torch_runner, ort_runner, compare
from onnxruntime.quantization import quantize_dynamic, QuantType
import onnxruntime as ort
ck = load_checkpoint(sys.argv[1])
cfg = TurnwiseOnnxConfig(tasks=tuple(ck.schema.names()))
probes = build_probe_set(ck.tokenizer, ck.window, max_windows=10000)
print(len(probes.seqs))
ref = run_probes(probes, torch_runner(ck.model, cfg.output_names), 0)
d = Path(tempfile.mkdtemp())
raw = export_raw(ck.model, d / "raw.onnx", cfg)
g = onnx.load(str(raw)).graph
names = [n.name for n in g.node if n.op_type == "MatMul"]
heads = [n.name + "_MatMul" for n in g.node if n.op_type == "Gemm"]
def run(tag, exclude, pc):
    dst = d / f"{tag}_{pc}.onnx"
    quantize_dynamic(str(raw), str(dst), op_types_to_quantize=["MatMul"], per_channel=pc, weight_type=QuantType.QInt8,
       nodes_to_exclude=exclude + heads, extra_options={"MatMulConstBOnly": True})
    s = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    c = compare(ck.schema, ref, run_probes(probes, ort_runner(s), 0), output_name)
    print(tag, pc, {k[7:]: (round(v["max_abs_diff"], 3), round(v["label_agreement"], 4)) for k, v in c.items()}, flush=True)
run("all", [], True)
for i in range(6):
    run(f"no_layer{i}", [n for n in names if f"/layer.{i}/" in n], True)
run("no_ffn2", [n for n in names if "/output/dense" in n and "attention" not in n], True)
run("only_ffn1_qkv", [n for n in names if "/output/dense" in n], True)
