"""``WS /v1/stream`` for clients: :class:`AsyncStream` (asyncio); :class:`~turnwise.client.sync_stream.Stream`
wraps it for blocking code.

- Frames go out in the order they are submitted; the service answers every frame once, in that
  order, so each submitted frame gets a future that the matching reply resolves (``scores`` ->
  :class:`~turnwise.messages.ScoresFrame`, ``ended`` -> :class:`~turnwise.messages.EndedFrame`,
  ``error`` -> the typed :class:`~turnwise.client.errors.APIError` raised from the future).
  ``alert`` frames (the alerts a turn fired, right after its scores) are not replies: they go to
  :attr:`AsyncStream.alerts` (the last 1,000) and to :attr:`AsyncStream.on_alert` when set.
- :meth:`AsyncStream.call` gives a :class:`StreamCall` that assigns seq; its ``send`` awaits the reply
  and retries overloaded / unavailable answers per the retry policy (safe: turns are idempotent on
  seq and nothing of that call is in flight behind it); ``submit`` pipelines without retrying.
- When the service closes the socket for a restart (1012, its SIGTERM drain) or the connection drops,
  the stream reconnects (``reconnect=True``) and resends every unanswered frame in order; the service
  answers resent turns from the window store. Otherwise the unanswered futures fail with
  :class:`~turnwise.client.errors.StreamClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from turnwise.api import CLOSE_SERVICE_RESTART, RETRYABLE, STREAM_PATH, SUBPROTOCOL, kind_for_status
from turnwise.client.errors import APIError, ClientError, StreamClosed, Unreachable, api_error
from turnwise.client.http import check_dialogue_id, headers
from turnwise.client.retry import RetryPolicy, parse_retry_after
from turnwise.events import AlertEvent
from turnwise.messages import EndedFrame, ScoresFrame

RECONNECT_CODES = frozenset({CLOSE_SERVICE_RESTART, 1001, 1006, 1011})  # restart, going away, dropped, error


def ws_url(url: str) -> str:
    """``http(s)://host`` (the service root) -> ``ws(s)://host/v1/stream``; a ws(s) URL is kept as it is."""
    base = url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return base if base.endswith(STREAM_PATH) else base + STREAM_PATH


@dataclass
class _Pending:
    raw: str
    future: asyncio.Future[Any]
    dialogue_id: str
    seq: int | None


