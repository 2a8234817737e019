"""A live turnwise service for tests: the real app under uvicorn (``build_server``, what ``turnwise serve``
runs) in a background thread on a free loopback port; clients talk to it over real sockets."""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.ports import free_port
from service.config import Settings
from service.serve import GracefulServer, build_server


class LiveServer:
    """The real app under uvicorn in a background thread."""

    def __init__(self, settings: Settings, port: int | None = None):
        self.settings = settings.model_copy(update={"host": "127.0.0.1", "port": port or free_port()})
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
