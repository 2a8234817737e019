"""Typed errors of the client: one class per service error kind, plus transport failures.

Every error the service answers (a REST error body or a WebSocket error frame) is raised as the
:class:`APIError` subclass of its kind (:data:`ERRORS`), so callers catch what they can handle::

    try:
        call.send("customer", text)
    except Conflict:        # the seq was used before with other text
        ...
    except Overloaded as err:  # only after the client's own retries gave up
        time.sleep(err.retry_after or 1)

A service that cannot be reached at all is :class:`Unreachable`; a WebSocket that closed with frames
still unanswered fails them with :class:`StreamClosed`.
"""

from __future__ import annotations

from turnwise.api import RETRYABLE, STATUS, ErrorKind
from turnwise.errors import TurnwiseError


class ClientError(TurnwiseError):
    """Base class of everything :mod:`turnwise.client` raises on purpose."""


class APIError(ClientError):
    """The service answered with an error of kind :attr:`kind` (``error_type`` / ``code``)."""

    kind: ErrorKind = ErrorKind.internal

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 seq: int | None = None, dialogue_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else STATUS[self.kind]
        self.retry_after = retry_after
        self.seq = seq
        self.dialogue_id = dialogue_id

    @property
    def retryable(self) -> bool:
        """Sending the same request again may succeed (overloaded, store or model unavailable)."""
        return self.kind in RETRYABLE

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


class Unauthenticated(APIError):
    kind = ErrorKind.unauthenticated


class NotFound(APIError):
    kind = ErrorKind.not_found


class NotAllowed(APIError):
    kind = ErrorKind.not_allowed


class Conflict(APIError):
    kind = ErrorKind.conflict


class TooLarge(APIError):
    kind = ErrorKind.too_large


class Invalid(APIError):
    kind = ErrorKind.invalid


class BundleRejected(APIError):
    kind = ErrorKind.bundle_rejected


class Overloaded(APIError):
    kind = ErrorKind.overloaded


class StoreUnavailable(APIError):
    kind = ErrorKind.store_unavailable


class ModelUnavailable(APIError):
    kind = ErrorKind.model_unavailable


class DeadlineExceeded(APIError):
    kind = ErrorKind.deadline_exceeded


class InternalError(APIError):
    kind = ErrorKind.internal


ERRORS: dict[ErrorKind, type[APIError]] = {
    cls.kind: cls
    for cls in (Unauthenticated, NotFound, NotAllowed, Conflict, TooLarge, Invalid, BundleRejected, Overloaded,
                StoreUnavailable, ModelUnavailable, DeadlineExceeded, InternalError)
}
assert set(ERRORS) == set(ErrorKind), "every error kind has its class"


def api_error(kind: ErrorKind | str, message: str, **kw: object) -> APIError:
    """The typed error for ``kind`` (an unknown kind from a newer service is an :class:`InternalError`)."""
    try:
        k = ErrorKind(kind)
    except ValueError:
        return InternalError(f"{kind}: {message}", **kw)  # type: ignore[arg-type]
    return ERRORS[k](message, **kw)  # type: ignore[arg-type]


class Unreachable(ClientError):
    """The service could not be reached (connection refused, DNS, timeouts) after the client's retries."""

    def __init__(self, url: str, cause: BaseException | str, attempts: int):
        reason = cause if isinstance(cause, str) else (str(cause) or type(cause).__name__)
        super().__init__(f"cannot reach {url} ({reason}) after {attempts} attempt(s)")
        self.url = url
        self.attempts = attempts


class StreamClosed(ClientError):
    """The WebSocket closed (and was not, or could not be, reopened) before a frame was answered."""

    def __init__(self, code: int | None, reason: str = ""):
        from turnwise.api import CLOSE_CODES

        what = CLOSE_CODES.get(code or 0, "closed")
        super().__init__(f"stream closed (code {code}{': ' + reason if reason else ''}): {what}")
        self.code = code
        self.reason = reason
