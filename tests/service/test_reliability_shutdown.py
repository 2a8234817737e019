"""Shutdown has a hard bound: a real ``python -m service.serve`` process with idle, streaming,
half-open and stuck connections exits 0 within ``TURNWISE_DRAIN_S`` of SIGTERM (not by the watchdog),
and its debug log never holds frame text while ``TURNWISE_LOG_TEXT`` is off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import websockets
from svc_helpers import free_port
from websockets.exceptions import ConnectionClosed

from service.serve import HARD_EXIT_MARGIN_S

REPO = Path(__file__).resolve().parents[2]
DRAIN_S = 4.0
MARKER = "zebra-quartz-utterance"  # utterance text that must never reach the log


@contextlib.contextmanager
def server_process(tiny_bundle: Path, tmp_path: Path, **env_extra: str) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    env = {
        **os.environ,
        "TURNWISE_BUNDLE": str(tiny_bundle),
        "TURNWISE_HOST": "127.0.0.1",
        "TURNWISE_PORT": str(port),
        "TURNWISE_RELOAD_POLL_S": "0.2",  # the bundle watcher runs too
        "TURNWISE_DRAIN_S": str(DRAIN_S),
        "TURNWISE_SHUTDOWN_GRACE_S": "30",  # longer than the drain: the drain bound wins
        "TURNWISE_LOG_LEVEL": "debug",
        "TURNWISE_LOG_FORMAT": "text",
        "TOKENIZERS_PARALLELISM": "false",
        **env_extra,
    }
    env.pop("TURNWISE_REDIS_URL", None)
    env.pop("TURNWISE_LOG_TEXT", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "service.serve"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def raw_socket(port: int, payload: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if payload:
        s.sendall(payload)
    return s


def ws_handshake(port: int) -> socket.socket:
    """A WebSocket opened by hand that then never reads again (it will not answer the server's close)."""
    s = raw_socket(port, b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 101")
    return s


def test_sigterm_exits_within_the_drain_bound_whatever_the_connections_do(tiny_bundle: Path, tmp_path: Path):
    with server_process(tiny_bundle, tmp_path) as (proc, port):
        url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream"
        held = [
            ws_handshake(port),  # half-open WebSocket: never answers a close
            raw_socket(port, b""),  # a TCP connection that never sends a request
            raw_socket(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),  # headers never finished
            # a body that never arrives: the handler waits for it
            raw_socket(port, b"POST /v1/dialogues/call-b/turns HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"seq\": 0,"),
        ]

        async def scenario() -> tuple[float, list[dict], int | None]:
            async with (
                httpx.AsyncClient(base_url=url, timeout=30) as c,
                websockets.connect(ws_url, proxy=None) as idle,
                websockets.connect(ws_url, proxy=None) as streaming,
            ):
                assert (await c.get("/healthz")).status_code == 200  # an idle keep-alive connection
                replies: list[dict] = []

                async def talk() -> int | None:
                    seq = 0
                    try:
                        while True:
                            await streaming.send(json.dumps({"type": "turn", "dialogue_id": "call-s", "seq": seq,
                                                             "speaker": "customer", "text": f"{MARKER} {seq}"}))
                            replies.append(json.loads(await streaming.recv()))
                            seq += 1
                    except ConnectionClosed as closed:
                        return closed.rcvd.code if closed.rcvd else None

                talker = asyncio.create_task(talk())
                while len(replies) < 3:
                    await asyncio.sleep(0.05)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(talker, DRAIN_S + 10)
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await asyncio.wait_for(idle.recv(), DRAIN_S + 10)
                return sent, replies, code

        sent, replies, close_code = asyncio.run(scenario())
        rc = proc.wait(timeout=DRAIN_S + HARD_EXIT_MARGIN_S + 10)
        took = time.monotonic() - sent
        for s in held:
            s.close()
        text = (tmp_path / "server.log").read_text()
        assert rc == 0, f"exit status {rc} after {took:.1f} s (1: the watchdog had to end it)\n{text[-3000:]}"
        assert took < DRAIN_S + 1.5, f"exited {took:.1f} s after SIGTERM; the bound is {DRAIN_S} s"
        assert close_code == 1012
        assert all(r["type"] == "scores" for r in replies)
        assert "turnwise stopped" in text
        # debug logging is on, LOG_TEXT is off: no frame (and so no utterance text) is in the log
        assert "DEBUG" in text and MARKER not in text


def test_websocket_library_debug_lines_are_dropped_unless_log_text(capsys):
    """What the live test above relies on, record by record: the protocol library's frame dumps (which
    it sends to uvicorn's logger) are dropped, everything else passes."""
    import logging

    from service.logs import configure_logging

    library = str(Path(websockets.__file__).parent / "legacy" / "protocol.py")

    def emit(pathname: str, level: int, msg: str) -> None:
        record = logging.getLogger("uvicorn.error").makeRecord("uvicorn.error", level, pathname, 1, msg, (), None)
        logging.getLogger("uvicorn.error").handle(record)

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for log_text in (False, True):
            configure_logging("debug", "text", log_text=log_text)
            emit(library, logging.DEBUG, f"< TEXT '{MARKER}-{log_text}' [30 bytes]")
            emit(library, logging.INFO, f"connection closed {log_text}")
            emit(__file__, logging.DEBUG, f"our own debug line {log_text}")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert f"{MARKER}-False" not in err and f"{MARKER}-True" in err
    assert "connection closed False" in err and "our own debug line False" in err
