"""WS /v1/stream end to end: ordered replies, error frames that keep the socket open, auth at the handshake."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus


def turn(dialogue_id: str, seq: int, text: str, speaker: str = "customer") -> str:
    return json.dumps({"type": "turn", "dialogue_id": dialogue_id, "seq": seq, "speaker": speaker, "text": text})


async def recv(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_stream_scores_turns_in_order_and_ends_the_call(live, store_kind):
    srv = live(**store_kind)
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        for seq in range(3):
            await ws.send(turn("call-ws", seq, f"utterance {seq}"))
            reply = await recv(ws)
            assert reply["type"] == "scores" and reply["seq"] == seq and reply["window_turns"] == seq + 1
            assert set(reply["labels"]) == {"intent", "act", "sentiment"}
        await ws.send(json.dumps({"type": "end", "dialogue_id": "call-ws"}))
        assert await recv(ws) == {"type": "ended", "dialogue_id": "call-ws"}
    async with httpx.AsyncClient(base_url=srv.url) as c:
        assert (await c.get("/v1/dialogues/call-ws")).status_code == 404


async def test_pipelined_frames_are_answered_in_order_and_stored_in_order(live, store_kind):
    srv = live(**store_kind)
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        for seq in range(24):  # two dialogues interleaved, nothing awaited in between
            await ws.send(turn(f"call-p{seq % 2}", seq // 2, f"utterance {seq}"))
        replies = [await recv(ws) for _ in range(24)]
    assert [(r["type"], r["dialogue_id"], r["seq"]) for r in replies] == [
        ("scores", f"call-p{i % 2}", i // 2) for i in range(24)
    ]
    for r in replies:
        assert r["window_turns"] == min(r["seq"] + 1, 8)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        window = (await c.get("/v1/dialogues/call-p1")).json()["window"]
    assert [t["seq"] for t in window] == list(range(4, 12))


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(live):
    srv = live(max_frame_bytes=2048, max_text_chars=100)
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        await ws.send("not json")
        e = await recv(ws)
        assert e["type"] == "error" and e["code"] == "invalid" and e["seq"] is None
        await ws.send(json.dumps({"type": "turn", "dialogue_id": "bad id", "seq": 4, "speaker": "a", "text": "x"}))
        e = await recv(ws)
        assert e["code"] == "invalid" and e["seq"] == 4 and "dialogue_id" in e["message"]
        await ws.send(json.dumps({"type": "dance"}))
        assert (await recv(ws))["code"] == "invalid"
        await ws.send(turn("call-e", 0, "x" * 3000))
        e = await recv(ws)
        assert e["code"] == "too_large" and e["seq"] == 0
        await ws.send(turn("call-e", 0, "y" * 101))
        assert (await recv(ws))["code"] == "too_large"
        await ws.send(turn("call-e", 0, "hello"))
        assert (await recv(ws))["type"] == "scores"
        await ws.send(turn("call-e", 0, "other text"))
        e = await recv(ws)
        assert e == {"type": "error", "code": "conflict", "seq": 0, "dialogue_id": "call-e", "message": e["message"]}
        await ws.send(
            json.dumps({"type": "turn", "dialogue_id": "call-e", "seq": 1, "speaker": "agent", "text": "ok"}).encode()
        )  # binary frames are read as JSON too
        assert (await recv(ws))["seq"] == 1


async def test_handshake_auth(live):
    srv = live(api_keys="sekrit")
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(srv.ws_url, proxy=None):
            pass
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body)["error_type"] == "unauthenticated"
    with pytest.raises(InvalidStatus):
        async with websockets.connect(srv.ws_url, proxy=None, additional_headers={"Authorization": "Bearer x"}):
            pass
    async with websockets.connect(srv.ws_url, proxy=None, additional_headers={"Authorization": "Bearer sekrit"}) as ws:
        await ws.send(turn("call-h", 0, "hi"))
        assert (await recv(ws))["type"] == "scores"
    # browsers cannot set headers: the key rides in a subprotocol
    async with websockets.connect(srv.ws_url, proxy=None, subprotocols=["turnwise", "bearer.sekrit"]) as ws:
        assert ws.subprotocol == "turnwise"
        await ws.send(turn("call-h", 1, "there"))
        assert (await recv(ws))["seq"] == 1
