"""The blocking WebSocket stream: an :class:`~turnwise.client.stream.AsyncStream` on an event loop in a
daemon thread, with :class:`concurrent.futures.Future` results in frame order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import uuid
from typing import Any

from turnwise.api import RETRYABLE
from turnwise.client.errors import APIError
from turnwise.client.http import check_dialogue_id
from turnwise.client.retry import RetryPolicy
from turnwise.client.stream import AsyncStream
from turnwise.messages import EndedFrame, ScoresFrame


class Stream:
    """The blocking twin of :class:`AsyncStream`: the socket runs on an event loop in a daemon thread.

    ``submit_*`` return :class:`concurrent.futures.Future` objects resolved in frame order; ``send_turn``,
    ``end`` and :class:`SyncStreamCall` block. Use as ``with client.stream() as stream:``.
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", **kw: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="turnwise-stream", daemon=True)
        self._thread.start()
        self._kw = kw
        self.timeout = float(kw.get("timeout", 30.0))
        self.retry: RetryPolicy = kw.get("retry") or RetryPolicy()
        try:
            self._astream: AsyncStream = self._run(self._open(url))
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self, url: str) -> AsyncStream:
        return await AsyncStream(url, **self._kw).open()

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _chain(self, start: Any) -> concurrent.futures.Future[Any]:
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def relay(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                out.cancel()
            elif f.exception() is not None:
                out.set_exception(f.exception())
            else:
                out.set_result(f.result())

        def begin() -> None:
            try:
                start().add_done_callback(relay)
            except BaseException as err:
                out.set_exception(err)

        self._loop.call_soon_threadsafe(begin)
        return out

    def submit_turn(self, dialogue_id: str, seq: int, speaker: str, text: str) -> concurrent.futures.Future[Any]:
        return self._chain(lambda: self._astream.submit_turn(dialogue_id, seq, speaker, text))

    def submit_end(self, dialogue_id: str) -> concurrent.futures.Future[Any]:
        return self._chain(lambda: self._astream.submit_end(dialogue_id))

    def send_turn(self, dialogue_id: str, seq: int, speaker: str, text: str) -> ScoresFrame:
        return self.submit_turn(dialogue_id, seq, speaker, text).result(self.timeout)

    def end(self, dialogue_id: str) -> EndedFrame:
        return self.submit_end(dialogue_id).result(self.timeout)

    def call(self, dialogue_id: str | None = None, *, next_seq: int = 0) -> SyncStreamCall:
        return SyncStreamCall(self, dialogue_id or f"call-{uuid.uuid4().hex[:16]}", next_seq=next_seq)

    @property
    def reconnects(self) -> int:
        return self._astream.reconnects

    def close(self, *, wait: bool = True) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self._astream.close(wait=wait), timeout=self.timeout + 5)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)


class SyncStreamCall:
    """One live call on a blocking :class:`Stream` (see :class:`StreamCall`)."""

    def __init__(self, stream: Stream, dialogue_id: str, *, next_seq: int = 0):
        self.stream = stream
        self.dialogue_id = check_dialogue_id(dialogue_id)
        self.next_seq = next_seq

    def _take_seq(self, seq: int | None) -> int:
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        return seq

    def submit(self, speaker: str, text: str, *, seq: int | None = None) -> concurrent.futures.Future[Any]:
        return self.stream.submit_turn(self.dialogue_id, self._take_seq(seq), speaker, text)

    def send(self, speaker: str, text: str, *, seq: int | None = None) -> ScoresFrame:
        seq = self._take_seq(seq)
        retry = 0
        while True:
            try:
                return self.stream.send_turn(self.dialogue_id, seq, speaker, text)
            except APIError as err:
                wait = self.stream.retry.delay(retry, err.retry_after) if err.kind in RETRYABLE else None
                if wait is None:
                    raise
            time.sleep(wait)
            retry += 1

    def end(self) -> EndedFrame:
        return self.stream.end(self.dialogue_id)
