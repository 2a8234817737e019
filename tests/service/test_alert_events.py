"""Alerts end to end: the call's own WebSocket, the supervisor stream WS /v1/events, the Redis stream
<prefix>events, signed webhooks with retries, call aggregates, and state that survives a replica hop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import redis
import websockets

from harness.ports import free_port

ALWAYS = "sentiment.negative >= 0.0"  # the tiny model's scores are random: a condition every turn meets


def write_rules(tmp_path: Path, *rules: dict) -> Path:
    import yaml

    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": list(rules)}))
    return path


def turn(dialogue_id: str, seq: int, text: str, speaker: str = "customer") -> str:
    return json.dumps({"type": "turn", "dialogue_id": dialogue_id, "seq": seq, "speaker": speaker, "text": text})


async def recv(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_alerts_reach_the_call_socket_the_supervisor_socket_and_the_redis_stream(live, store_kind, tmp_path):
    rules = write_rules(tmp_path,
                        {"name": "upset", "severity": "critical", "speaker": "customer", "when": ALWAYS, "for": 2},
                        {"name": "agent_note", "severity": "info", "speaker": "agent", "when": ALWAYS})
    srv = live(rules=rules, **store_kind)
    events_url = srv.url.replace("http", "ws") + "/v1/events"
    async with websockets.connect(events_url + "?severity=warning", proxy=None) as sup, \
            websockets.connect(events_url + "?types=alert,turn,ended&dialogue_id=call-a", proxy=None) as watch, \
            websockets.connect(srv.ws_url, proxy=None) as ws:
        await asyncio.sleep(0.3)  # the subscribers' reader follows the streams from now on
        await ws.send(turn("call-b", 0, "unrelated call", speaker="agent"))
        assert (await recv(ws))["type"] == "scores"
        assert (await recv(ws))["rule"] == "agent_note"  # an info alert of another call: neither subscriber's
        frames = []
        for seq, speaker in enumerate(["customer", "agent", "customer"]):
            await ws.send(turn("call-a", seq, f"utterance {seq}", speaker))
            frames.append(await recv(ws))
            if seq >= 1:
                frames.append(await recv(ws))  # this turn's alert follows its scores frame
        await ws.send(json.dumps({"type": "end", "dialogue_id": "call-a"}))
        assert (await recv(ws))["type"] == "ended"
        assert [(f["type"], f.get("seq"), f.get("rule")) for f in frames] == [
            ("scores", 0, None), ("scores", 1, None), ("alert", 1, "agent_note"),
            ("scores", 2, None), ("alert", 2, "upset")]  # for: 2 counts customer turns only
        alert = frames[-1]
        assert alert["severity"] == "critical" and alert["dialogue_id"] == "call-a"
        assert alert["labels"] == frames[-2]["labels"] and alert["scores"] == frames[-2]["scores"]
        assert (await recv(sup)) == alert  # severity >= warning: the critical one only
        seen = [await recv(watch) for _ in range(6)]
    assert [(e["type"], e.get("seq"), e.get("rule")) for e in seen] == [
        ("turn", 0, None), ("turn", 1, None), ("alert", 1, "agent_note"), ("turn", 2, None),
        ("alert", 2, "upset"), ("ended", None, None)]
    assert seen[3]["text"] == "utterance 2" and seen[3]["speaker"] == "customer"
    if store_kind["redis_url"]:
        entries = redis.Redis.from_url(store_kind["redis_url"]).xrange("tw:events")
        stored = [json.loads(fields[b"event"]) for _, fields in entries]
        assert [(e["type"], e.get("rule"), e["dialogue_id"]) for e in stored] == [
            ("alert", "agent_note", "call-b"), ("alert", "agent_note", "call-a"), ("alert", "upset", "call-a"),
            ("ended", None, "call-a")]


async def test_aggregates_and_the_live_call_list(live, store_kind, tmp_path):
    srv = live(rules=write_rules(tmp_path, {"name": "any", "severity": "warning", "when": ALWAYS,
                                            "cooldown": {"turns": 10}}), **store_kind)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        for dialogue_id, n in (("call-x", 3), ("call-y", 2)):
            for seq in range(n):
                r = await c.post(f"/v1/dialogues/{dialogue_id}/turns",
                                 json={"seq": seq, "speaker": "customer", "text": f"turn {seq}"})
                assert r.status_code == 200
        last = r.json()
        body = (await c.get("/v1/dialogues/call-x")).json()
        s = body["summary"]
        assert s["turns_scored"] == 3 and s["alerts_total"] == 1 and [a["seq"] for a in s["alerts"]] == [0]
        assert sum(s["label_counts"]["act"].values()) == 3
        assert [p["seq"] for p in s["sentiment_trend"]] == [0, 1, 2]
        assert [t["seq"] for t in s["turns"]] == [0, 1, 2]
        listed = (await c.get("/v1/dialogues")).json()["dialogues"]
        assert [d["dialogue_id"] for d in listed] == ["call-y", "call-x"]  # most recently scored first
        y = listed[0]
        assert y["turns_scored"] == 2 and y["alerts"] == 1 and y["max_severity"] == "warning"
        assert {t: v["label"] for t, v in y["latest"].items()} == last["labels"]
        assert (await c.delete("/v1/dialogues/call-y")).status_code == 204
        assert [d["dialogue_id"] for d in (await c.get("/v1/dialogues")).json()["dialogues"]] == ["call-x"]


async def test_a_replica_hop_neither_loses_nor_repeats_an_alert(live, redis_server, tmp_path):
    rules = write_rules(tmp_path, {"name": "twice", "severity": "warning", "speaker": "customer", "when": ALWAYS,
                                   "for": 2})
    a = live(rules=rules, redis_url=redis_server.url)
    b = live(rules=rules, redis_url=redis_server.url)

    async def post(srv, seq: int) -> None:
        async with httpx.AsyncClient(base_url=srv.url) as c:
            r = await c.post("/v1/dialogues/call-hop/turns",
                             json={"seq": seq, "speaker": "customer", "text": f"t{seq}"})
            assert r.status_code == 200

    await post(a, 0)  # the run starts on replica a ...
    await post(b, 1)  # ... and completes on replica b: one alert
    await post(b, 1)  # a retry of the same turn on b: no second alert
    await post(a, 1)  # nor on a
    stored = [json.loads(f[b"event"]) for _, f in redis.Redis.from_url(redis_server.url).xrange("tw:events")]
    assert [(e["rule"], e["seq"]) for e in stored] == [("twice", 1)]
    fired = [s.app.state.metrics.alerts_fired.labels(rule="twice", severity="warning")._value.get() for s in (a, b)]
    assert fired == [0, 1]


class Receiver(BaseHTTPRequestHandler):
    """Webhook receiver: answers 500 to the first two attempts, holds the first until released."""

    calls: ClassVar[list[tuple[bytes, dict[str, str]]]] = []
    release: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.calls.append((body, dict(self.headers)))
        if len(Receiver.calls) == 1:
            Receiver.release.wait(20)
        self.send_response(500 if len(Receiver.calls) <= 2 else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_webhooks_are_signed_retried_and_never_delay_the_turn(live, tmp_path):
    Receiver.calls, Receiver.release = [], threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        srv = live(rules=write_rules(tmp_path, {"name": "hook", "severity": "critical", "when": ALWAYS}),
                   webhook_urls=[f"http://127.0.0.1:{server.server_port}/hook"], webhook_secret="s3cret")
        async with httpx.AsyncClient(base_url=srv.url) as c:
            r = await c.post("/v1/dialogues/call-w/turns", json={"seq": 0, "speaker": "customer", "text": "hi"})
        assert r.status_code == 200  # answered while the receiver still holds the first delivery
        for _ in range(200):
            if Receiver.calls:
                break
            await asyncio.sleep(0.05)
        assert len(Receiver.calls) == 1
        Receiver.release.set()
        for _ in range(200):
            if len(Receiver.calls) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(Receiver.calls) == 3  # 500, 500, then 200: delivered on the third attempt
        for body, headers in Receiver.calls:
            expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert headers["X-Turnwise-Signature"] == expected
        assert len({h["X-Turnwise-Delivery"] for _, h in Receiver.calls}) == 1  # one delivery, three attempts
        event = json.loads(Receiver.calls[0][0])
        assert (event["type"], event["rule"], event["dialogue_id"], event["seq"]) == ("alert", "hook", "call-w", 0)
        m = srv.app.state.metrics.webhook_deliveries
        for _ in range(100):
            if m.labels(outcome="delivered")._value.get() == 1:
                break
            await asyncio.sleep(0.05)
        assert m.labels(outcome="delivered")._value.get() == 1 and m.labels(outcome="retried")._value.get() == 2
    finally:
        Receiver.release.set()
        server.shutdown()


def test_a_bad_rules_file_stops_the_start_naming_file_rule_and_field(tiny_bundle, tmp_path):
    rules = write_rules(tmp_path, {"name": "typo", "when": "sentimnt.negative >= 0.5"})
    env = {**os.environ, "TURNWISE_BUNDLE": str(tiny_bundle), "TURNWISE_RULES": str(rules),
           "TURNWISE_PORT": str(free_port()), "TURNWISE_LOG_FORMAT": "text"}
    proc = subprocess.run([sys.executable, "-m", "service.serve"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode != 0
    assert f"{rules}: rule 'typo', field 'when[0]': unknown task 'sentimnt'" in proc.stderr + proc.stdout


async def test_the_python_stream_client_keeps_alert_frames_apart_from_replies(live, tmp_path):
    from turnwise.client import AsyncClient

    srv = live(rules=write_rules(tmp_path, {"name": "every", "severity": "info", "when": ALWAYS}))
    seen = []
    async with AsyncClient(srv.url) as client, client.stream() as stream:
        stream.on_alert = seen.append
        call = stream.call("call-client")
        futures = [call.submit("customer", f"turn {i}") for i in range(4)]  # pipelined: replies by order
        replies = [await f for f in futures]
        await call.end()
    assert [r.seq for r in replies] == [0, 1, 2, 3]
    assert [(a.rule, a.seq) for a in stream.alerts] == [("every", i) for i in range(4)]
    assert seen == list(stream.alerts)


async def test_replay_prints_each_alert_after_its_turn(live, tmp_path, samples_dir):
    from cli.replay import replay
    from turnwise.dialogue import read_jsonl

    srv = live(rules=write_rules(tmp_path, {"name": "cust", "severity": "warning", "speaker": "customer",
                                            "when": ALWAYS}))
    call = read_jsonl(samples_dir / "dialogues.jsonl")[:1]
    lines: list[str] = []
    await replay(srv.url, call, ws=True, echo=lines.append)
    name = call[0].dialogue_id
    customer_seqs = [i for i, t in enumerate(call[0].turns) if t.speaker == "customer"]
    alert_lines = [i for i, line in enumerate(lines) if " ALERT " in line]
    assert [lines[i] for i in alert_lines] == [f"{name} #{s:<3} ALERT warning: cust" for s in customer_seqs]
    for i, seq in zip(alert_lines, customer_seqs, strict=True):  # never before its turn's own line
        turn_line = next(j for j, line in enumerate(lines) if line.startswith(f"{name} #{seq:<3} customer"))
        assert turn_line < i
