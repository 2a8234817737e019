import sys, tempfile
from pathlib import Path
import numpy as np, onnx
from trainer.checkpoint import load_checkpoint
from export.onnx_export import TurnwiseOnnxConfig, export_raw, output_name
from export.quantize import QuantizationPreset
from export.parity import build_probe_set, run_probes, torch_runner, ort_runner, compare
from onnxruntime.quantization import quantize_dynamic, QuantType
import onnxruntime as ort
ck = load_checkpoint(sys.argv[1])
cfg = TurnwiseOnnxConfig(tasks=tuple(ck.schema.names()))
probes = build_probe_set(ck.tokenizer, ck.window)
ref = run_probes(probes, torch_runner(ck.model, cfg.output_names), 0)
d = Path(tempfile.mkdtemp())
raw = export_raw(ck.model, d / "raw.onnx", cfg)
names = [n.name for n in onnx.load(str(raw)).graph.node if n.op_type == "MatMul"]
cats = {
 "qkv": [n for n in names if "/attention/self/" in n and ("query" in n or "key" in n or "value" in n)],
 "attn_out": [n for n in names if "/attention/output/dense" in n],
 "ffn1": [n for n in names if "/intermediate/dense" in n],
 "ffn2": [n for n in names if "/output/dense" in n and "attention" not in n],
}
print({k: len(v) for k, v in cats.items()})
heads = [n.name + "_MatMul" for n in onnx.load(str(raw)).graph.node if n.op_type == "Gemm"]
def run(tag, exclude, pc):
    dst = d / f"{tag}_{pc}.onnx"
    quantize_dynamic(str(raw), str(dst), op_types_to_quantize=["MatMul"], per_channel=pc, weight_type=QuantType.QInt8,
       nodes_to_exclude=exclude + heads, extra_options={"MatMulConstBOnly": True})
    s = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    c = compare(ck.schema, ref, run_probes(probes, ort_runner(s), 0), output_name)
    print(tag, pc, {k[7:]: (round(v["max_abs_diff"], 3), round(v["label_agreement"], 3)) for k, v in c.items()})
for pc in [False, True]:
    run("all", [], pc)
    for k, v in cats.items():
        run("no_" + k, v, pc)
    run("only_" + "ffn2", [n for k, v in cats.items() if k != "ffn2" for n in v], pc)
