"""The service's one closed set of error kinds and the one place that maps a kind to an HTTP status.

Every failure the service answers is a :class:`ServiceError` carrying an :class:`ErrorKind`; REST
turns it into ``{"error": message, "error_type": kind}`` with :data:`STATUS`, the WebSocket into
``{"type": "error", "code": kind, "message", "seq"}``. Both paths call :func:`count_failure`, so
``turnwise_failures_total{kind}`` counts each failure once.

The window store raises its own :class:`~service.store.errors.StoreError`; :data:`STORE_KINDS` and
:func:`as_service_error` turn it into a :class:`ServiceError` (conflict -> 409, unavailable -> 503),
for the REST handlers and the WebSocket connection alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.store.errors import StoreError, StoreErrorKind
from turnwise.jsonl import validation_message

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


# What the window store's failures are to a client.
STORE_KINDS: dict[StoreErrorKind, ErrorKind] = {
    StoreErrorKind.conflict: ErrorKind.conflict,
    StoreErrorKind.unavailable: ErrorKind.store_unavailable,
}

# Parts of a FastAPI error location that mean nothing to the client.
REQUEST_LOCATIONS = ("body", "path", "query")


def as_service_error(err: ServiceError | StoreError) -> ServiceError:
    """A store failure as the service answers it (same message); a ServiceError as it is."""
    if isinstance(err, StoreError):
        return ServiceError(STORE_KINDS[err.kind], err.message)
    return err


def invalid_input(errors: Iterable[Mapping[str, Any]]) -> ServiceError:
    """Pydantic errors of a request or a frame -> ``invalid`` naming each bad field (never the input value)."""
    return ServiceError(ErrorKind.invalid, validation_message(errors, skip=REQUEST_LOCATIONS))


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
