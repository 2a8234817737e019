"""The AsyncAPI 3.0 document of ``WS /v1/stream`` and ``WS /v1/events``, built from the frame models
(:mod:`turnwise.messages`, :mod:`turnwise.events`).

Served at ``/asyncapi.json`` and written to ``docs/asyncapi.json`` (a test keeps the two equal), so
the frames a client reads about are the ones the server validates and sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from turnwise import __version__
from turnwise.api import (
    BEARER_SUBPROTOCOL,
    CLOSE_CODES,
    MEANING,
    STREAM_PATH,
    SUBPROTOCOL,
    ErrorKind,
)
from turnwise.events import AlertEvent, EndedEvent, TurnEvent
from turnwise.messages import EndedFrame, EndFrame, ErrorFrame, ScoresFrame, TurnFrame

REF = "#/components/schemas/{model}"
CLIENT_FRAMES: dict[str, type[BaseModel]] = {"turn": TurnFrame, "end": EndFrame}
SERVER_FRAMES: dict[str, type[BaseModel]] = {"scores": ScoresFrame, "ended": EndedFrame, "error": ErrorFrame,
                                             "alert": AlertEvent, "turnEvent": TurnEvent, "endedEvent": EndedEvent}
EVENTS_PATH = "/v1/events"

DESCRIPTION = f"""\
One WebSocket carries any number of calls (dialogues). Every text frame is one JSON object with a `type`.

- The client sends `turn` frames (one utterance of a call, with its `seq`) and `end` frames (the call is over).
- The server answers **every frame with exactly one reply, in the order the frames were sent**: `scores` for a
  `turn`, `ended` for an `end`, `error` in place of either when it failed. Several frames may be in flight;
  replies never overtake each other, so a client matches replies to frames by order (an `error` also carries the
  frame's `seq` where it could be read).
- A bad frame (invalid JSON, unknown `type`, a field out of range, above TURNWISE_MAX_FRAME_BYTES) gets an
  `error` reply and the socket stays open.
- Turns are idempotent on (`dialogue_id`, `seq`): resending a frame after a reconnect returns the stored result.
- An `end` waits for the connection's earlier frames, then forgets the call's window.
- When alert rules are configured (TURNWISE_RULES), the alerts a turn fires follow its `scores` reply as `alert`
  frames. They are not replies: a client matching replies by order skips them.

`WS {EVENTS_PATH}` is the supervisor stream: the server sends the events of every call, on every replica (query
filters `dialogue_id`, `severity` = the least severe alert sent, `types` = comma-separated of `alert`, `turn`,
`ended`; default `alert`). Nothing is read from the client. A bad query closes the socket with 1008.

Authentication (when TURNWISE_API_KEYS is set): `Authorization: Bearer <key>` on the handshake, or, where headers
cannot be set (browsers), the subprotocols `["{SUBPROTOCOL}", "{BEARER_SUBPROTOCOL}<key>"]` (the server selects
`{SUBPROTOCOL}`). A refused handshake is an HTTP 401 with the REST error body (`error_type: unauthenticated`); while
the service drains it is a 503 (`model_unavailable`).

Close codes: {"; ".join(f"`{code}` {text}" for code, text in CLOSE_CODES.items())}.

Error codes: {"; ".join(f"`{k.value}` {MEANING[k]}" for k in ErrorKind)}.
"""


def _schemas() -> dict[str, Any]:
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in CLIENT_FRAMES.values()]
    models = modes + [(m, "serialization") for m in SERVER_FRAMES.values()]
    _, top = models_json_schema(models, ref_template=REF)
    return dict(sorted(top.get("$defs", {}).items()))


def _message(name: str, model: type[BaseModel], summary: str) -> dict[str, Any]:
    extra: Any = model.model_config.get("json_schema_extra") or {}
    examples = extra.get("examples", [])
    return {
        "name": name,
        "title": model.__name__,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": REF.format(model=model.__name__)},
        "examples": [{"name": f"{name}-{i}", "payload": ex} for i, ex in enumerate(examples)],
    }


def build_asyncapi(server_url: str = "127.0.0.1:8080") -> dict[str, Any]:
    messages = {
        "turn": _message("turn", TurnFrame, "Score one utterance of a call."),
        "end": _message("end", EndFrame, "The call is over: forget its window."),
        "scores": _message("scores", ScoresFrame, "The result of a turn frame."),
        "ended": _message("ended", EndedFrame, "The answer to an end frame."),
        "error": _message("error", ErrorFrame, "A frame failed; its reply in the same place."),
        "alert": _message("alert", AlertEvent, "An alert rule held on a scored turn."),
        "turnEvent": _message("turnEvent", TurnEvent, "A scored turn with its text (events stream, types=turn)."),
        "endedEvent": _message("endedEvent", EndedEvent, "A call ended (events stream, types=ended)."),
    }
    stream_messages = ("turn", "end", "scores", "ended", "error", "alert")
    event_messages = ("alert", "turnEvent", "endedEvent")
    channel_ref = {"$ref": "#/channels/stream"}
    events_ref = {"$ref": "#/channels/events"}

    def msg(name: str) -> dict[str, str]:
        return {"$ref": f"#/channels/stream/messages/{name}"}

    return {
        "asyncapi": "3.0.0",
        "info": {"title": "turnwise stream and events", "version": __version__, "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": server_url,
                "protocol": "ws",
                "description": "`turnwise serve` (use wss behind TLS)",
                "security": [{"$ref": "#/components/securitySchemes/bearer"}],
            }
        },
        "channels": {
            "stream": {
                "address": STREAM_PATH,
                "title": "The live-call stream",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in stream_messages},
                "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0"}},
            },
            "events": {
                "address": EVENTS_PATH,
                "title": "Call events for supervisors (all calls, every replica)",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in event_messages},
                "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0", "query": {
                    "type": "object", "properties": {
                        "dialogue_id": {"type": "string", "description": "Only this call's events."},
                        "severity": {"type": "string", "enum": ["info", "warning", "critical"], "default": "info",
                                     "description": "The least severe alert sent."},
                        "types": {"type": "string", "default": "alert",
                                  "description": "Comma-separated of alert, turn, ended."}}}}},
            },
        },
        "operations": {
            "scoreTurn": {
                "action": "receive",
                "channel": channel_ref,
                "summary": "The client sends a turn; the server replies scores (or error), in frame order.",
                "messages": [msg("turn")],
                "reply": {"channel": channel_ref, "messages": [msg("scores"), msg("error")]},
            },
            "endCall": {
                "action": "receive",
                "channel": channel_ref,
                "summary": "The client ends a call; the server replies ended (or error) after the earlier frames.",
                "messages": [msg("end")],
                "reply": {"channel": channel_ref, "messages": [msg("ended"), msg("error")]},
            },
            "alertOnStream": {
                "action": "send",
                "channel": channel_ref,
                "summary": "The server sends the alerts a turn fired right after its scores (not a reply).",
                "messages": [msg("alert")],
            },
            "followEvents": {
                "action": "send",
                "channel": events_ref,
                "summary": "The server sends every event its filter takes, as it happens.",
                "messages": [{"$ref": f"#/channels/events/messages/{name}"} for name in event_messages],
            },
        },
        "components": {
            "messages": messages,
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <key> on the handshake (one of TURNWISE_API_KEYS), or the "
                    f"subprotocol `{BEARER_SUBPROTOCOL}<key>` next to `{SUBPROTOCOL}`.",
                }
            },
        },
    }
