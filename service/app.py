"""``create_app()``: the FastAPI app; store, engine, batcher and pipeline are built in the lifespan.

Lifespan start: load and check the bundle (a bad bundle stops the start), open the store, start the
batcher and the bundle watcher. Shutdown (after uvicorn stopped accepting and finished in-flight HTTP
requests): drain WebSocket streams, let the batcher finish what is queued, close the store -- all by
the shutdown deadline (``app.state.shutdown_deadline``, set when SIGTERM arrives; else now +
``drain_s``), after which whatever still runs is cancelled.

HTTP middleware, outermost first: request id, (tracing,) :class:`ApiKeyGate` (401 before any body is
read), :class:`BodyLimit` (413 before the app parses anything).
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

from service.alerts.monitor import CallMonitor
from service.alerts.rules import RuleError, load_rules
from service.config import Settings
from service.deps import bearer_token, key_is_valid
from service.engine import Engine
from service.errors import ErrorKind, ServiceError, count_failure, install_handlers
from service.logs import RequestContext
from service.metrics import Metrics, endpoint_of
from service.openapi import install_openapi
from service.pipeline import Pipeline
from service.routes import admin, dialogues, docs, events, feedback, health, monitor, score, stream
from service.store import open_store
from service.tracing import ServerSpans, setup_tracing

log = logging.getLogger("turnwise.service")
SERVICE_VERSION = "0.1.0"


class ApiKeyGate:
    """401 for /v1 HTTP requests without a valid key, before the body is read or parsed (the routes'
    own dependency checks the same key again and documents the scheme in OpenAPI)."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and self.settings.auth_enabled:
            header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
            token = bearer_token(header.decode("latin-1") if header is not None else None)
            if not key_is_valid(self.settings, token):
                await BodyLimit.reject(scope, send, ServiceError(
                    ErrorKind.unauthenticated, "missing or invalid API key (Authorization: Bearer <key>)"))
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for HTTP bodies above ``max_bytes``: by Content-Length up front, or counted while reading a
    chunked body, which is read whole (it is at most ``max_bytes``) before the app sees any of it."""

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
                await self.reject(scope, send, too_large)
                return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was complete: nothing to answer
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await self.reject(scope, send, too_large)
                return
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def buffered_receive() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, buffered_receive, send)

    @staticmethod
    async def reject(scope: Scope, send: Send, err: ServiceError) -> None:
        app = scope.get("app")
        count_failure(getattr(getattr(app, "state", None), "metrics", None), err.kind, endpoint_of(scope["path"]))
        await JSONResponse(err.body(), status_code=err.status, headers=err.headers())(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def begin_drain(app: FastAPI, timeout_s: float) -> None:
    """First step of a graceful stop: readiness fails, WebSocket streams answer what they read and close
    (a stream accepted while this runs is drained too); returns within ``timeout_s``."""
    app.state.draining = True
    drained: set[Any] = set()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        for conn in set(app.state.connections) - drained:
            drained.add(conn)
            await conn.drain()
        if not app.state.connections or asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.02)


def time_left(app: FastAPI, settings: Settings) -> float:
    """Seconds to the shutdown deadline (set on SIGTERM; the first call without one starts it now)."""
    loop = asyncio.get_running_loop()
    if getattr(app.state, "shutdown_deadline", None) is None:
        app.state.shutdown_deadline = loop.time() + settings.drain_s
    return max(0.0, app.state.shutdown_deadline - loop.time())


async def _bounded(what: str, step: Any, timeout_s: float) -> None:
    """Await one shutdown step for at most ``timeout_s``; past it the step is cancelled and logged."""
    try:
        await asyncio.wait_for(step, max(timeout_s, 0.01))
    except TimeoutError:
        log.error("shutdown: %s did not finish by the deadline; cancelled", what)


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
            rules = load_rules(settings.rules)
        except RuleError as err:  # names the file, the rule and the field
            log.error("cannot use the alert rules: %s", err)
            raise
        try:
            engine = Engine(settings, metrics)
            await engine.start()
        except Exception as err:
            log.error("cannot serve bundle %s: %s", settings.bundle, err)
            raise
        try:
            rules.check_tasks(engine.current.schema)
        except RuleError as err:
            log.error("cannot use the alert rules: %s", err)
            raise
        store = open_store(settings)
        monitor = CallMonitor(settings, rules, store, metrics)
        monitor.start()
        app.state.engine, app.state.store = engine, store
        app.state.pipeline = Pipeline(settings, store, engine, metrics, tracing, monitor)
        watcher: asyncio.Task[Any] | None = None
        if settings.reload_poll_s > 0:
            watcher = asyncio.create_task(engine.watch(settings.reload_poll_s), name="turnwise-bundle-watch")
        log.info(
            "turnwise ready: store=%s, alert rules=%d, max_batch_size=%d, max_queue=%d, latency_budget_ms=%.0f",
            store.kind,
            len(rules),
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
            await begin_drain(app, min(settings.shutdown_grace_s, time_left(app, settings)))
            await _bounded("the alert webhooks", monitor.stop(), min(2.0, time_left(app, settings)))
            await _bounded("the batcher drain", engine.stop(), time_left(app, settings))
            engine.close(wait=False)  # after a cancelled drain the inference thread is not waited for
            await _bounded("closing the store", store.close(), time_left(app, settings))
            tracing.shutdown()
            log.info("turnwise stopped")

    app = FastAPI(
        title="turnwise",
        version=SERVICE_VERSION,
        lifespan=lifespan,
        description="Real-time scoring of live calls: every utterance gets intent, act, sentiment.",
        docs_url=None,  # /docs and /redoc are served offline by service.routes.docs (FastAPI's load a CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = False
    app.state.connections = set()
    app.state.tracing = tracing
    install_handlers(app)
    # Outermost last: the request id is bound before the server span opens and before a body is refused.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyGate, settings=settings)
    if tracing.enabled:
        app.add_middleware(ServerSpans, tracing=tracing)
    app.add_middleware(RequestContext)
    for module in (dialogues, score, stream, events, feedback, health, admin, docs, monitor):
        app.include_router(module.router)
    install_openapi(app)
    return app
