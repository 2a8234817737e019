"""The window store contract (DESIGN §6).

A dialogue's state is its rolling window (the last ``max_turns`` turns, oldest first) and a meta
record: ``last_seq``, the fingerprint of the last turn (speaker + text) and the last result.
:meth:`WindowStore.append` is atomic and idempotent on ``(dialogue_id, seq)``:

- ``seq > last_seq`` (or a new dialogue): append, trim to ``max_turns``, refresh the TTL -> "appended";
- ``seq == last_seq`` and the same speaker and text: nothing is added -> "duplicate" (with the stored
  result when the first request finished);
- ``seq == last_seq`` with other text, or ``seq < last_seq``: :class:`ServiceError` ``conflict`` (409).

Either way the window returned ends with the turn at ``seq``, read in the same atomic step, so a
concurrent later turn can never leak into this turn's window.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from service.errors import ErrorKind, ServiceError


@dataclass(frozen=True)
class StoredTurn:
    seq: int
    speaker: str
    text: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "speaker": self.speaker, "text": self.text}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredTurn:
        d = json.loads(raw)
        return cls(seq=int(d["seq"]), speaker=str(d["speaker"]), text=str(d["text"]))

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "speaker": self.speaker, "text": self.text}


@dataclass
class AppendResult:
    status: Literal["appended", "duplicate"]
    window: list[StoredTurn]  # oldest first; the last one is the turn at ``seq``
    result: dict[str, Any] | None = None  # the stored result of a duplicate, when there is one


@dataclass
class DialogueState:
    dialogue_id: str
    window: list[StoredTurn]
    last_seq: int | None
    result: dict[str, Any] | None
    model: str | None


def fingerprint(speaker: str, text: str) -> str:
    """What makes a retry the same turn: speaker and text (the text as received, after stripping)."""
    return hashlib.sha256(f"{speaker}\x1f{text}".encode()).hexdigest()[:32]


def conflict(dialogue_id: str, seq: int, last_seq: int, *, stale: bool) -> ServiceError:
    if stale:
        msg = f"dialogue '{dialogue_id}': seq {seq} is older than the last seq {last_seq}"
    else:
        msg = f"dialogue '{dialogue_id}': seq {seq} was already sent with a different speaker or text"
    return ServiceError(ErrorKind.conflict, msg)


class WindowStore(ABC):
    """Where every call's state lives; replicas are stateless when this is Redis."""

    kind: str

    @abstractmethod
    async def append(self, dialogue_id: str, seq: int, speaker: str, text: str, *, max_turns: int) -> AppendResult:
        """Atomic append + dedupe + trim + TTL refresh; see the module docstring."""

    @abstractmethod
    async def set_result(self, dialogue_id: str, seq: int, result: dict[str, Any], model: str) -> bool:
        """Store the result of ``seq`` if it is still the last turn (a later turn's result wins)."""

    @abstractmethod
    async def get(self, dialogue_id: str) -> DialogueState | None:
        """The window and last result, or None for an unknown (or expired) dialogue."""

    @abstractmethod
    async def delete(self, dialogue_id: str) -> bool:
        """Forget a dialogue (end of call). True if there was something to delete."""

    @abstractmethod
    async def add_feedback(self, record: dict[str, str]) -> str:
        """Append a feedback record to the stream the training sidecar consumes; returns its id."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``ServiceError(store_unavailable)`` if the store cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook: the embedded store holds no resources
        """Release connections."""


def open_store(settings: Any) -> WindowStore:
    """Redis when ``settings.redis_url`` is set, the embedded store otherwise."""
    if settings.redis_url:
        from service.store.redis import RedisStore

        return RedisStore(
            settings.redis_url,
            prefix=settings.key_prefix,
            ttl_s=settings.window_ttl_s,
            timeout_s=settings.redis_timeout_s,
            feedback_maxlen=settings.feedback_maxlen,
        )
    from service.store.memory import MemoryStore

    return MemoryStore(ttl_s=settings.window_ttl_s, feedback_maxlen=settings.feedback_maxlen)
