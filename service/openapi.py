"""The OpenAPI document: FastAPI's, plus what FastAPI cannot say by itself.

- ``WS /v1/stream`` and ``WS /v1/events`` as documentation-only ``GET`` s (the WebSocket handshake): 101,
  401, 503, the frames as components, and a link to the AsyncAPI document (``/asyncapi.json``).
- The bearer security scheme comes from :data:`service.deps.BEARER` (FastAPI's ``HTTPBearer``).
- Error responses per route come from :func:`service.schemas.errors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.routes.events import EVENTS_PATH
from service.schemas import AUTH_HEADER, EXAMPLE_MESSAGES
from turnwise import __version__
from turnwise.api import CLOSE_CODES, STREAM_PATH, ErrorKind
from turnwise.events import AlertEvent, EndedEvent, TurnEvent
from turnwise.messages import EndedFrame, EndFrame, ErrorFrame, ScoresFrame, TurnFrame

DESCRIPTION = """\
Real-time scoring of live calls: every utterance gets intent, act, sentiment (the tasks of the served model).

- A live call: `POST /v1/dialogues/{dialogue_id}/turns` per utterance (idempotent on `seq`), `DELETE` at the
  end; or one WebSocket, `/v1/stream` (documented below as a GET and fully in the AsyncAPI document at
  [/asyncapi.json](/asyncapi.json)).
- Finished transcripts: `POST /v1/score`.
- Supervisors: `GET /v1/dialogues` (live calls), `GET /v1/dialogues/{dialogue_id}` (with the call's aggregates),
  the WebSocket `/v1/events` (alerts of every call as they fire) and the live monitor page at [/monitor](/monitor).
- Errors are `{"error": message, "error_type": kind}` with a closed set of kinds; 429 and 503 carry `Retry-After`.
- Authentication: `Authorization: Bearer <key>` when `TURNWISE_API_KEYS` is set (the Authorize button).
"""

TAGS = [
    {"name": "dialogues", "description": "A live call, turn by turn: the window lives in the service."},
    {"name": "score", "description": "Stateless scoring of a list of turns."},
    {"name": "stream", "description": "The WebSocket for live calls (see /asyncapi.json)."},
    {"name": "events", "description": "Alerts and call events for supervisors (see /asyncapi.json)."},
    {"name": "feedback", "description": "Corrected labels for the training sidecar."},
    {"name": "admin", "description": "Operations."},
    {"name": "health", "description": "Probes and Prometheus metrics."},
]


def _frame_schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (TurnFrame, "validation"), (EndFrame, "validation"), (ScoresFrame, "serialization"),
        (EndedFrame, "serialization"), (ErrorFrame, "serialization"), (AlertEvent, "serialization"),
        (TurnEvent, "serialization"), (EndedEvent, "serialization")]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return top.get("$defs", {})


EVENTS_DESCRIPTION = (
    "A WebSocket, not a plain GET: the supervisor stream of every call's events, on every replica. The server "
    "sends `AlertEvent` frames (and, with `types`, `TurnEvent` and `EndedEvent`); it reads nothing. Query: "
    "`dialogue_id` (one call), `severity` (the least severe alert sent: info, warning, critical), `types` "
    "(comma-separated of alert, turn, ended; default alert). A bad query closes the socket with 1008. "
    "Authentication as for /v1/stream. Full protocol: /asyncapi.json and docs/alerts.md.")


def _events_path() -> dict[str, Any]:
    path = _stream_path()
    op = path["get"]
    op.update(tags=["events"], summary="WebSocket: alerts (and scored turns) of every live call, as they happen",
              operationId="events", description=EVENTS_DESCRIPTION)
    op["parameters"] = [*op["parameters"], *(
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in (("dialogue_id", "Only this call's events."),
                           ("severity", "The least severe alert sent: info (default), warning, critical."),
                           ("types", "Comma-separated of alert, turn, ended (default: alert).")))]
    return path


def _stream_path() -> dict[str, Any]:
    def err(kind: ErrorKind) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"$ref": "#/components/schemas/ErrorOut"}, {"error": EXAMPLE_MESSAGES[kind], "error_type": kind.value}

    unauth_schema, unauth_example = err(ErrorKind.unauthenticated)
    drain_schema, drain_example = err(ErrorKind.model_unavailable)
    return {
        "get": {
            "tags": ["stream"],
            "summary": "WebSocket: a live call's turns in, scores out, in order",
            "operationId": "stream",
            "description": "A WebSocket (`ws://` or `wss://`), not a plain GET. Send `TurnFrame` / `EndFrame` "
            "JSON text frames; every frame gets exactly one reply (`ScoresFrame`, `EndedFrame` or `ErrorFrame`) "
            "in frame order. Close codes: " + "; ".join(f"{c} {t}" for c, t in CLOSE_CODES.items())
            + ". Full protocol: the AsyncAPI document at /asyncapi.json and docs/websocket.md.",
            "externalDocs": {"description": "AsyncAPI 3.0 document of this WebSocket", "url": "/asyncapi.json"},
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "Sec-WebSocket-Protocol", "in": "header", "required": False,
                 "description": "Optional: `turnwise`, plus `bearer.<key>` where the Authorization header cannot "
                 "be set (browsers).", "schema": {"type": "string", "example": "turnwise, bearer.key-a"}},
            ],
            "responses": {
                "101": {"description": "Switching Protocols: the stream is open."},
                "401": {"description": "`unauthenticated`: missing or invalid API key (the handshake is refused)",
                        "headers": AUTH_HEADER,
                        "content": {"application/json": {"schema": unauth_schema, "example": unauth_example}}},
                "503": {"description": "`model_unavailable`: the service is shutting down; connect to another "
                        "replica", "content": {"application/json": {"schema": drain_schema, "example": drain_example}}},
            },
            "x-websocket": True,
        }
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app``, completed; cached on the app like FastAPI's own."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=__version__, description=DESCRIPTION, routes=app.routes,
                         tags=TAGS)
    schema["paths"][STREAM_PATH] = _stream_path()
    schema["paths"][EVENTS_PATH] = _events_path()
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, frame in _frame_schemas().items():
        schemas.setdefault(name, frame)
    _media_examples(schema["paths"], schemas)
    app.openapi_schema = schema
    return schema


def _media_examples(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Copy each body model's first example to the media type (``content.<type>.example``): what Swagger
    UI puts in its "Try it out" body, instead of filling fields from their bounds."""
    for ops in paths.values():
        for op in ops.values():
            contents = [op.get("requestBody", {}).get("content", {})]
            contents += [resp.get("content", {}) for resp in op.get("responses", {}).values()]
            for content in contents:
                for media in content.values():
                    ref = media.get("schema", {}).get("$ref", "")
                    examples = schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples")
                    if examples and "example" not in media and "examples" not in media:
                        media["example"] = examples[0]


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
