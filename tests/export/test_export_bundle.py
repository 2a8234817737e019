"""Export: bundle layout, parity records, graph structure, and typed parity failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from bundle.manifest import MANIFEST, VARIANT_FILES, bundle_files
from export.errors import ExportError, ParityError
from export.onnx_export import DEFAULT_OPSET, default_tolerances
from export.parity import Tolerance, build_probe_set
from export.pipeline import ExportOptions, export_bundle
from turnwise.tasks import TaskSchema

DOCUMENTED_KEYS = {"format_version", "name", "version", "created_at", "backbone", "tasks", "window", "variants",
               "parity", "metrics", "sha256"}


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))


def test_manifest_has_the_design_fields(tiny_bundle_session: Path, sample_schema: TaskSchema) -> None:
    m = manifest_of(tiny_bundle_session)
    assert set(m) >= DOCUMENTED_KEYS
    assert m["variants"] == {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
    assert m["tasks"] == sample_schema.to_dict()["tasks"]
    assert m["window"] == {"max_turns": 8, "max_tokens": 64, "format": "todbert-v1"}
    assert (m["name"], m["version"]) == ("tiny", "0.0.1")
    assert m["io"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m["io"]["outputs"] == ["logits_intent", "logits_act", "logits_sentiment"]
    # sha256 covers every file of the bundle, tokenizer, card and quantization settings included
    assert sorted(m["sha256"]) == bundle_files(tiny_bundle_session)
    for f in ("MODEL_CARD.md", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "quantization.json",
              "tasks.yaml", *VARIANT_FILES.values()):
        assert f in m["sha256"], f
    card = (tiny_bundle_session / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Limits" in card and "## Metrics" in card and "int8" in card


def test_parity_is_recorded_and_within_tolerance(tiny_bundle_session: Path) -> None:
    m = manifest_of(tiny_bundle_session)
    assert set(m["parity"]) == {"fp32", "int8", "fp16"}
    for variant, rec in m["parity"].items():
        assert rec["passed"] is True
        assert set(rec["outputs"]) == {"logits_intent", "logits_act", "logits_sentiment"}
        assert rec["measured_on"]["provider"] == "CPUExecutionProvider"
        probe = rec["probe"]
        assert probe["windows"] >= 50 and probe["tokens"]["min"] < probe["tokens"]["max"] == 64
        for out in rec["outputs"].values():
            assert out["label_agreement"] >= 0.99, variant
        assert rec["tolerance"]["min_label_agreement"] == 0.99
    fp32 = m["parity"]["fp32"]
    assert fp32["tolerance"]["max_abs_diff"] == 1e-4
    assert all(o["max_abs_diff"] <= 1e-4 for o in fp32["outputs"].values())
    # quantization and half precision do change the logits: a zero here would mean we compared fp32 twice
    assert m["parity"]["int8"]["max_abs_diff"] > 1e-6
    assert m["parity"]["fp16"]["max_abs_diff"] > 1e-6
    # every variant is measured on the same probe set
    assert len({rec["probe"]["digest"] for rec in m["parity"].values()}) == 1


def test_fp32_variant_is_the_fused_graph(tiny_bundle_session: Path, tiny_checkpoint_session: Path) -> None:
    m = manifest_of(tiny_bundle_session)
    layers = m["architecture"]["num_layers"]
    assert m["graphs"]["fp32"]["source"] == "optimized"
    ops = [n.op_type for n in onnx.load(str(tiny_bundle_session / "model.onnx")).graph.node]
    assert ops.count("Attention") == layers
    assert ops.count("SkipLayerNormalization") == 2 * layers
    assert ops.count("EmbedLayerNormalization") == 1
    assert m["opset"] == DEFAULT_OPSET


def test_int8_graph_has_quantized_matmuls(tiny_bundle_session: Path) -> None:
    m = manifest_of(tiny_bundle_session)
    layers, n_tasks = m["architecture"]["num_layers"], len(m["tasks"])
    model = onnx.load(str(tiny_bundle_session / "model.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    # 6 linear layers per encoder layer: Q, K, V live in one QAttention; output, FFN-in, FFN-out are MatMulInteger
    assert ops.count("QAttention") == layers
    assert ops.count("MatMulInteger") == 3 * layers
    assert ops.count("DynamicQuantizeLinear") >= layers
    assert "Attention" not in ops
    # the only float MatMuls left are the task heads (kept fp32 on purpose) ...
    assert ops.count("MatMul") == n_tasks
    # ... and every encoder weight feeding a quantized op is int8
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "QAttention"):
            assert inits[node.input[1]].data_type == onnx.TensorProto.INT8, node.name
    q = json.loads((tiny_bundle_session / "quantization.json").read_text(encoding="utf-8"))
    assert q["model"] == "model.int8.onnx" and q["mode"] == "dynamic"
    assert q["preset"]["weight_type"] == "QInt8" and q["preset"]["name"] == "avx512_vnni"
    assert m["graphs"]["int8"]["settings"]["preset"] == q["preset"]


def test_fp16_keeps_io_types(tiny_bundle_session: Path) -> None:
    model = onnx.load(str(tiny_bundle_session / "model.fp16.onnx"))
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT64}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    weights = [i for i in model.graph.initializer if len(i.dims) == 2]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)


def test_metrics_name_version_and_cli(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from rich.console import Console

    from export.cli import run_export

    meta_path = tiny_checkpoint / "turnwise.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["metrics"] = {"score": 0.75, "select": "accuracy", "tasks": {"act": {"n": 10, "accuracy": 0.75}}}
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    out = run_export(tiny_checkpoint, tmp_path / "b", ["fp32"], name="support", version="1.2.3",
                     console=Console(file=None, force_terminal=False, width=120))
    m = manifest_of(out)
    assert (m["name"], m["version"]) == ("support", "1.2.3")
    assert m["metrics"] == meta["metrics"]
    assert m["variants"] == {"fp32": "model.onnx"}
    assert "| act | 10 | 0.75 |" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_tiny_tolerance_raises_parity_error_and_leaves_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    tols = default_tolerances()
    tols["fp32"] = Tolerance(max_abs_diff=1e-12, min_label_agreement=0.99)
    out = tmp_path / "b"
    with pytest.raises(ParityError) as info:
        export_bundle(tiny_checkpoint, out,
                      ExportOptions(variants=("fp32",), tolerances=tols, bench_results=None, max_probes=64))
    err = info.value
    assert err.variant == "fp32" and err.metric == "max_abs_diff" and err.output.startswith("logits_")
    assert err.value > 1e-12 and err.output in str(err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.partial")]


def test_perturbed_weights_between_pytorch_and_onnx_fail_parity(tiny_checkpoint: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import export.pipeline as pipeline

    real_export = pipeline.export_raw

    def export_perturbed(model, path, cfg):
        with torch.no_grad():
            model.heads["act"].bias.add_(0.05)  # after the reference logits were taken
        return real_export(model, path, cfg)

    monkeypatch.setattr(pipeline, "export_raw", export_perturbed)
    with pytest.raises(ParityError) as info:
        export_bundle(tiny_checkpoint, tmp_path / "b",
                      ExportOptions(variants=("fp32", "int8"), bench_results=None, max_probes=64, require=("fp32",)))
    assert info.value.output == "logits_act"
    assert info.value.value == pytest.approx(0.05, abs=1e-3)
    assert "logits_act" in str(info.value) and "max_abs_diff" in str(info.value)
    assert not (tmp_path / "b").exists()


def test_label_agreement_failure_is_typed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    tols = default_tolerances()
    tols["int8"] = Tolerance(max_abs_diff=None, min_label_agreement=1.01)  # unattainable on purpose
    with pytest.raises(ParityError) as info:
        export_bundle(tiny_checkpoint, tmp_path / "b",
                      ExportOptions(variants=("fp32", "int8"), tolerances=tols, bench_results=None,
                                    max_probes=64, require=("int8",)))
    assert info.value.variant == "int8" and info.value.metric == "label_agreement"


def test_a_flat_variant_failing_parity_is_left_out_when_not_required(tiny_checkpoint: Path, tmp_path: Path) -> None:
    tols = default_tolerances()
    tols["int8"] = Tolerance(max_abs_diff=None, min_label_agreement=1.01)  # unattainable on purpose
    m = export_bundle(tiny_checkpoint, tmp_path / "b",
                      ExportOptions(variants=("fp32", "int8"), tolerances=tols, bench_results=None,
                                    max_probes=64)).manifest
    assert list(m["variants"]) == ["fp32"] and m["rejected_variants"]["int8"]["metric"] == "label_agreement"
    assert not (tmp_path / "b" / "model.int8.onnx").exists()


def test_refuses_to_overwrite_a_non_bundle_directory(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a model bundle"):
        export_bundle(tiny_checkpoint, out, ExportOptions(variants=("fp32",), bench_results=None))
    assert (out / "notes.txt").read_text() == "keep me"


def test_unknown_variant_is_rejected(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="int4"):
        export_bundle(tiny_checkpoint, tmp_path / "b", ExportOptions(variants=("fp32", "int4")))


def test_preferred_variant_comes_from_the_benchmark(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from bundle.loader import load_bundle

    bench = tmp_path / "backends.json"
    bench.write_text(json.dumps({"created_at": "now", "hardware": {"cpu": "test"},
                                 "preferred_variant": {"cpu": "int8", "cuda": "fp16"}}))
    out = export_bundle(tiny_checkpoint, tmp_path / "b",
                        ExportOptions(variants=("fp32", "int8"), bench_results=bench, max_probes=64)).path
    m = manifest_of(out)
    # fp16 is not in this bundle, so the GPU preference falls back to fp32
    assert m["preferred_variant"] == {"cpu": "int8", "cuda": "fp32", "tensorrt": "fp32"}
    assert "backends.json" in m["preferred_variant_source"]
    assert load_bundle(out, warmup=False).variant == "int8"


def test_probe_set_is_deterministic_and_falls_back_to_builtin(tiny_checkpoint: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import export.parity as parity
    from trainer.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    a = build_probe_set(ckpt.tokenizer, ckpt.window)
    b = build_probe_set(ckpt.tokenizer, ckpt.window)
    assert a.digest == b.digest and a.source == "samples/dialogues.jsonl"
    monkeypatch.setattr(parity, "SAMPLE_DIALOGUES", tmp_path / "absent.jsonl")
    c = build_probe_set(ckpt.tokenizer, ckpt.window)
    assert c.source == "builtin" and len(c.seqs) == sum(len(d) for d in parity.BUILTIN_DIALOGUES)
    lengths = [len(s) for s in c.seqs]
    assert min(lengths) < 20 and max(lengths) == ckpt.window.max_tokens  # the long turn is left-truncated
    with pytest.raises(ExportError):
        build_probe_set(ckpt.tokenizer, ckpt.window, probe_data=tmp_path / "missing.jsonl")


def test_onnx_graph_has_dynamic_batch_and_sequence(tiny_bundle_session: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_bundle_session / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 2), (3, 17), (5, 64)):
        ids = np.full((batch, length), 2000, dtype=np.int64)
        outs = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                               "token_type_ids": np.zeros_like(ids)})
        assert [o.shape for o in outs] == [(batch, 2), (batch, 4), (batch, 3)]


@pytest.mark.slow
def test_real_minilm_export(tmp_path: Path, sample_schema: TaskSchema) -> None:
    """The real MiniLM student: fp32 and fp16 pass their gates; int8's logit error stays where the
    per-channel recipe puts it (~0.08 on this model; per-tensor gave ~0.24, a broken recipe >= 1).

    The heads are untrained, so int8's label agreement is not gated here: with near-tied logits it
    measures the model's margins more than the quantizer (the exporter gates it on real models).
    """
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_model
    from turnwise.window import WindowConfig

    built = build_model("minilm", sample_schema, seed=0)
    ckpt = save_checkpoint(tmp_path / "ckpt", built.model, built.tokenizer, WindowConfig(), {"backbone": "minilm"})
    tols = default_tolerances()
    tols["int8"] = Tolerance(max_abs_diff=0.15, min_label_agreement=None)
    opts = ExportOptions(variants=("fp32", "int8", "fp16"), tolerances=tols, quantization="avx512_vnni",
                         bench_results=None)
    m = export_bundle(ckpt, tmp_path / "b", opts).manifest
    assert all(rec["passed"] for rec in m["parity"].values())
    assert m["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert m["parity"]["fp16"]["min_label_agreement"] >= 0.99
    assert m["graphs"]["fp32"]["settings"]["fused"]["Attention"] == 6
    assert m["graphs"]["int8"]["op_counts"]["QAttention"] == 6
    assert m["graphs"]["int8"]["op_counts"]["MatMulInteger"] == 18


def test_ffn_output_preset_keeps_those_matmuls_float(tiny_checkpoint: Path, tmp_path: Path) -> None:
    m = export_bundle(tiny_checkpoint, tmp_path / "b",
                      ExportOptions(variants=("int8",), quantization="avx512_vnni_ffn_out_fp32", bench_results=None,
                                    max_probes=64)).manifest
    layers, n_tasks = m["architecture"]["num_layers"], len(m["tasks"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "b" / "model.int8.onnx")).graph.node]
    assert ops.count("QAttention") == layers
    assert ops.count("MatMulInteger") == 2 * layers  # attention output + FFN input
    assert ops.count("MatMul") == n_tasks + layers  # heads + FFN output projections
    assert m["graphs"]["int8"]["attempts"] == [{"preset": "avx512_vnni_ffn_out_fp32", "passed": True}]


def test_int8_falls_back_along_the_preset_ladder(tiny_checkpoint: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import export.pipeline as pipeline

    real_prove = pipeline._prove
    calls: list[str] = []

    def prove(variant, path, *args):
        calls.append(variant)
        if variant == "int8" and calls.count("int8") == 1:
            raise ParityError("int8", "logits_act", "label_agreement", 0.97, 0.99)
        return real_prove(variant, path, *args)

    monkeypatch.setattr(pipeline, "_prove", prove)
    out = tmp_path / "b"
    m = export_bundle(tiny_checkpoint, out, ExportOptions(variants=("fp32", "int8"), bench_results=None,
                                                          max_probes=64)).manifest
    attempts = m["graphs"]["int8"]["attempts"]
    assert [a["preset"] for a in attempts] == ["avx512_vnni", "avx512_vnni_ffn_out_fp32"]
    assert [a["passed"] for a in attempts] == [False, True] and "logits_act" in attempts[0]["error"]
    q = json.loads((out / "quantization.json").read_text(encoding="utf-8"))
    assert q["preset"]["name"] == "avx512_vnni_ffn_out_fp32" and m["parity"]["int8"]["passed"]
