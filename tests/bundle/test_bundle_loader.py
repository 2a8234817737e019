"""The bundle loader: refusals (checksum, missing file, parity record), variant and provider choice,
and predictions equal to the PyTorch checkpoint's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle.errors import (
    BundleError,
    BundleIncompleteError,
    ChecksumError,
    ParityRecordError,
    VariantUnavailableError,
)
from bundle.loader import choose_variant, load_bundle
from bundle.manifest import MANIFEST, write_seal
from bundle.providers import available
from turnwise.dialogue import read_jsonl
from turnwise.window import windows_of

REPO = Path(__file__).resolve().parents[2]


def edit_manifest(bundle: Path, fn) -> None:
    path = bundle / MANIFEST
    m = json.loads(path.read_text(encoding="utf-8"))
    fn(m)
    path.write_text(json.dumps(m), encoding="utf-8")
    write_seal(bundle, m["sha256"])  # re-sealed: these tests are about what bundle.json says, not the seal


def sample_windows(window, limit: int = 40) -> list[list]:
    dialogues = read_jsonl(REPO / "samples" / "dialogues.jsonl")
    wins = [w for d in dialogues[:6] for w in windows_of(d.turns, window)]
    return wins[:limit]


def test_predict_equals_pytorch_checkpoint(tiny_bundle_session: Path, tiny_checkpoint_session: Path) -> None:
    import torch

    from trainer.checkpoint import load_checkpoint
    from turnwise.scoring import decode
    from turnwise.window import encode_windows, pad_batch

    bundle = load_bundle(tiny_bundle_session, variant="fp32")
    ckpt = load_checkpoint(tiny_checkpoint_session)
    windows = sample_windows(bundle.window)
    # same token ids from the bundle's tokenizer.json as from the checkpoint's HF tokenizer
    seqs = encode_windows(windows, ckpt.tokenizer, ckpt.window)
    assert bundle.encode(windows) == seqs
    feed = pad_batch(seqs, ckpt.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = ckpt.model.logits_dict(*(torch.from_numpy(feed[k]) for k in
                                          ("input_ids", "attention_mask", "token_type_ids")))
    expected = decode(ckpt.schema, {k: v.numpy() for k, v in logits.items()})
    got = bundle.predict(windows)
    assert [r["labels"] for r in got] == [r["labels"] for r in expected]
    for g, e in zip(got, expected, strict=True):
        for task, scores in e["scores"].items():
            assert g["scores"][task] == pytest.approx(scores, abs=1e-5)
    infer = bundle.infer(seqs)
    for task, value in logits.items():
        np.testing.assert_allclose(infer[task], value.numpy(), atol=1e-4)


def test_loaded_bundle_surface(tiny_bundle_session: Path, sample_schema) -> None:
    b = load_bundle(tiny_bundle_session)
    assert b.name == "tiny" and b.version == "0.0.1"
    assert b.schema == sample_schema and b.window.max_tokens == 64
    assert b.providers == ["CPUExecutionProvider"]
    assert b.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    out = b.infer([[101, 2000, 102], [101, 102]])
    assert {k: v.shape for k, v in out.items()} == {"intent": (2, 2), "act": (2, 4), "sentiment": (2, 3)}
    assert all(v.dtype == np.float32 for v in out.values())
    assert {k: v.shape for k, v in b.infer([]).items()} == {"intent": (0, 2), "act": (0, 4), "sentiment": (0, 3)}
    assert b.predict([]) == []
    row = b.predict([[{"speaker": "customer", "text": "my card was charged twice"}]])[0]
    assert set(row["labels"]) == {"intent", "act", "sentiment"}
    assert sum(row["scores"]["act"].values()) == pytest.approx(1.0, abs=1e-5)


def test_tampered_model_is_refused(tiny_bundle: Path) -> None:
    path = tiny_bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"model\.onnx"):
        load_bundle(tiny_bundle)
    # the check covers every file, not only the variant being loaded
    with pytest.raises(ChecksumError):
        load_bundle(tiny_bundle, variant="int8")


def test_missing_tokenizer_file_is_refused(tiny_bundle: Path) -> None:
    (tiny_bundle / "vocab.txt").unlink()
    with pytest.raises(BundleIncompleteError, match=r"vocab\.txt"):
        load_bundle(tiny_bundle)


def test_unlisted_file_and_missing_manifest_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    edit_manifest(tiny_bundle, lambda m: m["sha256"].pop("tokenizer.json"))
    with pytest.raises(BundleIncompleteError, match=r"tokenizer\.json"):
        load_bundle(tiny_bundle)
    with pytest.raises(BundleIncompleteError, match=r"bundle\.json"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError):
        load_bundle(tmp_path)


def test_path_outside_the_bundle_is_refused(tiny_bundle: Path) -> None:
    edit_manifest(tiny_bundle, lambda m: m["sha256"].update({"../escape": "0" * 64}))
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(tiny_bundle)


def test_failed_or_missing_parity_record_is_refused(tiny_bundle: Path) -> None:
    def fail_int8(m):
        m["parity"]["int8"]["outputs"]["logits_act"]["label_agreement"] = 0.9  # below 0.99, "passed" still true
    edit_manifest(tiny_bundle, fail_int8)
    with pytest.raises(ParityRecordError, match="logits_act"):
        load_bundle(tiny_bundle, variant="int8")
    assert load_bundle(tiny_bundle, variant="fp32", warmup=False).variant == "fp32"

    edit_manifest(tiny_bundle, lambda m: m["parity"]["fp32"].update(passed=False))
    with pytest.raises(ParityRecordError, match="failed"):
        load_bundle(tiny_bundle, variant="fp32")

    edit_manifest(tiny_bundle, lambda m: m["parity"].pop("fp16"))
    with pytest.raises(ParityRecordError, match="no parity record"):
        load_bundle(tiny_bundle, variant="fp16")


def test_tokenizer_drift_is_refused(tiny_bundle: Path) -> None:
    edit_manifest(tiny_bundle, lambda m: m["tokenizer"]["check"]["ids"][0].append(999))
    with pytest.raises(BundleError, match="tokenizer"):
        load_bundle(tiny_bundle)


def test_explicit_variant_selection(tiny_bundle_session: Path) -> None:
    b = load_bundle(tiny_bundle_session, variant="int8", warmup=False)
    assert b.variant == "int8" and b.model_file.name == "model.int8.onnx"
    assert b.parity["file"] == "model.int8.onnx"
    assert load_bundle(tiny_bundle_session, variant="fp16", warmup=False).model_file.name == "model.fp16.onnx"
    with pytest.raises(VariantUnavailableError, match="int4"):
        load_bundle(tiny_bundle_session, variant="int4")
    with pytest.raises(VariantUnavailableError, match="tpu"):
        load_bundle(tiny_bundle_session, providers="tpu")


def test_auto_variant_rule() -> None:
    all3 = {"variants": {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}}
    assert choose_variant(all3, "auto", "cpu") == "fp32"
    assert choose_variant(all3, "auto", "cuda") == "fp16"
    assert choose_variant(all3, "auto", "tensorrt") == "fp16"
    prefers_int8 = {**all3, "preferred_variant": {"cpu": "int8", "cuda": "fp16"}}
    assert choose_variant(prefers_int8, "auto", "cpu") == "int8"
    assert choose_variant(prefers_int8, "AUTO", "cuda") == "fp16"
    fp32_only = {"variants": {"fp32": "model.onnx"}, "preferred_variant": {"cpu": "int8"}}
    assert choose_variant(fp32_only, "auto", "cpu") == "fp32"
    assert choose_variant(fp32_only, "auto", "cuda") == "fp32"
    with pytest.raises(VariantUnavailableError, match="not in this bundle"):
        choose_variant(fp32_only, "int8", "cpu")


@pytest.mark.skipif("CUDAExecutionProvider" in available(), reason="this onnxruntime build has CUDA")
def test_gpu_provider_missing_from_the_build_is_a_clear_error(tiny_bundle_session: Path) -> None:
    with pytest.raises(VariantUnavailableError, match="onnxruntime-gpu"):
        load_bundle(tiny_bundle_session, providers="cuda")
    with pytest.raises(VariantUnavailableError, match="TensorrtExecutionProvider"):
        load_bundle(tiny_bundle_session, providers="tensorrt")


def test_loader_does_not_import_torch(tiny_bundle_session: Path) -> None:
    code = ("import sys; from bundle.loader import load_bundle; "
            f"b = load_bundle({str(tiny_bundle_session)!r}); "
            "b.predict([[{'speaker': 'customer', 'text': 'hello'}]]); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


@pytest.mark.gpu
def test_cuda_fp16_predicts_like_fp32(tiny_bundle_session: Path) -> None:
    fp32 = load_bundle(tiny_bundle_session, variant="fp32")
    gpu = load_bundle(tiny_bundle_session, variant="fp16", providers="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    windows = sample_windows(fp32.window, limit=64)
    same = np.mean([a["labels"] == b["labels"] for a, b in zip(fp32.predict(windows), gpu.predict(windows),
                                                                 strict=True)])
    assert same >= 0.95


@pytest.mark.gpu
def test_tensorrt_fp16_loads_with_engine_cache(tiny_bundle_session: Path, tmp_path: Path) -> None:
    if "TensorrtExecutionProvider" not in available():
        pytest.skip("onnxruntime build without TensorRT")
    b = load_bundle(tiny_bundle_session, variant="fp16", providers="tensorrt", cache_dir=tmp_path / "trt")
    assert b.providers[0] == "TensorrtExecutionProvider"
    assert any((tmp_path / "trt").iterdir())


def test_gpu_provider_settings_are_built_without_a_gpu(tmp_path):
    """The CUDA/TensorRT settings (checked here as data, since CI has no GPU): priority order with CPU last,
    TensorRT fp16 with an on-disk engine + timing cache and one profile covering every request shape."""
    from bundle.providers import TRT_MAX_BATCH, provider_list

    names = ["input_ids", "attention_mask"]
    assert [n for n, _ in provider_list("cpu", input_names=names, max_tokens=128)] == ["CPUExecutionProvider"]
    cuda = provider_list("cuda", input_names=names, max_tokens=128)
    assert [n for n, _ in cuda] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert cuda[0][1]["device_id"] == 0
    trt = provider_list("tensorrt", input_names=names, max_tokens=96, cache_dir=tmp_path / "trt", fp16=True)
    assert [n for n, _ in trt] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = trt[0][1]
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert (tmp_path / "trt").is_dir()
    assert opts["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert opts["trt_profile_max_shapes"] == f"input_ids:{TRT_MAX_BATCH}x96,attention_mask:{TRT_MAX_BATCH}x96"
    assert provider_list("tensorrt", input_names=names, max_tokens=96, cache_dir=tmp_path / "t2",
                         fp16=False)[0][1]["trt_fp16_enable"] is False
