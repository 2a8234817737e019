"""Hostile and malformed input against a live service: deep frames never close the socket, auth comes
before any body is read, chunked bodies over the limit are 413, echoed input is cut, error frames name
their dialogue, a rejected bundle stays a 422, expired turns are in the stage histograms, and a frozen
Redis costs a request its budget, not a few socket timeouts."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import websockets
from svc_helpers import bundle_version, repoint

TURN = {"seq": 0, "speaker": "agent", "text": "hello"}


def turn_frame(dialogue_id: str, seq: int, text: str = "hi") -> str:
    return json.dumps({"type": "turn", "dialogue_id": dialogue_id, "seq": seq, "speaker": "customer", "text": text})


async def test_deeply_nested_frames_are_error_frames_and_the_socket_stays_open(live):
    srv = live()
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        await ws.send(turn_frame("call-deep", 0))  # sent before the hostile frames: must not be lost
        await ws.send("[" * 1000 + "]" * 1000)  # 2,000 bytes, 1,000 deep
        await ws.send("[" * 2000 + "]" * 2000)  # 4,000 bytes
        await ws.send('{"type":"turn","seq":' + "[" * 5000)  # unbalanced, deep, a seq key
        await ws.send(json.dumps({"type": "turn", "dialogue_id": "call-deep", "seq": 1, "speaker": "customer",
                                  "text": "[[[[[[[[[[[[[[[[[[[[ brackets in text are text ]]]]]]]]]]]]]]]]]]]]"}))
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in range(5)]
    assert [r["type"] for r in replies] == ["scores", "error", "error", "error", "scores"]
    assert [r["seq"] for r in replies] == [0, None, None, None, 1]
    assert all(r["code"] == "invalid" and "deeper" in r["message"] for r in replies[1:4])


async def test_error_frames_carry_the_dialogue_id_when_known(live):
    srv = live()
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        await ws.send(turn_frame("call-e", 3))
        await ws.send(turn_frame("call-e", 1))  # older than the last seq: conflict
        await ws.send(json.dumps({"type": "turn", "dialogue_id": "call-e", "seq": 4, "speaker": "customer"}))
        await ws.send(json.dumps({"type": "turn", "dialogue_id": "bad id!", "seq": 5}))
        await ws.send("not json")
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in range(5)]
    assert [(r["type"], r.get("code")) for r in replies] == [
        ("scores", None), ("error", "conflict"), ("error", "invalid"), ("error", "invalid"), ("error", "invalid")]
    assert [r["dialogue_id"] for r in replies] == ["call-e", "call-e", "call-e", None, None]
    assert [r["seq"] for r in replies] == [3, 1, 4, 5, None]


async def test_auth_is_checked_before_the_body_is_parsed(live):
    srv = live(api_keys="key-one")
    async with httpx.AsyncClient(base_url=srv.url) as c:
        for body in (b"{not json", b'{"seq": "x"}', b"[" * 5000):
            r = await c.post("/v1/dialogues/call-a/turns", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, (body[:20], r.text)
            assert r.json()["error_type"] == "unauthenticated" and r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/v1/score", content=b"{not json", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # with the key, the same malformed body is what it is: 422
        r = await c.post("/v1/dialogues/call-a/turns", content=b"{not json",
                         headers={"Authorization": "Bearer key-one", "content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error_type"] == "invalid"
        assert (await c.get("/healthz")).status_code == 200  # probes need no key
        text = (await c.get("/metrics")).text
        assert 'turnwise_requests_total{endpoint="turns",outcome="unauthenticated"} 3.0' in text


async def test_a_chunked_body_over_the_limit_is_413(live):
    srv = live(max_body_bytes=4096)

    async def chunks(n: int) -> AsyncIterator[bytes]:
        yield b'{"seq": 0, "speaker": "agent", "text": "'
        for _ in range(n):
            yield b"x" * 1024
        yield b'"}'

    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.post("/v1/dialogues/call-c/turns", content=chunks(8), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers  # really chunked
        assert r.status_code == 413 and r.json()["error_type"] == "too_large"
        # a chunked body under the limit is served as usual
        small = await c.post("/v1/dialogues/call-c/turns", content=chunks(1),
                             headers={"content-type": "application/json"})
        assert small.status_code == 200 and small.json()["seq"] == 0


async def test_an_unknown_huge_label_is_not_echoed_whole(live):
    srv = live()
    async with httpx.AsyncClient(base_url=srv.url) as c:
        assert (await c.post("/v1/dialogues/call-f/turns", json=TURN)).status_code == 200
        label = "z" * 200_000
        r = await c.post("/v1/feedback", json={"dialogue_id": "call-f", "seq": 0, "task": "sentiment", "label": label})
    assert r.status_code == 422 and r.json()["error_type"] == "invalid"
    assert len(r.content) < 2000
    assert "characters cut" in r.json()["error"] and "expected one of" in r.json()["error"]


async def test_a_rejected_bundle_stays_422_on_a_plain_reload(live, tiny_bundle: Path, tmp_path: Path):
    v1 = bundle_version(tiny_bundle, tmp_path / "v1", "1")
    bad = bundle_version(tiny_bundle, tmp_path / "v2", "2")
    with (bad / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    link = tmp_path / "current"
    link.symlink_to(v1, target_is_directory=True)
    srv = live(bundle=link)
    repoint(link, bad)
    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
        first = await c.post("/v1/admin/reload")  # what the poller does: load, check, reject
        assert first.status_code == 422 and first.json()["error_type"] == "bundle_rejected"
        again = await c.post("/v1/admin/reload")  # not loaded again, but still refused
        assert again.status_code == 422 and again.json() == first.json()
        text = (await c.get("/metrics")).text
        assert 'turnwise_reloads_total{result="failed"} 1.0' in text  # the second one did not reload
        assert (await c.get("/readyz")).json()["model"]["version"] == "1"


async def test_expired_turns_are_in_the_stage_histograms(live):
    srv = live(latency_budget_ms=5, max_batch_wait_ms=100)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.post("/v1/dialogues/call-x/turns", json=TURN)
        assert r.status_code == 504
        text = (await c.get("/metrics")).text
    for stage in ("queue", "store", "tokenize"):  # the stages it went through before it expired
        assert f'turnwise_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text
    assert 'turnwise_stage_duration_seconds_count{stage="inference"} 0.0' in text  # never computed


async def test_a_frozen_redis_is_a_503_within_the_budget(live, redis_server):
    # Redis' own socket timeout is long; the request's budget (300 ms) is what bounds each store call.
    srv = live(redis_url=redis_server.url, redis_timeout_s=20, latency_budget_ms=300)
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        assert (await c.post("/v1/dialogues/call-r/turns", json=TURN)).status_code == 200
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            # Without the bound each of these would wait for Redis' 20 s timeout (the client gives up at 10 s).
            r = await c.post("/v1/dialogues/call-r/turns", json={**TURN, "seq": 1})
            assert r.status_code == 503 and r.json()["error_type"] == "store_unavailable"
            assert "within" in r.json()["error"] or "budget" in r.json()["error"]
            assert (await c.get("/v1/dialogues/call-r")).status_code == 503
            assert (await c.get("/readyz")).status_code == 503
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        assert (await c.post("/v1/dialogues/call-r/turns", json={**TURN, "seq": 1})).status_code == 200
