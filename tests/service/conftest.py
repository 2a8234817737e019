"""Service fixtures: a real bundle exported once from the tiny checkpoint, and live servers.

``live`` starts the real app under uvicorn (the same ``build_server`` ``turnwise serve`` uses) on a
free loopback port in a background thread; tests talk to it with httpx and websockets like any
client. ``store_kind`` parametrizes a test over the embedded store and a real redis-server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.serve import GracefulServer, build_server

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (fp32 ONNX, parity-checked) exported once from the tiny checkpoint: read-only."""
    from export.cli import run_export

    out = tmp_path_factory.mktemp("bundles") / "tiny-v1"
    return run_export(tiny_checkpoint_session, out, ["fp32"], name="tiny", version="1")


def bundle_version(src: Path, dst: Path, version: str) -> Path:
    """A copy of ``src`` announcing another version (bundle.json is not in its own checksums)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "bundle.json").read_text())
    manifest["version"] = version
    (dst / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return dst


def repoint(link: Path, target: Path) -> None:
    """Atomically re-point a symlink (what a deploy does: ln -sfn new tmp && mv -T tmp link)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


class LiveServer:
    """The real app under uvicorn in a background thread."""

    def __init__(self, settings: Settings):
        self.settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
        self.server: GracefulServer = build_server(self.settings)
        self.app = self.server.app
        self.thread = threading.Thread(target=self.server.run, name="live-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/v1/stream"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server failed to start")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def state(self) -> Any:
        return self.app.state


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides selecting the store; the redis side starts a real redis-server."""
    if request.param == "memory":
        return {"redis_url": None}
    server = request.getfixturevalue("redis_server")
    return {"redis_url": server.url, "key_prefix": "tw:"}


@pytest.fixture
def make_settings(tiny_bundle: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"bundle": tiny_bundle, "reload_poll_s": 0, "api_keys": [], "log_level": "warning",
                                "shutdown_grace_s": 5}
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def live(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    """``live(**settings)`` -> a started server, stopped at teardown."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
