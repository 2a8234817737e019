"""WS /v1/events: the supervisor stream of call events, from every call on every replica.

Query (all optional): ``dialogue_id`` (one call), ``severity`` (the least severe alert sent: info,
warning, critical), ``types`` (comma-separated of ``alert``, ``turn``, ``ended``; default ``alert``).
Authentication as for ``/v1/stream``. The server only sends; frames are JSON objects with a ``type``:

- ``alert``: ``{rule, severity, dialogue_id, seq, speaker, labels, scores, at}``
- ``turn``: ``{dialogue_id, seq, speaker, text, labels, scores, at}``
- ``ended``: ``{dialogue_id, at}``

A bad query closes the socket with 1008 and the reason; a shutdown closes it with 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from service.alerts.hub import EVENT_TYPES, EventFilter
from service.alerts.rules import Severity
from service.routes.stream import admit_socket
from turnwise.api import CLOSE_POLICY, CLOSE_SERVICE_RESTART, DIALOGUE_ID_PATTERN

router = APIRouter(tags=["events"])
EVENTS_PATH = "/v1/events"


def parse_filter(query: dict[str, str]) -> EventFilter:
    """The subscriber's filter from the query string; ``ValueError`` naming the bad parameter."""
    dialogue_id = query.get("dialogue_id") or None
    if dialogue_id is not None and not re.fullmatch(DIALOGUE_ID_PATTERN, dialogue_id):
        raise ValueError("dialogue_id: 1-128 characters of [A-Za-z0-9._:-]")
    try:
        severity = Severity[query.get("severity", "info")]
    except KeyError:
        raise ValueError("severity: one of info, warning, critical") from None
    types = frozenset(t.strip() for t in query.get("types", "alert").split(",") if t.strip())
    if not types or types - set(EVENT_TYPES):
        raise ValueError(f"types: comma-separated of {', '.join(EVENT_TYPES)}")
    return EventFilter(dialogue_id, severity, types)


class EventConnection:
    """One subscriber: send what the hub queues until the client leaves or the service drains."""

    def __init__(self, websocket: WebSocket):
        self.ws = websocket
        self._stop = asyncio.Event()

    async def drain(self) -> None:
        self._stop.set()

    async def run(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        stop = asyncio.create_task(self._stop.wait())
        gone = asyncio.create_task(self._client_left())
        try:
            while True:
                get = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({get, stop, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                await self.ws.send_text(json.dumps(get.result(), ensure_ascii=False, separators=(",", ":")))
            if stop.done():
                await self.ws.close(CLOSE_SERVICE_RESTART, "server shutting down")
        finally:
            for task in (stop, gone):
                task.cancel()

    async def _client_left(self) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while (await self.ws.receive())["type"] != "websocket.disconnect":
                pass  # the client has nothing to say here; anything it sends is ignored


@router.websocket(EVENTS_PATH)
async def events(websocket: WebSocket) -> None:
    state = websocket.app.state
    if not await admit_socket(websocket, "events"):
        return
    try:
        flt = parse_filter(dict(websocket.query_params))
    except ValueError as err:
        await websocket.close(CLOSE_POLICY, str(err)[:120])
        return
    monitor = state.pipeline.monitor
    sub = monitor.hub.subscribe(flt)
    conn = EventConnection(websocket)
    state.connections.add(conn)
    state.metrics.event_subscribers.inc()
    try:
        with contextlib.suppress(Exception):  # the client went away mid-send: nothing to answer
            await conn.run(sub.queue)
    finally:
        state.metrics.event_subscribers.dec()
        state.connections.discard(conn)
        monitor.hub.unsubscribe(sub)
