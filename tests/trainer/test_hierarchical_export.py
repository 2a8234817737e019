"""A hierarchical checkpoint through export, the bundle and the service: same paths as PyTorch."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from bundle.loader import load_bundle
from export.pipeline import ExportOptions, export_bundle
from harness.bundles import untrained_checkpoint
from trainer.checkpoint import load_checkpoint
from trainer.evaluate import evaluate_path
from turnwise.scoring import decode
from turnwise.tasks import parse_tasks
from turnwise.window import WindowConfig, encode_windows, pad_batch

SCHEMA = parse_tasks({"tasks": {
    "act": {"type": "multiclass", "labels": ["inform", "question", "other"]},
    "route": {"type": "hierarchical", "levels": ["domain", "intent"],
              "labels": ["bank/balance", "bank/transfer", "travel/book", "travel/cancel", "travel/balance"]},
}})
WINDOWS = [
    [{"speaker": "customer", "text": "i want to book a flight to rome"}],
    [{"speaker": "agent", "text": "how can i help"}, {"speaker": "customer", "text": "what is my balance"}],
    [{"speaker": "customer", "text": "cancel it"}, {"speaker": "agent", "text": "which booking ?"},
     {"speaker": "customer", "text": "the hotel in oslo , and send money to bob"}],
]


def _randomise_heads(ckpt: Path) -> None:
    """Spread the untrained heads' logits so paths differ between inputs (weights saved back)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpt / "model.safetensors"))
    g = torch.Generator().manual_seed(3)
    for k in state:
        if k.startswith("heads.route."):
            state[k] = torch.randn(state[k].shape, generator=g) * 2.0
    save_file(state, str(ckpt / "model.safetensors"))


@pytest.fixture(scope="module", params=["flat", "streaming"])
def hier_bundle(request, tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> tuple[Path, Path]:
    window = WindowConfig(max_turns=4, max_tokens=48) if request.param == "flat" else WindowConfig.turn_causal(64, 32)
    root = tmp_path_factory.mktemp(f"hier-{request.param}")
    ckpt = untrained_checkpoint(root / "ckpt", tiny_backbone, name="hier", version="1", schema=SCHEMA, window=window)
    _randomise_heads(ckpt)
    out = root / "bundle"
    export_bundle(ckpt, out, ExportOptions(variants=("fp32",), bench_results=None))
    return ckpt, out


def test_bundle_predictions_match_the_pytorch_model(hier_bundle):
    ckpt_dir, bundle_dir = hier_bundle
    ckpt = load_checkpoint(ckpt_dir)
    bundle = load_bundle(bundle_dir, variant="fp32")
    assert bundle.manifest["tasks"]["route"]["type"] == "hierarchical"
    got = bundle.predict(WINDOWS)
    if not bundle.streaming:
        ids = encode_windows(WINDOWS, ckpt.tokenizer, ckpt.window)
        feed = {k: torch.from_numpy(v) for k, v in pad_batch(ids, ckpt.tokenizer.pad_token_id).items()}
        with torch.no_grad():
            ref_logits = {k: v.numpy() for k, v in ckpt.model.logits_dict(**feed).items()}
        onnx_logits = bundle.infer(ids)
        assert np.abs(onnx_logits["route"] - ref_logits["route"]).max() < 1e-4
        assert got == decode(SCHEMA, onnx_logits)
        ref = decode(SCHEMA, ref_logits)
        assert [r["labels"] for r in got] == [r["labels"] for r in ref]
        for a, b in zip(got, ref, strict=True):
            for node, p in a["scores"]["route"].items():
                assert math.isclose(p, b["scores"]["route"][node], abs_tol=1e-4)
    assert len({r["labels"]["route"] for r in got}) > 1  # the heads are not degenerate: inputs differ


def test_bundle_evaluation_equals_the_checkpoints(hier_bundle):
    from turnwise.dialogue import Dialogue, Turn

    ckpt_dir, bundle_dir = hier_bundle
    labels = SCHEMA["route"].labels
    dias = [Dialogue(dialogue_id=f"d{i}", turns=[Turn(speaker=t["speaker"], text=t["text"],
                                                      labels={"route": labels[(i + j) % 5]})
                                                 for j, t in enumerate(w)]) for i, w in enumerate(WINDOWS)]
    a = evaluate_path(ckpt_dir, dias)["tasks"]["route"]
    b = evaluate_path(bundle_dir, dias)["tasks"]["route"]
    assert a["confusion"] == b["confusion"]
    assert {k: v["confusion"] for k, v in a["levels"].items()} == {k: v["confusion"] for k, v in b["levels"].items()}


def test_bundle_response_shape(hier_bundle):
    _, bundle_dir = hier_bundle
    bundle = load_bundle(bundle_dir, variant="fp32")
    task = SCHEMA["route"]
    for row in bundle.predict(WINDOWS):
        scores, path, levels = row["scores"]["route"], row["labels"]["route"], row["levels"]["route"]
        assert list(scores) == [n for lv in task.level_nodes() for n in lv]
        for nodes in task.level_nodes():
            assert math.isclose(sum(scores[n] for n in nodes), 1.0, abs_tol=1e-5)
        assert path in task.labels and [lv["level"] for lv in levels] == ["domain", "intent"]
        assert levels[-1]["label"] == path and path.startswith(levels[0]["label"] + "/")
        assert all(lv["p"] == scores[lv["label"]] for lv in levels)
        assert row["labels"]["act"] in SCHEMA["act"].labels and "act" not in row["levels"]


def same_levels(a: list[dict], b: list[dict]) -> bool:
    return [(x["level"], x["label"]) for x in a] == [(x["level"], x["label"]) for x in b] and all(
        math.isclose(x["p"], y["p"], abs_tol=1e-5) for x, y in zip(a, b, strict=True))


async def test_service_answers_with_the_path_and_its_levels(hier_bundle):
    from harness.live import LiveServer
    from service.config import Settings

    _, bundle_dir = hier_bundle
    expected = load_bundle(bundle_dir, variant="fp32").predict(WINDOWS[-1:])[0]
    server = LiveServer(Settings(bundle=bundle_dir, variant="fp32", reload_poll_s=0, api_keys=[],
                                 log_level="warning", shutdown_grace_s=5)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.post("/v1/score", json={"turns": WINDOWS[-1]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["labels"] == expected["labels"]
            assert same_levels(body["levels"]["route"], expected["levels"]["route"])
            for node, p in expected["scores"]["route"].items():
                assert math.isclose(body["scores"]["route"][node], p, abs_tol=1e-5)
            every = (await c.post("/v1/score", json={"turns": WINDOWS[-1], "all": True})).json()
            assert all("levels" in t and t["labels"]["route"] == t["levels"]["route"][-1]["label"]
                       for t in every["turns"])
            for seq, turn in enumerate(WINDOWS[-1]):
                r = await c.post("/v1/dialogues/call-h/turns", json={"seq": seq, **turn})
                assert r.status_code == 200, r.text
            assert same_levels(r.json()["levels"]["route"], expected["levels"]["route"])
    finally:
        server.stop()
