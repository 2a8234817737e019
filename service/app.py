"""``create_app()``: the FastAPI app; store, engine, batcher and pipeline are built in the lifespan.

Lifespan start: load and check the bundle (a bad bundle stops the start), open the store, start the
batcher and the bundle watcher. Shutdown (after uvicorn stopped accepting and finished in-flight HTTP
requests): drain WebSocket streams, let the batcher finish what is queued, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.engine import Engine
from service.errors import ErrorKind, ServiceError, count_failure, install_handlers
from service.logs import RequestContext
from service.metrics import Metrics, endpoint_of
from service.openapi import install_openapi
from service.pipeline import Pipeline
from service.routes import admin, dialogues, docs, feedback, health, score, stream
from service.store import open_store
from service.tracing import ServerSpans, setup_tracing

log = logging.getLogger("turnwise.service")
SERVICE_VERSION = "0.1.0"


class BodyLimit:
    """413 for HTTP bodies above ``max_bytes``: by Content-Length up front, or counted while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        too_large = ServiceError(ErrorKind.too_large, f"request body above {limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._reject(scope, send, too_large)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    async def _reject(scope: Scope, send: Send, err: ServiceError) -> None:
        app = scope.get("app")
        count_failure(getattr(getattr(app, "state", None), "metrics", None), err.kind, endpoint_of(scope["path"]))
        await JSONResponse(err.body(), status_code=err.status)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def begin_drain(app: FastAPI, timeout_s: float) -> None:
    """First step of a graceful stop: readiness fails, WebSocket streams answer what they read and close."""
    app.state.draining = True
    conns = list(app.state.connections)
    for conn in conns:
        await conn.drain()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while app.state.connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    tracing = setup_tracing(settings, version=SERVICE_VERSION)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_enabled:
            log.warning(
                "authentication is OFF: TURNWISE_API_KEYS is empty, so anyone who can reach this port can use the API"
            )
        try:
            engine = Engine(settings, metrics)
            await engine.start()
        except Exception as err:
            log.error("cannot serve bundle %s: %s", settings.bundle, err)
            raise
        store = open_store(settings)
        app.state.engine, app.state.store = engine, store
        app.state.pipeline = Pipeline(settings, store, engine, metrics, tracing)
        watcher: asyncio.Task[Any] | None = None
        if settings.reload_poll_s > 0:
            watcher = asyncio.create_task(engine.watch(settings.reload_poll_s), name="turnwise-bundle-watch")
        log.info(
            "turnwise ready: store=%s, max_batch_size=%d, max_queue=%d, latency_budget_ms=%.0f",
            store.kind,
            settings.max_batch_size,
            settings.max_queue,
            settings.latency_budget_ms,
        )
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await begin_drain(app, settings.shutdown_grace_s)
            await engine.stop()
            await store.close()
            tracing.shutdown()
            log.info("turnwise stopped")

    app = FastAPI(
        title="turnwise",
        version=SERVICE_VERSION,
        lifespan=lifespan,
        description="Real-time scoring of live calls: every utterance gets intent, act, sentiment.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = False
    app.state.connections = set()
    app.state.tracing = tracing
    install_handlers(app)
    # Outermost last: the request id is bound before the server span opens and before a body is refused.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if tracing.enabled:
        app.add_middleware(ServerSpans, tracing=tracing)
    app.add_middleware(RequestContext)
    for module in (dialogues, score, stream, feedback, health, admin, docs):
        app.include_router(module.router)
    install_openapi(app)
    return app
