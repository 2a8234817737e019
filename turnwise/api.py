"""The service's wire contract that server and clients share: error kinds, statuses, paths, WebSocket names.

The service (:mod:`service.errors`, :mod:`service.routes`) answers with these names and the client
(:mod:`turnwise.client`) reads them back, so the two cannot drift apart. The bodies and frames
themselves are pydantic models in :mod:`turnwise.messages`.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    """Every failure the service answers has one of these kinds: ``error_type`` in a REST error body,
    ``code`` in a WebSocket error frame."""

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


# The HTTP status of each kind (a WebSocket error frame carries the kind only).
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

# What each kind means to a client: the text of the docs and of the OpenAPI error responses.
MEANING: dict[ErrorKind, str] = {
    ErrorKind.unauthenticated: "missing or invalid API key (`Authorization: Bearer <key>`)",
    ErrorKind.not_found: "no such path, or the dialogue is unknown (never seen, ended or expired)",
    ErrorKind.not_allowed: "the path exists but not with this HTTP method",
    ErrorKind.conflict: "the seq is older than the dialogue's last seq, or the last seq again with another "
    "speaker or text",
    ErrorKind.too_large: "body, text, frame or number of turns above a configured limit",
    ErrorKind.invalid: "a field is missing, has the wrong type or is out of range (the message names it)",
    ErrorKind.bundle_rejected: "the new model bundle failed its checks; the old one keeps serving",
    ErrorKind.overloaded: "the request would not finish within its latency budget at the current load (or the "
    "admission limit is reached); retry after `Retry-After` seconds",
    ErrorKind.store_unavailable: "the window store (Redis) cannot be reached; retry",
    ErrorKind.model_unavailable: "no model loaded yet, or the service is shutting down; retry (elsewhere)",
    ErrorKind.deadline_exceeded: "still queued when the latency budget ran out; never computed",
    ErrorKind.internal: "a bug: the service logged it",
}

# Kinds after which the same request may be sent again unchanged: turns are idempotent on
# (dialogue_id, seq), and these failures happen before or without a result being stored.
RETRYABLE: frozenset[ErrorKind] = frozenset(
    {ErrorKind.overloaded, ErrorKind.store_unavailable, ErrorKind.model_unavailable}
)
RETRYABLE_STATUSES: frozenset[int] = frozenset({429, 503})


def kind_for_status(status: int) -> ErrorKind:
    """The kind a bare HTTP status stands for (e.g. a proxy's 502 without a turnwise body -> internal)."""
    for kind, code in STATUS.items():
        if code == status:
            return kind
    return ErrorKind.internal if status >= 500 else ErrorKind.invalid


# --- paths ----------------------------------------------------------------------------------------
API_PREFIX = "/v1"
TURNS_PATH = "/v1/dialogues/{dialogue_id}/turns"
DIALOGUE_PATH = "/v1/dialogues/{dialogue_id}"
SCORE_PATH = "/v1/score"
FEEDBACK_PATH = "/v1/feedback"
RELOAD_PATH = "/v1/admin/reload"
STREAM_PATH = "/v1/stream"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"

# dialogue_id becomes part of Redis keys; braces (hash tags), spaces and slashes are excluded.
DIALOGUE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_SEQ = 2**53 - 1  # exact in a Lua number (double) and in JavaScript

# --- WebSocket ------------------------------------------------------------------------------------
SUBPROTOCOL = "turnwise"  # selected by the server when the client offers it
BEARER_SUBPROTOCOL = "bearer."  # browsers offer ``bearer.<key>`` since they cannot set headers
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # handshake refused by a server without the denial-response extension
CLOSE_TOO_BIG = 1009  # a frame far above the frame limit
CLOSE_SERVICE_RESTART = 1012  # drain on SIGTERM: every frame read was answered; reconnect and resend

CLOSE_CODES: dict[int, str] = {
    CLOSE_NORMAL: "normal closure (the client closed, or the server after the client)",
    CLOSE_POLICY: "the handshake was refused (authentication) by a server that cannot send an HTTP denial",
    CLOSE_TOO_BIG: "a frame was far above TURNWISE_MAX_FRAME_BYTES; frames above the limit but below 4x it "
    "(at least 1 MiB) get an error frame instead",
    CLOSE_SERVICE_RESTART: "the server is shutting down (SIGTERM drain): every frame it read was answered "
    "first; reconnect (to another replica) and resend what is unanswered",
}
