"""Run the service under uvicorn with a graceful SIGTERM drain.

On the first SIGTERM (or Ctrl-C):
1. readiness turns 503 and WebSocket streams stop reading, answer every frame already read, and close
   with 1012 (service restart) so clients reconnect elsewhere and retry idempotently;
2. uvicorn stops accepting connections and waits for in-flight HTTP requests to finish, until
   shortly before the shutdown deadline (``drain_s`` after the signal), then cancels what still runs;
3. the lifespan shutdown lets the batcher finish anything still queued and closes the store, each
   bounded by the same deadline.
The process then exits 0. A second signal stops at once. Should anything still hold the process
(a stuck inference or bundle-loading thread) :data:`HARD_EXIT_MARGIN_S` past the deadline, a
watchdog ends it with exit status 1.

``python -m service.serve`` runs with settings from ``TURNWISE_*`` only (what the tests use).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.app import begin_drain, create_app, time_left
from service.config import Settings
from service.logs import configure_logging

log = logging.getLogger("turnwise.service")
LIFESPAN_RESERVE_S = 2.0  # of drain_s, kept for the lifespan shutdown (batcher drain, store close)
HARD_EXIT_MARGIN_S = 3.0  # past the deadline, the watchdog ends a process something still holds


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains streams before the normal HTTP shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float, drain_s: float):
        super().__init__(config)
        self.app = app
        self.grace_s = min(grace_s, drain_s)
        self.drain_s = drain_s
        self.watchdog = False  # run() arms it: a process (not a test's thread) ends by the deadline
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
        if self.watchdog:
            timer = threading.Timer(self.drain_s + HARD_EXIT_MARGIN_S, _hard_exit, args=(self.drain_s,))
            timer.daemon = True
            timer.start()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        log.info("shutdown requested: draining (at most %.1f s)", self.drain_s)
        self.app.state.shutdown_deadline = asyncio.get_running_loop().time() + self.drain_s
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        settings = self.app.state.settings
        reserve = min(LIFESPAN_RESERVE_S, self.drain_s / 4)
        try:
            await begin_drain(self.app, min(self.grace_s, time_left(self.app, settings) - reserve))
        finally:
            # uvicorn's wait for in-flight requests ends where the lifespan's share of the deadline begins;
            # it cancels what still runs then.
            until = max(0.1, time_left(self.app, settings) - reserve)
            self.config.timeout_graceful_shutdown = until  # type: ignore[assignment]  # uvicorn types it int
            self.should_exit = True


def _hard_exit(drain_s: float) -> None:
    log.error("shutdown did not finish within %.1f s (+%.0f s): exiting now", drain_s, HARD_EXIT_MARGIN_S)
    logging.shutdown()
    os._exit(1)


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
        timeout_graceful_shutdown=int(max(1, min(settings.shutdown_grace_s, settings.drain_s))),
        timeout_keep_alive=int(max(1, settings.keep_alive_s)),
        # Frames up to a few times the limit get an error frame; far larger ones close the socket (1009).
        ws_max_size=max(4 * settings.max_frame_bytes, 1 << 20),
        lifespan="on",
        server_header=False,
    )
    return GracefulServer(config, app, settings.shutdown_grace_s, settings.drain_s)


def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format, log_text=settings.log_text)
    server = build_server(settings)
    server.watchdog = True
    server.run()
    if not server.started:
        raise SystemExit(3)  # the lifespan failed (e.g. the bundle did not load); the log says why


if __name__ == "__main__":
    run(Settings())
