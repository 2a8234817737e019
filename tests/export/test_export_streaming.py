"""Streaming (turn-causal) export: the step graph, its parity replayed turn by turn, partial bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bundle.loader import load_bundle
from bundle.streaming import StepRequest
from export.errors import ParityError
from export.onnx_export import default_tolerances
from export.parity import Tolerance
from export.pipeline import ExportOptions, export_bundle
from export.step_parity import DialogueProbes, torch_reference
from trainer.checkpoint import load_checkpoint
from turnwise.dialogue import read_jsonl
from turnwise.window import plan_spans, turn_token_ids


def test_streaming_bundle_records_the_step_graph_and_parity_across_reanchors(tiny_stream_bundle: Path) -> None:
    m = json.loads((tiny_stream_bundle / "bundle.json").read_text())
    assert m["window"]["format"] == "turn-causal-v1" and m["io"]["graph"] == "step"
    assert m["io"]["outputs"][-1] == "new_kv" and "past_kv" in m["io"]["inputs"]
    assert set(m["parity"]) == {"fp32", "int8"} and m["rejected_variants"] == {}
    for rec in m["parity"].values():
        assert rec["passed"] and rec["probe"]["reanchors"] > 10 and rec["probe"]["dialogues"] > 100
    assert m["parity"]["fp32"]["max_abs_diff"] < 1e-4
    assert m["graphs"]["int8"]["op_counts"].get("MatMulInteger", 0) > 0  # weights really quantized
    assert "turn-causal" in (tiny_stream_bundle / "MODEL_CARD.md").read_text()


def test_step_graph_turn_by_turn_equals_the_pytorch_span_pass(tiny_stream_bundle: Path,
                                                              tiny_stream_checkpoint: Path, samples_dir: Path) -> None:
    """One long call (several re-anchors), stepped by hand through the loaded bundle."""
    ckpt = load_checkpoint(tiny_stream_checkpoint)
    turns = [t for d in read_jsonl(samples_dir / "dialogues.jsonl")[:4] for t in d.turns]
    ids = turn_token_ids(turns, ckpt.tokenizer, ckpt.window)
    spans = plan_spans([len(t) for t in ids], ckpt.window)
    assert len(spans) >= 4
    ref = torch_reference(ckpt.model, DialogueProbes([ids], "test", ckpt.window))
    bundle = load_bundle(tiny_stream_bundle, variant="fp32")
    got = []
    for span in spans:  # rebuild the span's context in one pass, then one step per scored turn
        (logits, kv), = bundle.step([bundle.rebuild_request(ids[span.start : span.first + 1])])
        got.append(logits["act"][-1])
        for t in range(span.first + 1, span.end):
            (logits, new), = bundle.step([StepRequest([ids[t]], kv)])
            kv = np.concatenate([kv, new])
            got.append(logits["act"][0])
    np.testing.assert_allclose(np.stack(got), ref["logits_act"], atol=1e-4)
    # predict() scores the newest turn of a window with the span the span rule gives it
    last = bundle.predict([turns])[0]["scores"]["act"]
    ref_p = np.exp(ref["logits_act"][-1]) / np.exp(ref["logits_act"][-1]).sum()
    np.testing.assert_allclose(list(last.values()), ref_p, atol=1e-5)


def test_a_perturbed_step_graph_fails_parity_and_leaves_nothing(tiny_stream_checkpoint: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import export.streaming_export as streaming_export

    real = streaming_export.export_step

    def perturbed(model, path, opset):
        with torch.no_grad():
            model.heads["act"].bias.add_(0.05)  # after the reference logits were taken
        return real(model, path, opset)

    monkeypatch.setattr(streaming_export, "export_step", perturbed)
    ckpt = tmp_path / "ck"
    shutil.copytree(tiny_stream_checkpoint, ckpt)
    with pytest.raises(ParityError) as info:
        export_bundle(ckpt, tmp_path / "b", ExportOptions(variants=("fp32",), bench_results=None))
    assert info.value.output == "logits_act" and info.value.value == pytest.approx(0.05, abs=1e-3)
    assert not (tmp_path / "b").exists()


def test_a_failing_variant_is_left_out_and_recorded_unless_required(tiny_stream_checkpoint: Path,
                                                                    tmp_path: Path) -> None:
    tols = default_tolerances()
    tols["int8"] = Tolerance(max_abs_diff=1e-9, min_label_agreement=0.99)  # int8 cannot meet it
    opts = ExportOptions(variants=("fp32", "int8"), tolerances=tols, bench_results=None)
    m = export_bundle(tiny_stream_checkpoint, tmp_path / "b", opts).manifest
    assert list(m["variants"]) == ["fp32"] and list(m["parity"]) == ["fp32"]
    rej = m["rejected_variants"]["int8"]
    assert rej["metric"] == "max_abs_diff" and rej["value"] > 1e-9 and "int8" in rej["error"]
    assert not (tmp_path / "b" / "model.int8.onnx").exists() and not (tmp_path / "b" / "quantization.json").exists()
    load_bundle(tmp_path / "b")  # what is there is servable

    opts.require = ("int8",)
    with pytest.raises(ParityError) as info:
        export_bundle(tiny_stream_checkpoint, tmp_path / "c", opts)
    assert info.value.variant == "int8" and not (tmp_path / "c").exists()


def test_evaluating_the_streaming_bundle_matches_its_checkpoint(tiny_stream_bundle: Path, tiny_stream_checkpoint: Path,
                                                                samples_dir: Path) -> None:
    from trainer.evaluate import evaluate_path

    dialogues = read_jsonl(samples_dir / "dialogues.jsonl")[:12]
    of_bundle = evaluate_path(tiny_stream_bundle, dialogues, variant="fp32")
    of_ckpt = evaluate_path(tiny_stream_checkpoint, dialogues, device="cpu")
    assert of_bundle["kind"] == "bundle:fp32" and of_bundle["window_format"] == "turn-causal-v1"
    assert of_bundle["segments"] == of_ckpt["segments"] > 50
    for task, metrics in of_ckpt["tasks"].items():
        assert of_bundle["tasks"][task]["confusion"] == metrics["confusion"], task