class AsyncStream:
    """One WebSocket to the service carrying any number of calls. ``async with`` opens and closes it."""

    def __init__(self, url: str = "http://127.0.0.1:8080", *, api_key: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30.0, reconnect: bool = True,
                 max_size: int = 1 << 22):
        self.url = ws_url(url)
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.reconnect = reconnect
        self.max_size = max_size
        self.reconnects = 0  # times the stream reconnected and resent its unanswered frames
        self._ws: ClientConnection | None = None
        self._pending: deque[_Pending] = deque()
        self._sent = 0  # the first _sent pending frames went out on the current connection
        self._gen = 0  # connection generation: a send on an old connection does not count
        self._wake: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed: ClientError | None = None
        # ``alert`` frames are no replies: they follow the scores of the turn that fired them.
        self.alerts: deque[AlertEvent] = deque(maxlen=1000)
        self.on_alert: Callable[[AlertEvent], None] | None = None

    # --- connecting ------------------------------------------------------------------------------
    async def _connect(self) -> ClientConnection:
        retry = 0
        while True:
            try:
                return await connect(self.url, additional_headers=headers(self.api_key),
                                     subprotocols=[Subprotocol(SUBPROTOCOL)], open_timeout=self.timeout,
                                     max_size=self.max_size, proxy=None)
            except InvalidStatus as err:
                resp = err.response
                try:
                    body = json.loads(resp.body or b"{}")
                except ValueError:
                    body = {}
                kind = body.get("error_type") or kind_for_status(resp.status_code).value
                message = str(body.get("error") or f"handshake refused with HTTP {resp.status_code}")
                error = api_error(kind, message, status=resp.status_code,
                                  retry_after=parse_retry_after(resp.headers.get("Retry-After")))
                wait = self.retry.delay(retry, error.retry_after) if error.kind in RETRYABLE else None
                if wait is None:
                    raise error from None
            except (OSError, TimeoutError, InvalidHandshake) as err:
                wait = self.retry.delay(retry)
                if wait is None:
                    raise Unreachable(self.url, err, retry + 1) from err
            await asyncio.sleep(wait)
            retry += 1

    async def open(self) -> AsyncStream:
        if self._ws is not None:
            return self
        self._wake, self._connected = asyncio.Event(), asyncio.Event()
        self._ws = await self._connect()
        self._connected.set()
        self._tasks = [asyncio.create_task(self._read(), name="turnwise-stream-read"),
                       asyncio.create_task(self._write(), name="turnwise-stream-write")]
        return self

    async def __aenter__(self) -> AsyncStream:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close(wait=exc[0] is None)

    # --- submitting -------------------------------------------------------------------------------
    def _submit(self, frame: dict[str, Any], seq: int | None) -> asyncio.Future[Any]:
        if self._closed is not None:
            raise self._closed
        if self._ws is None or self._wake is None:
            raise ClientError("the stream is not open (use `async with client.stream() as stream`)")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        raw = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        self._pending.append(_Pending(raw, future, frame["dialogue_id"], seq))
        self._wake.set()
        return future

    def submit_turn(self, dialogue_id: str, seq: int, speaker: str, text: str) -> asyncio.Future[ScoresFrame]:
        """Send a turn now; the future resolves with its scores (or raises its typed error), in order."""
        check_dialogue_id(dialogue_id)
        return self._submit({"type": "turn", "dialogue_id": dialogue_id, "seq": seq, "speaker": speaker,
                             "text": text}, seq)

    def submit_end(self, dialogue_id: str) -> asyncio.Future[EndedFrame]:
        check_dialogue_id(dialogue_id)
        return self._submit({"type": "end", "dialogue_id": dialogue_id}, None)

    async def send_turn(self, dialogue_id: str, seq: int, speaker: str, text: str) -> ScoresFrame:
        return await asyncio.wait_for(self.submit_turn(dialogue_id, seq, speaker, text), self.timeout)

    async def end(self, dialogue_id: str) -> EndedFrame:
        return await asyncio.wait_for(self.submit_end(dialogue_id), self.timeout)

    def call(self, dialogue_id: str | None = None, *, next_seq: int = 0) -> StreamCall:
        return StreamCall(self, dialogue_id or f"call-{uuid.uuid4().hex[:16]}", next_seq=next_seq)

    @property
    def pending(self) -> int:
        """Frames sent (or queued) and not answered yet."""
        return len(self._pending)

    # --- the connection's two tasks -----------------------------------------------------------------
    async def _write(self) -> None:
        assert self._wake is not None and self._connected is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._sent < len(self._pending):
                await self._connected.wait()
                ws, gen, item = self._ws, self._gen, self._pending[self._sent]
                assert ws is not None
                try:
                    await ws.send(item.raw)
                except ConnectionClosed:
                    break  # the reader reconnects (or fails the pending frames) and wakes us
                if gen == self._gen:
                    self._sent += 1

    async def _read(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                raw = await ws.recv()
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else 1006
                reason = closed.rcvd.reason if closed.rcvd is not None else ""
                if self._closed is None and self.reconnect and code in RECONNECT_CODES:
                    try:
                        await self._reopen()
                        continue
                    except ClientError as err:
                        self._closed = err
                        self._fail_all(err)
                        return
                self._closed = self._closed or StreamClosed(code, reason)
                self._fail_all(self._closed)
                return
            self._resolve(json.loads(raw))

    async def _reopen(self) -> None:
        assert self._connected is not None and self._wake is not None
        self._connected.clear()
        self._gen += 1
        self._sent = 0
        self._ws = await self._connect()
        self.reconnects += 1
        self._connected.set()
        self._wake.set()  # resend every unanswered frame, in order

    def _resolve(self, reply: dict[str, Any]) -> None:
        if reply.get("type") == "alert":
            alert = AlertEvent.model_validate(reply)
            self.alerts.append(alert)
            if self.on_alert is not None:
                self.on_alert(alert)
            return
        if not self._pending:
            return  # nothing asked: not a reply to us
        item = self._pending.popleft()
        self._sent = max(0, self._sent - 1)
        if item.future.done():  # the caller stopped waiting (timeout, cancel)
            return
        kind = reply.get("type")
        if kind == "error":
            seq, wait = reply.get("seq"), reply.get("retry_after_s")
            item.future.set_exception(api_error(str(reply.get("code")), str(reply.get("message", "")),
                                                seq=seq if isinstance(seq, int) else item.seq,
                                                dialogue_id=item.dialogue_id,
                                                retry_after=float(wait) if isinstance(wait, int | float) else None))
        elif kind == "ended":
            item.future.set_result(EndedFrame.model_validate(reply))
        else:
            item.future.set_result(ScoresFrame.model_validate(reply))

    def _fail_all(self, err: ClientError) -> None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(err)
        self._sent = 0

    # --- closing ----------------------------------------------------------------------------------
    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every submitted frame is answered."""
        futures = [p.future for p in self._pending]
        if futures:
            await asyncio.wait(futures, timeout=timeout if timeout is not None else self.timeout)

    async def close(self, *, wait: bool = True) -> None:
        """Close the socket (normal closure); with ``wait``, after the submitted frames are answered."""
        if self._ws is None or self._closed is not None:
            return
        if wait:
            with contextlib.suppress(Exception):
                await self.drain()
        self._closed = StreamClosed(1000, "closed by the client")
        with contextlib.suppress(Exception):
            await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_all(self._closed)


class StreamCall:
    """One live call on a stream: assigns seq, ``send`` awaits each reply (retrying retryable errors)."""

    def __init__(self, stream: AsyncStream, dialogue_id: str, *, next_seq: int = 0):
        self.stream = stream
        self.dialogue_id = check_dialogue_id(dialogue_id)
        self.next_seq = next_seq

    def _take_seq(self, seq: int | None) -> int:
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        return seq

    def submit(self, speaker: str, text: str, *, seq: int | None = None) -> asyncio.Future[ScoresFrame]:
        """Pipelined: send now, the future resolves in order (no retry)."""
        return self.stream.submit_turn(self.dialogue_id, self._take_seq(seq), speaker, text)

    async def send(self, speaker: str, text: str, *, seq: int | None = None) -> ScoresFrame:
        seq = self._take_seq(seq)
        retry = 0
        while True:
            try:
                return await self.stream.send_turn(self.dialogue_id, seq, speaker, text)
            except APIError as err:
                wait = self.stream.retry.delay(retry, err.retry_after) if err.kind in RETRYABLE else None
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            retry += 1

    async def end(self) -> EndedFrame:
        return await self.stream.end(self.dialogue_id)
