"""Serving a streaming (turn-causal) bundle: every turn's scores equal the PyTorch full pass over its
span, whether the turn ran as an incremental step over the call's cache or as a one-pass rebuild
(a new call, a replica hop, an eviction, a reload), and a duplicate retry never advances the state."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from export.step_parity import DialogueProbes, torch_reference
from harness.ports import free_port
from trainer.checkpoint import load_checkpoint
from turnwise.dialogue import Turn, read_jsonl
from turnwise.scoring import decode
from turnwise.window import plan_spans, turn_token_ids

MODES = ("incremental", "rebuilt", "cached")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def long_call(tiny_stream_checkpoint: Path, samples_dir: Path) -> tuple[list[Turn], list[dict[str, Any]], int]:
    """A call of four sample dialogues back to back, the reference scores of every turn, its spans."""
    ckpt = load_checkpoint(tiny_stream_checkpoint)
    turns = [t for d in read_jsonl(samples_dir / "dialogues.jsonl")[:4] for t in d.turns]
    ids = turn_token_ids(turns, ckpt.tokenizer, ckpt.window)
    ref = torch_reference(ckpt.model, DialogueProbes([ids], "test", ckpt.window))
    rows = decode(ckpt.schema, {t: ref[f"logits_{t}"] for t in ckpt.schema.names()})
    return turns, rows, len(plan_spans([len(t) for t in ids], ckpt.window))


def worst_diff(body: dict[str, Any], expected: dict[str, Any]) -> float:
    return max(abs(p - expected["scores"][task][label])
               for task, scores in body["scores"].items() for label, p in scores.items())


def mode_of(body: dict[str, Any]) -> str:
    (mode,) = [m for m in MODES if m in body["timings_ms"]]
    return mode


def send(client: httpx.Client, call: str, seq: int, turn: Turn) -> dict[str, Any]:
    r = client.post(f"/v1/dialogues/{call}/turns", json={"seq": seq, "speaker": turn.speaker, "text": turn.text})
    assert r.status_code == 200, r.text
    return r.json()


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def test_a_long_call_scores_like_the_full_pass_with_one_rebuild_per_span(live, tiny_stream_bundle, store_kind,
                                                                           long_call):
    turns, expected, n_spans = long_call
    srv = live(bundle=tiny_stream_bundle, **store_kind)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        bodies = [send(c, "call-long", i, t) for i, t in enumerate(turns)]
        stored = c.get("/v1/dialogues/call-long").json()
        assert max(worst_diff(b, e) for b, e in zip(bodies, expected, strict=True)) < 1e-4
        modes = [mode_of(b) for b in bodies]
        assert modes[0] == "rebuilt" and modes.count("rebuilt") == n_spans >= 4  # the first turn + each re-anchor
        assert modes.count("incremental") == len(turns) - n_spans
        # the stored window is exactly the current span: the anchor trimmed it
        assert len(stored["window"]) == bodies[-1]["window_turns"] < 10
        assert metric(c, 'turnwise_stream_steps_total{mode="incremental"}') == modes.count("incremental")
        assert metric(c, "turnwise_state_cache_bytes") > 0
        every = c.post("/v1/score", json={"all": True, "turns": [{"speaker": t.speaker, "text": t.text}
                                                                    for t in turns]}).json()
        assert max(worst_diff(b, e) for b, e in zip(every["turns"], expected, strict=True)) < 1e-4


@contextlib.contextmanager
def server_process(bundle: Path, redis_url: str, log: Path) -> Iterator[str]:
    """A real ``python -m service.serve`` process on a free port; yields its URL once ready."""
    port = free_port()
    env = {**os.environ, "TURNWISE_BUNDLE": str(bundle), "TURNWISE_HOST": "127.0.0.1", "TURNWISE_PORT": str(port),
           "TURNWISE_REDIS_URL": redis_url, "TURNWISE_RELOAD_POLL_S": "0", "TURNWISE_LOG_LEVEL": "warning",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.serve"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_call_alternating_between_two_server_processes_on_one_redis(tiny_stream_bundle, redis_server, long_call,
                                                                       tmp_path):
    turns, expected, _ = long_call
    with server_process(tiny_stream_bundle, redis_server.url, tmp_path / "a.log") as a, \
            server_process(tiny_stream_bundle, redis_server.url, tmp_path / "b.log") as b, \
            httpx.Client(base_url=a, timeout=30) as ca, httpx.Client(base_url=b, timeout=30) as cb:
        bodies = [send(ca if i % 4 < 2 else cb, "call-hop", i, t) for i, t in enumerate(turns)]
    assert max(worst_diff(x, e) for x, e in zip(bodies, expected, strict=True)) < 1e-4
    modes = [mode_of(x) for x in bodies]
    assert all(modes[i] == "rebuilt" for i in range(2, len(turns), 2))  # each hop rebuilds from Redis
    assert "incremental" in modes  # the second turn on each process extends its own cache


def test_a_tiny_cache_evicts_and_rebuilds_with_the_same_scores(live, tiny_stream_bundle, long_call):
    """Three calls for a budget of about two states: some turns extend a cached state, others find it
    evicted and rebuild it -- the scores never change."""
    turns, expected, n_spans = long_call
    srv = live(bundle=tiny_stream_bundle, state_cache_mb=0.07)  # the tiny model: <= 32 KB a state
    sent = {"x": 0, "y": 0, "z": 0}
    bodies: dict[str, list[dict[str, Any]]] = {call: [] for call in sent}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        while any(n < len(turns) for n in sent.values()):
            for call in ("x", "x", "y", "z"):  # x sends two turns in a row: the second finds its state
                i = sent[call]
                if i < len(turns):
                    bodies[call].append(send(c, f"call-{call}", i, turns[i]))
                    sent[call] += 1
        evictions = metric(c, "turnwise_state_cache_evictions_total")
        held = metric(c, "turnwise_state_cache_bytes")
    modes = [mode_of(b) for call in bodies.values() for b in call]
    assert evictions > 0 and 0 < held <= 0.07 * 2**20
    assert modes.count("incremental") > 0 and modes.count("rebuilt") > 3 * n_spans  # evictions cost rebuilds
    for call in bodies.values():
        assert max(worst_diff(x, e) for x, e in zip(call, expected, strict=True)) < 1e-4


async def test_concurrent_calls_share_batches_and_keep_their_scores(live, tiny_stream_bundle, long_call):
    """Several calls at once: their steps ride the same model calls (padded pasts), scores unchanged."""
    import asyncio

    turns, expected, _ = long_call
    srv = live(bundle=tiny_stream_bundle, stream_batch_size=8, max_batch_wait_ms=2)

    async def one_call(client: httpx.AsyncClient, call: str) -> list[dict[str, Any]]:
        out = []
        for i, t in enumerate(turns):
            r = await client.post(f"/v1/dialogues/{call}/turns", json={"seq": i, "speaker": t.speaker, "text": t.text})
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out

    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        results = await asyncio.gather(*(one_call(c, f"call-c{k}") for k in range(6)))
    batched = [b for call in results for b in call if "incremental" in b["timings_ms"]]
    assert batched
    for call in results:
        assert max(worst_diff(x, e) for x, e in zip(call, expected, strict=True)) < 1e-4
    with httpx.Client(base_url=srv.url) as c:
        sizes = metric(c, "turnwise_batch_size_sum") / metric(c, "turnwise_batch_size_count")
    assert sizes > 1.0  # steps of different calls did share model calls


def test_a_reload_mid_call_rebuilds_and_keeps_the_scores(live, tiny_stream_bundle, long_call):
    turns, expected, _ = long_call
    srv = live(bundle=tiny_stream_bundle)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        first = [send(c, "call-r", i, t) for i, t in enumerate(turns[:5])]
        assert mode_of(first[-1]) in ("incremental", "rebuilt")
        assert c.post("/v1/admin/reload", params={"force": "true"}).status_code == 200
        rest = [send(c, "call-r", i, t) for i, t in enumerate(turns[5:], start=5)]
    assert mode_of(rest[0]) == "rebuilt"  # the new bundle never sees the old one's keys/values
    assert max(worst_diff(x, e) for x, e in zip(first + rest, expected, strict=True)) < 1e-4


def test_a_duplicate_retry_does_not_advance_the_state(live, tiny_stream_bundle, long_call):
    turns, expected, _ = long_call
    srv = live(bundle=tiny_stream_bundle)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        send(c, "call-d", 0, turns[0])
        second = send(c, "call-d", 1, turns[1])
        again = send(c, "call-d", 1, turns[1])  # the client retried: answered from the store
        assert again["scores"] == second["scores"] and "inference" not in again["timings_ms"]
        third = send(c, "call-d", 2, turns[2])
        steps = metric(c, 'turnwise_stream_steps_total{mode="incremental"}') + metric(
            c, 'turnwise_stream_steps_total{mode="rebuilt"}')
    assert steps == 3  # the retry ran nothing
    assert mode_of(third) == "incremental" and worst_diff(third, expected[2]) < 1e-4


async def test_the_engine_answers_a_retry_that_reaches_it_from_the_cache(tiny_stream_bundle, long_call):
    """A retry whose first attempt has no stored result yet reaches the engine: the state already holds
    the turn, so it is answered from the cache without a step."""
    from service.config import Settings
    from service.engine import Engine
    from turnwise.names import StoredTurn

    turns, expected, _ = long_call
    engine = Engine(Settings(bundle=tiny_stream_bundle, reload_poll_s=0))
    await engine.start()
    window = [StoredTurn(i, t.speaker, t.text) for i, t in enumerate(turns[:3])]
    try:
        row, timings, anchor, _ = await engine.score(engine.current, "d", window, None, float("inf"))
        calls = engine.batches
        again, t2, _, _ = await engine.score(engine.current, "d", window, anchor, float("inf"))
    finally:
        await engine.stop()
    assert "rebuilt" in timings and "cached" in t2 and engine.batches == calls
    assert again == row and worst_diff(row, expected[2]) < 1e-4
    assert np.isfinite(list(row["scores"]["act"].values())).all()


def test_a_flat_bundle_scores_a_call_like_the_pytorch_checkpoint(live, tiny_bundle, tiny_checkpoint_session,
                                                                  samples_dir):
    """The flat path beside it: every turn's window through the service equals the checkpoint's forward."""
    import torch

    from turnwise.window import encode_windows, pad_batch, windows_of

    ckpt = load_checkpoint(tiny_checkpoint_session)
    turns = [t for d in read_jsonl(samples_dir / "dialogues.jsonl")[:2] for t in d.turns]
    feed = pad_batch(encode_windows(windows_of(turns, ckpt.window), ckpt.tokenizer, ckpt.window),
                     ckpt.tokenizer.pad_token_id)
    with torch.no_grad():
        out = ckpt.model.eval()(*(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
    expected = decode(ckpt.schema, {t: o.numpy() for t, o in zip(ckpt.model.task_names, out, strict=True)})
    srv = live(bundle=tiny_bundle)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        bodies = [send(c, "call-flat", i, t) for i, t in enumerate(turns)]
    assert max(worst_diff(b, e) for b, e in zip(bodies, expected, strict=True)) < 1e-4
    assert not any(m in b["timings_ms"] for b in bodies for m in MODES)  # no streaming state for a flat bundle
