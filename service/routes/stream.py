"""WS /v1/stream: authenticate the handshake, then hand the socket to a :class:`StreamConnection`.

Auth: ``Authorization: Bearer <key>``; browsers, which cannot set headers on a WebSocket, offer the
subprotocols ``["turnwise", "bearer.<key>"]`` instead (the server selects ``turnwise``). The frames,
their order, the errors and the close codes are in ``docs/websocket.md`` and the AsyncAPI document
(:mod:`service.asyncapi`, served at ``/asyncapi.json``).
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from service.connection import StreamConnection
from service.deps import bearer_token, key_is_valid
from service.errors import ErrorKind, ServiceError, count_failure
from turnwise.api import BEARER_SUBPROTOCOL, CLOSE_POLICY, STREAM_PATH, SUBPROTOCOL

router = APIRouter(tags=["stream"])


async def _deny(websocket: WebSocket, err: ServiceError, endpoint: str = "stream") -> None:
    count_failure(websocket.app.state.metrics, err.kind, endpoint)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(err.body(), status_code=err.status, headers=err.headers()))
    else:  # servers without the denial-response extension: close the handshake (HTTP 403)
        await websocket.close(code=CLOSE_POLICY, reason=err.message)


async def admit_socket(websocket: WebSocket, endpoint: str = "stream") -> bool:
    """Authenticate a WebSocket handshake (header or ``bearer.<key>`` subprotocol) and accept it;
    False (the handshake refused) for a bad key or while shutting down."""
    state = websocket.app.state
    offered = list(websocket.scope.get("subprotocols") or [])
    token = bearer_token(websocket.headers.get("authorization"))
    if token is None:
        token = next((p[len(BEARER_SUBPROTOCOL) :] for p in offered if p.startswith(BEARER_SUBPROTOCOL)), None)
    if not key_is_valid(state.settings, token):
        await _deny(websocket, ServiceError(ErrorKind.unauthenticated, "missing or invalid API key"), endpoint)
        return False
    if state.draining:
        await _deny(websocket, ServiceError(ErrorKind.model_unavailable, "shutting down"), endpoint)
        return False
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    return True


@router.websocket(STREAM_PATH)
async def stream(websocket: WebSocket) -> None:
    state = websocket.app.state
    if not await admit_socket(websocket):
        return
    conn = StreamConnection(websocket, state.pipeline, max_frame_bytes=state.settings.max_frame_bytes)
    state.connections.add(conn)
    if state.draining:  # the drain began while the handshake was accepted: close it as the others
        await conn.drain()
    try:
        await conn.run()
    finally:
        state.connections.discard(conn)
