"""The asyncio client: :class:`AsyncClient` (httpx) and :class:`AsyncCall`; streams in :mod:`.stream`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from turnwise.api import DIALOGUE_PATH, FEEDBACK_PATH, READY_PATH, RELOAD_PATH, SCORE_PATH, TURNS_PATH
from turnwise.client.errors import NotFound, Unreachable
from turnwise.client.http import Request, check_dialogue_id, error_of, headers, retry_wait, score_result, turn_dicts
from turnwise.client.retry import RetryPolicy
from turnwise.messages import DialogueOut, FeedbackOut, ReadyOut, ReloadOut, ScoreAllResult, ScoreResult, TurnResult


class AsyncClient:
    """The asyncio twin of :class:`turnwise.client.Client` (same methods, awaited)."""

    def __init__(self, url: str = "http://127.0.0.1:8080", *, api_key: str | None = None, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 extra_headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers(api_key, extra_headers), timeout=timeout,
                                       transport=transport, trust_env=False)

    async def request(self, req: Request) -> httpx.Response:
        retry = 0
        while True:
            resp: httpx.Response | None = None
            err: httpx.TransportError | None = None
            try:
                resp = await self._http.request(req.method, req.path, json=req.json, params=req.params)
            except httpx.TransportError as failure:
                err = failure
            if resp is not None and resp.is_success:
                return resp
            wait = retry_wait(self.retry, retry, req, resp, err)
            if wait is None:
                if err is not None:
                    raise Unreachable(self.url, err, retry + 1) from err
                assert resp is not None
                raise error_of(resp, req)
            await asyncio.sleep(wait)
            retry += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def call(self, dialogue_id: str | None = None, *, next_seq: int = 0) -> AsyncCall:
        return AsyncCall(self, dialogue_id or f"call-{uuid.uuid4().hex[:16]}", next_seq=next_seq)

    async def score(self, turns: Iterable[Any], *, all: bool = False) -> ScoreResult | ScoreAllResult:
        resp = await self.request(Request("POST", SCORE_PATH, json={"turns": turn_dicts(turns), "all": all}))
        return score_result(resp.json(), all)

    async def send_turn(self, dialogue_id: str, seq: int, speaker: str, text: str) -> TurnResult:
        check_dialogue_id(dialogue_id)
        resp = await self.request(Request("POST", TURNS_PATH.format(dialogue_id=dialogue_id),
                                          json={"seq": seq, "speaker": speaker, "text": text}, seq=seq,
                                          dialogue_id=dialogue_id))
        return TurnResult.model_validate(resp.json())

    async def dialogue(self, dialogue_id: str) -> DialogueOut:
        check_dialogue_id(dialogue_id)
        path = DIALOGUE_PATH.format(dialogue_id=dialogue_id)
        return DialogueOut.model_validate((await self.request(Request("GET", path, dialogue_id=dialogue_id))).json())

    async def end(self, dialogue_id: str) -> None:
        check_dialogue_id(dialogue_id)
        await self.request(Request("DELETE", DIALOGUE_PATH.format(dialogue_id=dialogue_id), dialogue_id=dialogue_id))

    async def feedback(self, dialogue_id: str, seq: int, task: str, label: str | list[str]) -> FeedbackOut:
        check_dialogue_id(dialogue_id)
        body = {"dialogue_id": dialogue_id, "seq": seq, "task": task, "label": label}
        resp = await self.request(Request("POST", FEEDBACK_PATH, json=body, idempotent=False, seq=seq,
                                          dialogue_id=dialogue_id))
        return FeedbackOut.model_validate(resp.json())

    async def ready(self) -> ReadyOut:
        return ReadyOut.model_validate((await self.request(Request("GET", READY_PATH))).json())

    async def reload(self, *, force: bool = False) -> ReloadOut:
        resp = await self.request(Request("POST", RELOAD_PATH, params={"force": str(force).lower()},
                                          idempotent=False))
        return ReloadOut.model_validate(resp.json())

    def stream(self, **kw: Any) -> Any:
        """An :class:`~turnwise.client.stream.AsyncStream` (``async with client.stream() as s``)."""
        from turnwise.client.stream import AsyncStream

        kw.setdefault("api_key", self.api_key)
        kw.setdefault("retry", self.retry)
        kw.setdefault("timeout", self.timeout)
        return AsyncStream(self.url, **kw)


class AsyncCall:
    """One live call over REST (asyncio); see :class:`turnwise.client.Call`."""

    def __init__(self, client: AsyncClient, dialogue_id: str, *, next_seq: int = 0):
        self.client = client
        self.dialogue_id = check_dialogue_id(dialogue_id)
        self.next_seq = next_seq
        self.results: list[TurnResult] = []

    async def send(self, speaker: str, text: str, *, seq: int | None = None) -> TurnResult:
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        result = await self.client.send_turn(self.dialogue_id, seq, speaker, text)
        self.results.append(result)
        return result

    async def resume(self) -> int:
        try:
            state = await self.client.dialogue(self.dialogue_id)
        except NotFound:  # unknown, ended or expired: a new call from next_seq
            return self.next_seq
        self.next_seq = max(self.next_seq, (state.last_seq if state.last_seq is not None else -1) + 1)
        return self.next_seq

    async def state(self) -> DialogueOut:
        return await self.client.dialogue(self.dialogue_id)

    async def feedback(self, seq: int, task: str, label: str | list[str]) -> FeedbackOut:
        return await self.client.feedback(self.dialogue_id, seq, task, label)

    async def end(self) -> None:
        await self.client.end(self.dialogue_id)

    async def __aenter__(self) -> AsyncCall:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end()
