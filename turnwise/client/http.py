"""What the sync and the async client share: request descriptions, error bodies -> typed errors, inputs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from turnwise import __version__
from turnwise.api import DIALOGUE_ID_PATTERN, kind_for_status
from turnwise.client.errors import APIError, api_error
from turnwise.client.retry import RetryPolicy, parse_retry_after
from turnwise.messages import ScoreAllResult, ScoreResult

USER_AGENT = f"turnwise-client/{__version__}"
_DIALOGUE_ID = re.compile(DIALOGUE_ID_PATTERN)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    # Safe to send again after a 429/503 or a lost answer (turns: idempotent on seq; feedback is not).
    idempotent: bool = True
    seq: int | None = None
    dialogue_id: str | None = None


def headers(api_key: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {"User-Agent": USER_AGENT, **(extra or {})}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def check_dialogue_id(dialogue_id: str) -> str:
    if not isinstance(dialogue_id, str) or not _DIALOGUE_ID.match(dialogue_id):
        raise ValueError(f"dialogue_id must be 1-128 characters of [A-Za-z0-9._:-], got {dialogue_id!r}")
    return dialogue_id


def turn_dicts(turns: Iterable[Any]) -> list[dict[str, str]]:
    """Turns as the API takes them, from objects with ``speaker``/``text`` (e.g. :class:`turnwise.dialogue.Turn`),
    mappings, or ``(speaker, text)`` pairs."""
    out = []
    for t in turns:
        if isinstance(t, Mapping):
            speaker, text = t["speaker"], t["text"]
        elif isinstance(t, tuple | list):
            speaker, text = t
        else:
            speaker, text = t.speaker, t.text
        out.append({"speaker": str(speaker), "text": str(text)})
    if not out:
        raise ValueError("at least one turn is needed")
    return out


def error_of(resp: httpx.Response, req: Request) -> APIError:
    """The typed error of a non-2xx answer (a body without ``error_type``, e.g. a proxy's, goes by status)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error_type" in body:
        kind, message = body["error_type"], str(body.get("error", ""))
    else:
        kind, message = kind_for_status(resp.status_code).value, (resp.text[:200] or resp.reason_phrase)
    return api_error(kind, message, status=resp.status_code,
                     retry_after=parse_retry_after(resp.headers.get("Retry-After")), seq=req.seq,
                     dialogue_id=req.dialogue_id)


def retry_wait(policy: RetryPolicy, retry: int, req: Request, resp: httpx.Response | None,
               err: httpx.TransportError | None) -> float | None:
    """Seconds before sending ``req`` again, or None to give up (answer ``resp`` or transport error ``err``)."""
    if err is not None:
        # Nothing was sent when the connection could not be made: always safe. A lost answer: only if idempotent.
        if not (isinstance(err, httpx.ConnectError | httpx.ConnectTimeout) or req.idempotent):
            return None
        return policy.delay(retry)
    assert resp is not None
    if resp.status_code not in policy.statuses or not req.idempotent:
        return None
    return policy.delay(retry, parse_retry_after(resp.headers.get("Retry-After")))


def score_result(body: Any, all_turns: bool) -> ScoreResult | ScoreAllResult:
    return ScoreAllResult.model_validate(body) if all_turns else ScoreResult.model_validate(body)
