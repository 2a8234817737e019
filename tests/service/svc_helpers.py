"""Helpers for the service tests: a live server in a thread, bundle versions, symlink swaps."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from harness.ports import free_port
from service.config import Settings
from service.serve import GracefulServer, build_server

__all__ = ["LiveServer", "bundle_version", "free_port", "repoint"]


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
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="live-uvicorn", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except SystemExit as stop:  # uvicorn exits 3 when the lifespan fails (e.g. a bad bundle)
            self.exit_code = int(stop.code or 0)

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
