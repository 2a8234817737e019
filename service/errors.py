"""The service's one closed set of error kinds and the one place that maps a kind to an HTTP status.

The kinds and their statuses are the core's (:mod:`turnwise.api`), shared with the client.
Every failure the service answers is a :class:`ServiceError` carrying an :class:`ErrorKind`; REST
turns it into ``{"error": message, "error_type": kind}`` with :data:`STATUS`, the WebSocket into
``{"type": "error", "code": kind, "message", "seq"}``. Both paths call :func:`count_failure`, so
``turnwise_requests_total{endpoint, outcome=<kind>}`` counts each failure once (successes are counted
where they are answered, with outcome ``scored``, ``duplicate`` or ``ok``).

The window store raises its own :class:`~service.store.errors.StoreError`; :data:`STORE_KINDS` and
:func:`as_service_error` turn it into a :class:`ServiceError` (conflict -> 409, unavailable -> 503),
for the REST handlers and the WebSocket connection alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.metrics import endpoint_of
from service.store.errors import StoreError, StoreErrorKind
from turnwise.api import RETRYABLE, STATUS, ErrorKind
from turnwise.jsonl import validation_message

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("turnwise.service")
MAX_MESSAGE_CHARS = 1000  # an error message that echoes client input is cut to about this


def clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut in the middle to about ``limit`` characters (its start and its end, which usually
    says what was expected, are kept): an echoed 200,000-character label is not sent back whole."""
    if len(message) <= limit:
        return message
    head, tail = limit * 2 // 3, limit // 3
    return f"{message[:head]} ... [{len(message) - head - tail} characters cut] ... {message[-tail:]}"


class ServiceError(Exception):
    """A failure with a kind; ``retry_after`` (seconds) is sent as Retry-After when set (whole seconds,
    rounded up, on REST; as it is in a WebSocket error frame's ``retry_after_s``)."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: float | None = None):
        message = clip(message)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.kind]

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.kind.value}

    def headers(self) -> dict[str, str] | None:
        if self.retry_after is not None:
            return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
        if self.kind is ErrorKind.unauthenticated:
            return {"WWW-Authenticate": "Bearer"}
        return None


# Kinds answered with a 5xx: the server's fault, what the availability SLO counts against its budget.
SERVER_ERROR_KINDS = frozenset(k for k, status in STATUS.items() if status >= 500)


def count_failure(metrics: Metrics | None, kind: ErrorKind, endpoint: str | None) -> None:
    """Count one failed request (``endpoint`` None: a probe, not counted) and log server-side ones."""
    if kind in SERVER_ERROR_KINDS and endpoint is not None:
        log.warning("request failed: %s", kind.value, extra={"error_kind": kind.value, "endpoint": endpoint})
    if metrics is None:
        return
    metrics.count(endpoint, kind.value)
    if kind is ErrorKind.store_unavailable:
        metrics.store_up.set(0)


# What the window store's failures are to a client.
STORE_KINDS: dict[StoreErrorKind, ErrorKind] = {
    StoreErrorKind.conflict: ErrorKind.conflict,
    StoreErrorKind.unavailable: ErrorKind.store_unavailable,
}

# Parts of a FastAPI error location that mean nothing to the client.
REQUEST_LOCATIONS = ("body", "path", "query")


def as_service_error(err: ServiceError | StoreError) -> ServiceError:
    """A store failure as the service answers it (same message, clipped); a ServiceError as it is."""
    if isinstance(err, StoreError):
        return ServiceError(STORE_KINDS[err.kind], err.message)
    return err


def invalid_input(errors: Iterable[Mapping[str, Any]]) -> ServiceError:
    """Pydantic errors of a request or a frame -> ``invalid`` naming each bad field (never the input value)."""
    return ServiceError(ErrorKind.invalid, validation_message(errors, skip=REQUEST_LOCATIONS))


def _metrics_of(request: Request) -> Metrics | None:
    return getattr(request.app.state, "metrics", None)


def error_response(err: ServiceError, request: Request | None = None) -> JSONResponse:
    headers = err.headers()
    if request is not None:
        count_failure(_metrics_of(request), err.kind, endpoint_of(request.url.path))
        settings = getattr(request.app.state, "settings", None)
        if headers is None and err.kind in RETRYABLE and settings is not None:
            # 503s are as retryable as a 429: tell the client when (turns are idempotent on seq).
            headers = {"Retry-After": str(settings.retry_after_s)}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Route every failure through :class:`ServiceError` so all bodies and counters look alike."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return error_response(as_service_error(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid_input(exc.errors()), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404/405 (unknown path, wrong method) join the same closed set.
        kind = next((k for k, status in STATUS.items() if status == exc.status_code), ErrorKind.invalid)
        return error_response(ServiceError(kind, str(exc.detail)), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ServiceError(ErrorKind.internal, "internal error"), request)
