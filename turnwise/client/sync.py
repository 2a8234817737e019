"""The blocking client: :class:`Client` (httpx) and :class:`Call`, one live call over REST."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from turnwise.api import DIALOGUE_PATH, FEEDBACK_PATH, READY_PATH, RELOAD_PATH, SCORE_PATH, TURNS_PATH
from turnwise.client.errors import NotFound, Unreachable
from turnwise.client.http import Request, check_dialogue_id, error_of, headers, retry_wait, score_result, turn_dicts
from turnwise.client.retry import RetryPolicy
from turnwise.messages import DialogueOut, FeedbackOut, ReadyOut, ReloadOut, ScoreAllResult, ScoreResult, TurnResult


class Client:
    """A turnwise service over HTTP. ``url`` is the service root (``http://host:8080``).

    Requests that fail with 429 or 503, or whose connection fails, are sent again per ``retry`` (a
    :class:`~turnwise.client.retry.RetryPolicy`), waiting ``Retry-After`` when the service sends one;
    any other error is raised at once as the :class:`~turnwise.client.errors.APIError` of its kind.
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", *, api_key: str | None = None, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None,
                 extra_headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=self.url, headers=headers(api_key, extra_headers), timeout=timeout,
                                  transport=transport, trust_env=False)

    # --- plumbing ------------------------------------------------------------------------------
    def request(self, req: Request) -> httpx.Response:
        """Send ``req`` with the retry policy; the 2xx answer, or the typed error of the last answer."""
        retry = 0
        while True:
            resp: httpx.Response | None = None
            err: httpx.TransportError | None = None
            try:
                resp = self._http.request(req.method, req.path, json=req.json, params=req.params)
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
            time.sleep(wait)
            retry += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the API -------------------------------------------------------------------------------
    def call(self, dialogue_id: str | None = None, *, next_seq: int = 0) -> Call:
        """A live call (a new random id when none is given); its turns get seq ``next_seq``, +1, ..."""
        return Call(self, dialogue_id or f"call-{uuid.uuid4().hex[:16]}", next_seq=next_seq)

    def score(self, turns: Iterable[Any], *, all: bool = False) -> ScoreResult | ScoreAllResult:
        """Stateless: scores of the last turn (``all``: of every turn, each with its own window)."""
        resp = self.request(Request("POST", SCORE_PATH, json={"turns": turn_dicts(turns), "all": all}))
        return score_result(resp.json(), all)

    def send_turn(self, dialogue_id: str, seq: int, speaker: str, text: str) -> TurnResult:
        check_dialogue_id(dialogue_id)
        resp = self.request(Request("POST", TURNS_PATH.format(dialogue_id=dialogue_id),
                                    json={"seq": seq, "speaker": speaker, "text": text}, seq=seq,
                                    dialogue_id=dialogue_id))
        return TurnResult.model_validate(resp.json())

    def dialogue(self, dialogue_id: str) -> DialogueOut:
        """The call's window and last result (:class:`~turnwise.client.errors.NotFound` when gone)."""
        check_dialogue_id(dialogue_id)
        resp = self.request(Request("GET", DIALOGUE_PATH.format(dialogue_id=dialogue_id), dialogue_id=dialogue_id))
        return DialogueOut.model_validate(resp.json())

    def end(self, dialogue_id: str) -> None:
        check_dialogue_id(dialogue_id)
        self.request(Request("DELETE", DIALOGUE_PATH.format(dialogue_id=dialogue_id), dialogue_id=dialogue_id))

    def feedback(self, dialogue_id: str, seq: int, task: str, label: str | list[str]) -> FeedbackOut:
        """A corrected label for the training sidecar (not retried after an answer: it is not idempotent)."""
        check_dialogue_id(dialogue_id)
        body = {"dialogue_id": dialogue_id, "seq": seq, "task": task, "label": label}
        resp = self.request(Request("POST", FEEDBACK_PATH, json=body, idempotent=False, seq=seq,
                                    dialogue_id=dialogue_id))
        return FeedbackOut.model_validate(resp.json())

    def ready(self) -> ReadyOut:
        """Readiness (raises ModelUnavailable / StoreUnavailable after the retries)."""
        return ReadyOut.model_validate(self.request(Request("GET", READY_PATH)).json())

    def reload(self, *, force: bool = False) -> ReloadOut:
        resp = self.request(Request("POST", RELOAD_PATH, params={"force": str(force).lower()}, idempotent=False))
        return ReloadOut.model_validate(resp.json())

    def stream(self, **kw: Any) -> Any:
        """A WebSocket stream (:class:`turnwise.client.sync_stream.Stream`), with this client's url and key."""
        from turnwise.client.sync_stream import Stream

        kw.setdefault("api_key", self.api_key)
        kw.setdefault("retry", self.retry)
        kw.setdefault("timeout", self.timeout)
        return Stream(self.url, **kw)


class Call:
    """One live call over REST: assigns each turn the next seq; ``with`` ends the call on exit.

    A failed turn still uses up its seq (the service may have stored it, and gaps are allowed), so the
    next turn never collides with it; resend a failed turn with ``send(..., seq=err.seq)``.
    """

    def __init__(self, client: Client, dialogue_id: str, *, next_seq: int = 0):
        self.client = client
        self.dialogue_id = check_dialogue_id(dialogue_id)
        self.next_seq = next_seq
        self.results: list[TurnResult] = []

    def send(self, speaker: str, text: str, *, seq: int | None = None) -> TurnResult:
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        result = self.client.send_turn(self.dialogue_id, seq, speaker, text)
        self.results.append(result)
        return result

    def resume(self) -> int:
        """Continue a call the service already knows (e.g. after a client restart): next_seq = last seq + 1
        (unchanged when the service does not know the call)."""
        try:
            state = self.client.dialogue(self.dialogue_id)
        except NotFound:  # unknown, ended or expired: a new call from next_seq
            return self.next_seq
        self.next_seq = max(self.next_seq, (state.last_seq if state.last_seq is not None else -1) + 1)
        return self.next_seq

    def state(self) -> DialogueOut:
        return self.client.dialogue(self.dialogue_id)

    def feedback(self, seq: int, task: str, label: str | list[str]) -> FeedbackOut:
        return self.client.feedback(self.dialogue_id, seq, task, label)

    def end(self) -> None:
        self.client.end(self.dialogue_id)

    def __enter__(self) -> Call:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
