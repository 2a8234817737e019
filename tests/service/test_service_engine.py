"""The engine on its own: tokens through the turn cache equal the loader's, hot reload keeps the old bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from svc_helpers import bundle_version

from bundle.loader import load_bundle
from service.config import Settings
from service.engine import CachedTokenizer, Engine, length_groups
from service.errors import ErrorKind, ServiceError
from service.metrics import Metrics
from turnwise.dialogue import read_jsonl
from turnwise.window import encode_windows, windows_of


def test_turn_cache_gives_exactly_the_loaders_tokens(tiny_bundle: Path, samples_dir: Path):
    bundle = load_bundle(tiny_bundle, warmup=False)
    windows = [w for d in read_jsonl(samples_dir / "dialogues.jsonl")[:10] for w in windows_of(d.turns, bundle.window)]
    expected = bundle.encode(windows)
    cached = CachedTokenizer(bundle.tokenizer, maxsize=7)  # tiny: evictions happen all the time
    one_by_one = [encode_windows([w], cached, bundle.window)[0] for w in windows]
    assert one_by_one == expected
    assert encode_windows(windows, cached, bundle.window) == expected
    assert len(cached._cache) <= 7


async def test_reload_swaps_and_a_bad_bundle_keeps_the_old_one(tiny_bundle: Path, tmp_path: Path):
    link = tmp_path / "current"
    v1 = bundle_version(tiny_bundle, tmp_path / "v1", "1")
    link.symlink_to(v1, target_is_directory=True)
    engine = Engine(Settings(bundle=link), Metrics())
    await engine.start()
    assert engine.current.version == "1"
    assert (await engine.reload())["reloaded"] is False  # nothing changed
    v2 = bundle_version(tiny_bundle, tmp_path / "v2", "2")
    link.unlink()
    link.symlink_to(v2, target_is_directory=True)
    assert (await engine.reload())["model"] == {"name": "tiny", "version": "2"}
    # in place: a bundle.json that no longer parses is refused, v2 keeps serving
    manifest = json.loads((v2 / "bundle.json").read_text())
    (v2 / "bundle.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ServiceError) as info:
        await engine.reload()
    assert info.value.kind is ErrorKind.bundle_rejected and "format_version" in info.value.message
    assert engine.current.version == "2"
    with pytest.raises(ServiceError) as again:  # the rejected version is not loaded again, still refused
        await engine.reload()
    assert again.value.kind is ErrorKind.bundle_rejected and again.value.message == info.value.message
    rows = await engine.infer(engine.current, engine.encode(engine.current, [[{"speaker": "a", "text": "hi"}]]))
    assert len(rows) == 1 and set(rows[0]["labels"]) == {"intent", "act", "sentiment"}
    engine.close()


@pytest.mark.parametrize("max_waste", [0.0, 0.1, 0.3, 1.0])
def test_length_groups_bound_padding(max_waste: float):
    rng = np.random.default_rng(1)
    for _ in range(50):
        lengths = rng.integers(3, 129, rng.integers(1, 40)).tolist()
        groups = length_groups(lengths, max_waste)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for g in groups:
            longest = max(lengths[i] for i in g)
            assert 1 - sum(lengths[i] for i in g) / (len(g) * longest) <= max_waste + 1e-9
        if max_waste >= 1:
            assert len(groups) == 1


async def test_a_replaced_bundle_is_released(tiny_bundle: Path, tmp_path: Path):
    """After a hot reload nothing keeps the old bundle (its ONNX session) alive: admission estimates,
    tokenizer caches and streaming states are all per bundle."""
    import gc
    import weakref

    link = tmp_path / "current"
    link.symlink_to(bundle_version(tiny_bundle, tmp_path / "v1", "1"), target_is_directory=True)
    engine = Engine(Settings(bundle=link), Metrics())
    await engine.start()
    await engine.infer(engine.current, engine.encode(engine.current, [[{"speaker": "a", "text": "hi"}]]))
    old = weakref.ref(engine.current)
    link.unlink()
    link.symlink_to(bundle_version(tiny_bundle, tmp_path / "v2", "2"), target_is_directory=True)
    assert (await engine.reload())["reloaded"] is True
    await engine.infer(engine.current, engine.encode(engine.current, [[{"speaker": "a", "text": "hi"}]]))
    gc.collect()
    assert old() is None
    await engine.stop()
    engine.close()
