"""The service's one closed set of error kinds and the one place that maps a kind to an HTTP status.

Every failure the service answers is a :class:`ServiceError` carrying an :class:`ErrorKind`; REST
turns it into ``{"error": message, "error_type": kind}`` with :data:`STATUS`, the WebSocket into
``{"type": "error", "code": kind, "message", "seq"}``. Both paths call :func:`count_failure`, so
``turnwise_failures_total{kind}`` counts each failure once.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("turnwise.service")


class ErrorKind(str, Enum):
    unauthenticated = "unauthenticated"
    not_found = "not_found"
    not_allowed = "not_allowed"
    conflict = "conflict"
    too_large = "too_large"
    invalid = "invalid"
    bundle_rejected = "bundle_rejected"
    overloaded = "overloaded"
    store_unavailable = "store_unavailable"
    model_unavailable = "model_unavailable"
    deadline_exceeded = "deadline_exceeded"
    internal = "internal"


STATUS: dict[ErrorKind, int] = {
    ErrorKind.unauthenticated: 401,
    ErrorKind.not_found: 404,
    ErrorKind.not_allowed: 405,
    ErrorKind.conflict: 409,
    ErrorKind.too_large: 413,
    ErrorKind.invalid: 422,
    ErrorKind.bundle_rejected: 422,
    ErrorKind.overloaded: 429,
    ErrorKind.store_unavailable: 503,
    ErrorKind.model_unavailable: 503,
    ErrorKind.deadline_exceeded: 504,
    ErrorKind.internal: 500,
}


class ServiceError(Exception):
    """A failure with a kind; ``retry_after`` (seconds) is sent as Retry-After when set."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: int | None = None):
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
            return {"Retry-After": str(self.retry_after)}
        if self.kind is ErrorKind.unauthenticated:
            return {"WWW-Authenticate": "Bearer"}
        return None


def count_failure(metrics: Metrics | None, kind: ErrorKind) -> None:
    if metrics is not None:
        metrics.failures.labels(kind=kind.value).inc()


def validation_message(errors: list[Any]) -> str:
    """Pydantic errors -> one line naming each bad field (never echoing the input value)."""
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "path", "query"))
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _metrics_of(request: Request) -> Metrics | None:
    return getattr(request.app.state, "metrics", None)


def error_response(err: ServiceError, request: Request | None = None) -> JSONResponse:
    if request is not None:
        count_failure(_metrics_of(request), err.kind)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers())


def install_handlers(app: FastAPI) -> None:
    """Route every failure through :class:`ServiceError` so all bodies and counters look alike."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ServiceError(ErrorKind.invalid, validation_message(list(exc.errors()))), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404/405 (unknown path, wrong method) join the same closed set.
        kind = next((k for k, status in STATUS.items() if status == exc.status_code), ErrorKind.invalid)
        return error_response(ServiceError(kind, str(exc.detail)), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ServiceError(ErrorKind.internal, "internal error"), request)
