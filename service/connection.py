"""One WebSocket stream (``/v1/stream``): a reader, a writer, and a task per frame in between.

- The reader validates each frame by type (pydantic); a bad frame becomes an error frame
  ``{"type": "error", "code", "message", "seq", "dialogue_id"}`` in its place in the reply order; the
  socket stays open. Size and nesting depth are checked before any JSON parse (:func:`too_deep`), so
  no frame, however hostile, can make the reader fail. A refused turn (``overloaded``) also carries
  ``retry_after_s``.
- Each turn runs the same pipeline as REST in its own task, so several turns can be in flight; a turn
  starts its store append only after the previous frame's append, so the window order is the frame
  order, and the writer sends replies strictly in frame order. The alerts a turn fires follow its
  scores frame as ``{"type": "alert", ...}`` frames.
- ``end`` waits for the connection's earlier frames, deletes the dialogue's window and answers
  ``{"type": "ended", "dialogue_id"}``.
- Drain (SIGTERM): stop reading, answer every frame already read, close with 1012 (service restart).
  A client disconnect cancels the connection's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from service.errors import ErrorKind, ServiceError, as_service_error, count_failure, invalid_input
from service.schemas import EndFrame, Frame, TurnFrame
from service.store.errors import StoreError
from turnwise.api import CLOSE_SERVICE_RESTART, DIALOGUE_ID_PATTERN

if TYPE_CHECKING:
    from service.pipeline import Pipeline

log = logging.getLogger("turnwise.service")

FRAME = TypeAdapter(Frame)
MAX_PENDING = 128  # frames read but not yet answered, per connection; beyond it the reader waits
FOLLOWED_BY = "_alerts"  # frames a reply is followed by (a turn's alert frames); never sent as a field
ENDPOINT = "stream"  # the endpoint label of every frame's turnwise_requests_total count
MAX_DEPTH = 8  # nesting of arrays/objects a frame may have (a valid one has 1); deeper is refused unparsed
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')  # strings (skipped whole) and brackets
_DIALOGUE_ID = re.compile(DIALOGUE_ID_PATTERN)


def error_frame(err: ServiceError, seq: int | None, dialogue_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": err.kind.value, "message": err.message, "seq": seq,
                             "dialogue_id": dialogue_id}
    if err.retry_after is not None:
        frame["retry_after_s"] = err.retry_after
    return frame


def too_deep(raw: str, limit: int = MAX_DEPTH) -> bool:
    """True when arrays/objects nest deeper than ``limit`` (brackets inside strings do not count).
    Linear, no recursion; frames with few brackets skip the scan."""
    if raw.count("[") + raw.count("{") <= limit:
        return False
    depth = 0
    for token in _TOKENS.findall(raw):
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _ids_of(raw: str) -> tuple[int | None, str | None]:
    """Best-effort (seq, dialogue_id) of a frame that failed validation, so the client can match the
    error; only for a frame of bounded depth (the caller checks)."""
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    seq, dialogue_id = parsed.get("seq"), parsed.get("dialogue_id")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    return seq, dialogue_id if isinstance(dialogue_id, str) and _DIALOGUE_ID.match(dialogue_id) else None


class StreamConnection:
    def __init__(self, websocket: WebSocket, pipeline: Pipeline, *, max_frame_bytes: int):
        self.ws = websocket
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.max_frame_bytes = max_frame_bytes
        self._pending: asyncio.Queue[asyncio.Future[dict[str, Any]] | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Future[dict[str, Any]]] = set()
        self._last_appended: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self._draining = False

    async def run(self) -> None:
        self._reader = asyncio.create_task(self._read())
        if self._draining:  # drain() came before the reader existed: read nothing, close at once
            self._reader.cancel()
            self._pending.put_nowait(None)
        writer = asyncio.create_task(self._write())
        self.metrics.ws_connections.inc()
        try:
            await asyncio.wait({self._reader, writer}, return_when=asyncio.FIRST_EXCEPTION)
            if not self._draining:
                await self._reader
            await writer
            if self._draining:
                await self.ws.close(CLOSE_SERVICE_RESTART, "server shutting down")
        except Exception as err:  # the client went away (disconnect, closed transport): nothing to answer
            log.debug("stream closed: %s", type(err).__name__)
        finally:
            self.metrics.ws_connections.dec()
            tasks: list[asyncio.Future[Any]] = [self._reader, writer, *self._tasks]
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Stop reading; frames already read are answered before the socket closes."""
        self._draining = True
        if self._reader is not None:
            self._reader.cancel()

    # --- reading -----------------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                raw: str | bytes | None = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                # Put without awaiting, so a drain that cancels the reader never loses a frame it read.
                self._pending.put_nowait(self._dispatch(raw))
                while self._pending.qsize() >= MAX_PENDING:  # backpressure: stop reading until replies go out
                    self._room.clear()
                    await self._room.wait()
        finally:
            if self._draining:
                self._pending.put_nowait(None)  # the writer answers what was read, then stops

    def _dispatch(self, raw: str | bytes) -> asyncio.Future[dict[str, Any]]:
        """The reply future of one frame; never raises (a bad frame is an error frame)."""
        try:
            return self._parse(raw)
        except Exception:  # whatever a frame holds, the socket and the frames around it live on
            log.exception("stream frame could not be dispatched")
            return self._done(ServiceError(ErrorKind.internal, "internal error"), None, None)

    def _parse(self, raw: str | bytes) -> asyncio.Future[dict[str, Any]]:
        size = len(raw.encode()) if isinstance(raw, str) else len(raw)
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        if too_deep(text):
            return self._done(ServiceError(ErrorKind.invalid, f"frame nests deeper than {MAX_DEPTH} levels"),
                              None, None)
        if size > self.max_frame_bytes:
            return self._done(
                ServiceError(ErrorKind.too_large, f"frame of {size} bytes; the limit is {self.max_frame_bytes}"),
                *_ids_of(text),
            )
        try:
            frame = FRAME.validate_json(raw)
        except ValidationError as err:
            return self._done(invalid_input(err.errors()), *_ids_of(text))
        previous, appended = self._last_appended, asyncio.Event()
        self._last_appended = appended
        if isinstance(frame, TurnFrame):
            task = asyncio.ensure_future(self._turn(frame, previous, appended))
        else:
            task = asyncio.ensure_future(self._end(frame, list(self._tasks), appended))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _done(self, err: ServiceError, seq: int | None, dialogue_id: str | None) -> asyncio.Future[dict[str, Any]]:
        count_failure(self.metrics, err.kind, ENDPOINT)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.set_result(error_frame(err, seq, dialogue_id))
        return future

    async def _turn(self, frame: TurnFrame, previous: asyncio.Event | None, appended: asyncio.Event) -> dict[str, Any]:
        try:
            if previous is not None:
                await previous.wait()
            alerts: list[dict[str, Any]] = []
            body = await self.pipeline.score_turn(
                frame.dialogue_id,
                frame.seq,
                frame.speaker,
                frame.text,
                endpoint="stream",
                on_appended=appended.set,
                on_alerts=alerts.extend,
            )
            return {"type": "scores", **body, FOLLOWED_BY: alerts} if alerts else {"type": "scores", **body}
        except (ServiceError, StoreError) as failure:
            err = as_service_error(failure)
            count_failure(self.metrics, err.kind, ENDPOINT)
            return error_frame(err, frame.seq, frame.dialogue_id)
        except Exception:
            log.exception("stream turn failed")
            count_failure(self.metrics, ErrorKind.internal, ENDPOINT)
            return error_frame(ServiceError(ErrorKind.internal, "internal error"), frame.seq, frame.dialogue_id)
        finally:
            appended.set()

    async def _end(
        self, frame: EndFrame, earlier: list[asyncio.Future[dict[str, Any]]], appended: asyncio.Event
    ) -> dict[str, Any]:
        try:
            await asyncio.gather(*earlier, return_exceptions=True)
            await self.pipeline.end(frame.dialogue_id)
            self.metrics.count(ENDPOINT, "ok")
            return {"type": "ended", "dialogue_id": frame.dialogue_id}
        except (ServiceError, StoreError) as failure:
            err = as_service_error(failure)
            count_failure(self.metrics, err.kind, ENDPOINT)
            return error_frame(err, None, frame.dialogue_id)
        finally:
            appended.set()

    # --- writing -----------------------------------------------------------------------------------
    async def _write(self) -> None:
        while True:
            item = await self._pending.get()
            self._room.set()
            if item is None:
                return
            reply = await item
            followers = reply.pop(FOLLOWED_BY, ())
            for frame in (reply, *followers):  # a turn's alerts right after its scores
                await self.ws.send_text(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))
