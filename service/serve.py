"""Run the service under uvicorn with a graceful SIGTERM drain.

On the first SIGTERM (or Ctrl-C):
1. readiness turns 503 and WebSocket streams stop reading, answer every frame already read, and close
   with 1012 (service restart) so clients reconnect elsewhere and retry idempotently;
2. uvicorn stops accepting connections and waits (up to ``shutdown_grace_s``) for in-flight HTTP
   requests to finish;
3. the lifespan shutdown lets the batcher finish anything still queued and closes the store.
The process then exits 0. A second signal stops at once.

``python -m service.serve`` runs with settings from ``TURNWISE_*`` only (what the tests use).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.app import begin_drain, create_app
from service.config import Settings
from service.logs import configure_logging

log = logging.getLogger("turnwise.service")


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains streams before the normal HTTP shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float):
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self._drain_started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started or self._loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._drain_started = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        log.info("shutdown requested: draining")
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await begin_drain(self.app, self.grace_s)
        finally:
            self.should_exit = True


def build_server(settings: Settings) -> GracefulServer:
    # One tokenizer call per request is tiny; Rust-side thread pools would only fight the model for cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # uvicorn's loggers propagate to the root handler configure_logging installs (JSON or text).
        log_config=None,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_grace_s)),
        timeout_keep_alive=int(max(1, settings.keep_alive_s)),
        # Frames up to a few times the limit get an error frame; far larger ones close the socket (1009).
        ws_max_size=max(4 * settings.max_frame_bytes, 1 << 20),
        lifespan="on",
        server_header=False,
    )
    return GracefulServer(config, app, settings.shutdown_grace_s)


def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    server = build_server(settings)
    server.run()
    if not server.started:
        raise SystemExit(3)  # the lifespan failed (e.g. the bundle did not load); the log says why


if __name__ == "__main__":
    run(Settings())
