"""Structured logs: one JSON object per line, with the request id and the dialogue id of the request
being served, so every line of one call can be found (``TURNWISE_LOG_FORMAT=json``, the default; ``text``
for a terminal).

- ``request_id``: the client's ``X-Request-ID`` when it is a sane token (<= 128 of ``[A-Za-z0-9._:-]``),
  else a new one; echoed in the ``X-Request-ID`` response header. A WebSocket stream keeps one per
  connection.
- ``dialogue_id``: from the path (``/v1/dialogues/{id}/...``) or, for a WebSocket frame, the frame.
- ``trace_id`` / ``span_id`` when OpenTelemetry tracing is on (:mod:`service.tracing`).

Utterance text is never logged unless ``TURNWISE_LOG_TEXT`` is on (the pipeline decides; nothing here
adds request bodies). uvicorn's own loggers (errors, access log) go through the same handler; the
WebSocket library's debug lines, which print whole frames, are dropped unless ``TURNWISE_LOG_TEXT``
is on (:class:`FrameTextFilter`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: ContextVar[str | None] = ContextVar("turnwise_request_id", default=None)
DIALOGUE_ID: ContextVar[str | None] = ContextVar("turnwise_dialogue_id", default=None)
REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_DIALOGUE_PATH = re.compile(r"^/v1/dialogues/([A-Za-z0-9._:-]{1,128})(/|$)")

# Set by service.tracing when tracing is on: () -> (trace_id, span_id) hex of the current span, or None.
current_trace_ids: Callable[[], tuple[str, str] | None] = lambda: None  # noqa: E731

# LogRecord attributes that are not `extra` fields (uvicorn adds an ANSI-coloured copy of its messages).
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER.encode():
            given = value.decode("latin-1").strip()
            if _SANE_ID.match(given):
                return given
    return uuid.uuid4().hex


@contextlib.contextmanager
def bound_dialogue(dialogue_id: str | None) -> Iterator[None]:
    """Log lines inside the block carry ``dialogue_id``."""
    token = DIALOGUE_ID.set(dialogue_id)
    try:
        yield
    finally:
        DIALOGUE_ID.reset(token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", "dialogue_id", ...extra, "exc"}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", REQUEST_ID), ("dialogue_id", DIALOGUE_ID)):
            value = var.get()
            if value is not None:
                out[key] = value
        ids = current_trace_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the ids appended when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{k}={v.get()}" for k, v in (("request_id", REQUEST_ID), ("dialogue_id", DIALOGUE_ID)) if v.get()]
        return f"{line} [{' '.join(ids)}]" if ids else line


class FrameTextFilter(logging.Filter):
    """Drops the debug lines of the WebSocket protocol libraries (``< TEXT '{...}'``: whole frames, so
    utterance text), whichever logger they go to (uvicorn hands its ``uvicorn.error`` logger to them)."""

    LIBRARIES = (f"{os.sep}websockets{os.sep}", f"{os.sep}wsproto{os.sep}")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        return not (record.name.startswith(("websockets", "wsproto"))
                    or any(lib in record.pathname for lib in self.LIBRARIES))


def configure_logging(level: str, fmt: str = "json", *, log_text: bool = False) -> None:
    """One stderr handler on the root logger; uvicorn's loggers propagate to it (see build_server).
    Without ``log_text`` the handler drops the WebSocket libraries' frame dumps."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if not log_text:
        handler.addFilter(FrameTextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("turnwise").setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


class RequestContext:
    """ASGI middleware: binds the request id (and the dialogue id of the path) for the request's log
    lines and returns the request id in ``X-Request-ID``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        match = _DIALOGUE_PATH.match(scope.get("path", ""))
        rid_token = REQUEST_ID.set(request_id)
        did_token = DIALOGUE_ID.set(match.group(1) if match else None)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
        finally:
            DIALOGUE_ID.reset(did_token)
            REQUEST_ID.reset(rid_token)
