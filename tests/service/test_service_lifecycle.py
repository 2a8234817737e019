"""Hot reload under traffic, graceful SIGTERM drain (a real `python -m service.serve` process),
settings, start-up refusals and the replay client."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from svc_helpers import LiveServer, bundle_version, free_port, repoint
from websockets.exceptions import ConnectionClosed

from cli.replay import run_replay
from service.config import Settings
from service.errors import ServiceError
from turnwise.dialogue import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _corrupt(bundle: Path) -> Path:
    with (bundle / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    return bundle


async def wait_until(predicate, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _metric(c: httpx.AsyncClient, line_start: str) -> float:
    for line in (await c.get("/metrics")).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_hot_reload_under_traffic(live, tiny_bundle: Path, tmp_path: Path):
    v1 = bundle_version(tiny_bundle, tmp_path / "v1", "1")
    v2 = bundle_version(tiny_bundle, tmp_path / "v2", "2")
    v3 = _corrupt(bundle_version(tiny_bundle, tmp_path / "v3", "3"))
    link = tmp_path / "current"
    link.symlink_to(v1, target_is_directory=True)
    srv = live(bundle=link, reload_poll_s=0.1)
    stop = asyncio.Event()
    seen: list[tuple[int, str]] = []  # (status, model version) of every request

    async def call(c: httpx.AsyncClient, k: int) -> None:
        seq = 0
        while not stop.is_set():
            r = await c.post(
                f"/v1/dialogues/call-hr{k}/turns", json={"seq": seq, "speaker": "customer", "text": f"turn {seq}"}
            )
            seen.append((r.status_code, r.json().get("model", {}).get("version", r.text)))
            seq += 1

    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        callers = [asyncio.create_task(call(c, k)) for k in range(4)]

        await wait_until(lambda: len(seen) > 20, "no traffic")
        repoint(link, v2)
        await wait_until(lambda: any(v == "2" for _, v in seen), "v2 never served")
        before = len(seen)
        repoint(link, v3)  # fails its checksum: must be refused, v2 keeps serving
        await wait_until(lambda: _metric(c, 'turnwise_reloads_total{result="failed"}'), "bad bundle not rejected")
        await wait_until(lambda: len(seen) > before + 20, "traffic stopped")
        forced = await c.post("/v1/admin/reload", params={"force": "true"})
        assert forced.status_code == 422 and forced.json()["error_type"] == "bundle_rejected"
        assert "still serving tiny 2" in forced.json()["error"]
        repoint(link, v1)  # back to v1: the poller or this call loads it, exactly once
        ok = await c.post("/v1/admin/reload")
        assert ok.status_code == 200 and ok.json()["model"]["version"] == "1"
        stop.set()
        await asyncio.gather(*callers)
        assert await _metric(c, 'turnwise_reloads_total{result="ok"}') == 2
        assert await _metric(c, 'turnwise_reloads_total{result="failed"}') == 2
    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v in seen]
    first_v2 = versions.index("2")
    assert set(versions[:first_v2]) == {"1"}
    assert "3" not in versions


def test_bad_bundle_refuses_to_start(make_settings, tiny_bundle: Path, tmp_path: Path):
    bad = _corrupt(bundle_version(tiny_bundle, tmp_path / "bad", "9"))
    with pytest.raises(RuntimeError, match="failed to start"):
        LiveServer(make_settings(bundle=bad)).start()
    with pytest.raises(RuntimeError, match="failed to start"):
        LiveServer(make_settings(bundle=tmp_path / "nowhere")).start()


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("TURNWISE_API_KEYS", " key-a, key-b ,")
    monkeypatch.setenv("TURNWISE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("TURNWISE_BUNDLE", "/tmp/some-bundle")
    monkeypatch.delenv("TURNWISE_REDIS_URL", raising=False)
    s = Settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["key-a", "key-b"] and s.auth_enabled
    assert "key-a" not in repr(s)  # secrets stay out of logs
    assert s.max_batch_size == 16 and s.bundle == Path("/tmp/some-bundle") and s.redis_url is None
    assert s.log_text is False
    assert all(f.description for f in Settings.model_fields.values())  # every setting is documented


def test_engine_without_bundle_is_a_clear_error():
    from service.engine import Engine

    with pytest.raises(ServiceError, match="TURNWISE_BUNDLE"):
        Engine(Settings(bundle=None))


def test_replay_over_ws_and_rest(live, samples_dir: Path, capsys):
    srv = live(api_keys="k1")
    data = samples_dir / "dialogues.jsonl"
    n_turns = sum(len(d.turns) for d in read_jsonl(data)[:2])
    for ws in (True, False):
        summary = run_replay(srv.url, data, ws=ws, rate=0, max_dialogues=2, api_key="k1")
        assert summary["errors"] == 0 and summary["turns"] == n_turns == summary["scored"]
        assert summary["transport"] == ("ws" if ws else "rest") and summary["latency_ms"]["p50"] > 0
        assert set(summary["gold_agreement"]) == {"intent", "act", "sentiment"}
        out = capsys.readouterr().out
        assert out.count("intent=") == n_turns and "latency p50" in out
        # every label is printed with the model's probability for it
        assert len(re.findall(r"act=\w+\((?:0\.\d\d|1\.00)\)", out)) == n_turns
    # a replayed call was ended: nothing is left behind
    assert httpx.get(f"{srv.url}/v1/dialogues/call-0001", headers={"Authorization": "Bearer k1"}).status_code == 404


def test_replay_command_fails_when_turns_fail(live, samples_dir: Path):
    """`turnwise replay` exits 1 when turns come back as errors (here: a wrong API key), so scripts notice."""
    from typer.testing import CliRunner

    from cli.main import app

    srv = live(api_keys="k1")
    args = ["replay", "--url", srv.url, "--data", str(samples_dir / "dialogues.jsonl"), "--max-dialogues", "1"]
    ok = CliRunner().invoke(app, [*args, "--api-key", "k1"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [*args, "--rest", "--api-key", "wrong"])
    assert bad.exit_code == 1 and "ERROR unauthenticated" in bad.output


def test_sigterm_drains_in_flight_requests(tiny_bundle: Path, tmp_path: Path):
    """A real server process: requests and stream frames accepted before SIGTERM are all answered."""
    port = free_port()
    env = {
        **os.environ,
        "TURNWISE_BUNDLE": str(tiny_bundle),
        "TURNWISE_HOST": "127.0.0.1",
        "TURNWISE_PORT": str(port),
        "TURNWISE_MAX_BATCH_WAIT_MS": "500",
        "TURNWISE_MAX_BATCH_SIZE": "64",
        "TURNWISE_RELOAD_POLL_S": "0",
        "TURNWISE_LOG_LEVEL": "info",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("TURNWISE_REDIS_URL", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.serve"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)

        async def scenario() -> tuple[list[httpx.Response], list[dict], int | None]:
            async with (
                httpx.AsyncClient(base_url=url, timeout=30) as c,
                websockets.connect(f"ws://127.0.0.1:{port}/v1/stream", proxy=None) as ws,
            ):
                rest = [
                    asyncio.create_task(
                        c.post(f"/v1/dialogues/call-g{i}/turns", json={"seq": 0, "speaker": "agent", "text": "hello"})
                    )
                    for i in range(20)
                ]
                for seq in range(5):
                    await ws.send(
                        f'{{"type":"turn","dialogue_id":"call-gw","seq":{seq},"speaker":"customer",'
                        f'"text":"turn {seq}"}}'
                    )
                await asyncio.sleep(0.2)  # everything has arrived; the batcher still waits for more
                proc.send_signal(signal.SIGTERM)
                frames = []
                code = None
                try:
                    while True:
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
                return await asyncio.gather(*rest), frames, code

        responses, frames, close_code = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * 20
        assert [(f["type"], f["seq"]) for f in frames] == [("scores", s) for s in range(5)]
        assert close_code == 1012
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=1)
        text = (tmp_path / "server.log").read_text()
        assert "draining" in text and "turnwise stopped" in text
        assert "hello" not in text and "turn 3" not in text  # utterance text is never logged by default
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
