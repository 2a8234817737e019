"""Request, frame and response bodies of the HTTP and WebSocket API, and each route's error responses.

The models live in the core (:mod:`turnwise.messages`), shared with the client; they are re-exported
here for the routes. Responses are built as plain dicts (no response-model validation on the hot
path); the response models document them in OpenAPI.

:func:`errors` builds a route's OpenAPI error responses from the error kinds it can really answer
with: one entry per HTTP status, the kinds behind it with an example body each, ``Retry-After`` on
429 and 503.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool

from turnwise.api import DIALOGUE_ID_PATTERN, MAX_SEQ, MEANING, STATUS, ErrorKind
from turnwise.events import AlertEvent, CallSummary, DialogueList, TurnEvent
from turnwise.messages import (
    DialogueIdStr,
    DialogueOut,
    EndedFrame,
    EndFrame,
    ErrorFrame,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    Frame,
    HealthOut,
    ModelRef,
    ReadyOut,
    ReloadOut,
    Reply,
    ScoreAllResult,
    ScoreResult,
    ScoresFrame,
    ScoreTurn,
    Seq,
    Speaker,
    Text,
    TurnFrame,
    TurnIn,
    TurnResult,
    WindowTurn,
)
from turnwise.messages import ScoreIn as _ScoreIn

__all__ = [
    "DIALOGUE_ID_PATTERN",
    "MAX_SEQ",
    "AlertEvent",
    "CallSummary",
    "DialogueIdStr",
    "DialogueList",
    "DialogueOut",
    "EndFrame",
    "EndedFrame",
    "ErrorFrame",
    "ErrorOut",
    "FeedbackIn",
    "FeedbackOut",
    "Frame",
    "HealthOut",
    "ModelRef",
    "ReadyOut",
    "ReloadOut",
    "Reply",
    "ScoreAllResult",
    "ScoreIn",
    "ScoreResult",
    "ScoreTurn",
    "ScoresFrame",
    "Seq",
    "Speaker",
    "Text",
    "TurnEvent",
    "TurnFrame",
    "TurnIn",
    "TurnResult",
    "WindowTurn",
    "errors",
]

class ScoreIn(_ScoreIn):
    """The ``POST /v1/score`` body as the service validates it: ``all`` is a strict JSON boolean (``"yes"``,
    ``"true"`` or ``1`` are a 422, not read as true), as the OpenAPI document declares it."""

    all: StrictBool = Field(False, description=_ScoreIn.model_fields["all"].description)


# An example message per kind, as the service words it.
EXAMPLE_MESSAGES: dict[ErrorKind, str] = {
    ErrorKind.unauthenticated: "missing or invalid API key (Authorization: Bearer <key>)",
    ErrorKind.not_found: "dialogue 'call-0042' not found (never seen, ended or expired)",
    ErrorKind.not_allowed: "Method Not Allowed",
    ErrorKind.conflict: "dialogue 'call-0042': seq 2 is older than the last seq 5",
    ErrorKind.too_large: "text has 2417 characters; the limit is 2000",
    ErrorKind.invalid: "field 'seq': Input should be greater than or equal to 0",
    ErrorKind.bundle_rejected: "new bundle rejected (checksum mismatch for model.onnx); still serving "
    "turnwise-demo 0.1.0",
    ErrorKind.overloaded: "overloaded: 256 requests in flight (limit 256); retry shortly",
    ErrorKind.store_unavailable: "window store unavailable (Redis: TimeoutError)",
    ErrorKind.model_unavailable: "model not loaded yet",
    ErrorKind.deadline_exceeded: "latency budget exceeded before inference (queued 1003 ms)",
    ErrorKind.internal: "internal error",
}

RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before sending the same request again (TURNWISE_RETRY_AFTER_S). "
        "Turns are idempotent on (dialogue_id, seq), so the retry is safe.",
        "schema": {"type": "integer", "minimum": 1, "example": 1},
    }
}
AUTH_HEADER: dict[str, Any] = {
    "WWW-Authenticate": {"description": "Always `Bearer`.", "schema": {"type": "string", "example": "Bearer"}}
}


def errors(*kinds: ErrorKind) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error kinds a route can answer with (every route adds 405 and 500)."""
    by_status: dict[int, list[ErrorKind]] = {}
    for kind in (*kinds, ErrorKind.not_allowed, ErrorKind.internal):
        by_status.setdefault(STATUS[kind], [])
        if kind not in by_status[STATUS[kind]]:
            by_status[STATUS[kind]].append(kind)
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(by_status):
        group = by_status[status]
        entry: dict[str, Any] = {
            "model": ErrorOut,
            "description": "; ".join(f"`{k.value}`: {MEANING[k]}" for k in group),
            "content": {"application/json": {"examples": {
                k.value: {"summary": k.value, "value": {"error": EXAMPLE_MESSAGES[k], "error_type": k.value}}
                for k in group
            }}},
        }
        if status in (429, 503):
            entry["headers"] = RETRY_AFTER_HEADER
        elif status == 401:
            entry["headers"] = AUTH_HEADER
        out[status] = entry
    return out
