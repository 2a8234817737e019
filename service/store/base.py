"""The window store contract.

A dialogue's state is its rolling window (the last ``max_turns`` turns, oldest first) and a meta
record: ``last_seq``, the digest of the last turn (:func:`turnwise.names.turn_digest` of speaker +
text) and the last result. :meth:`WindowStore.append` is atomic and idempotent on ``(dialogue_id, seq)``:

- ``seq > last_seq`` (or a new dialogue): append, trim to ``max_turns``, refresh the TTL -> "appended"
  (a streaming bundle's window is trimmed by its span anchor, see :meth:`WindowStore.set_result`;
  ``max_turns`` is then only a cap);
- ``seq == last_seq`` and the same speaker and text: nothing is added -> "duplicate" (with the stored
  result when the first request finished);
- ``seq == last_seq`` with other text, or ``seq < last_seq``: :class:`StoreError` ``conflict``.

Either way the window returned ends with the turn at ``seq``, read in the same atomic step, so a
concurrent later turn can never leak into this turn's window. A store that cannot be reached raises
:class:`StoreError` ``unavailable``. The stored-turn format (:class:`StoredTurn`) and the Redis key
layout belong to :mod:`turnwise.names`; which implementation a service gets is
:func:`service.store.factory.open_store`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from service.store.errors import StoreError, StoreErrorKind
from turnwise.names import StoredTurn

# The contract: its types, the stored-turn format and the errors every method may raise.
__all__ = ["AppendResult", "DialogueState", "MonitorWrite", "StoreError", "StoreErrorKind", "StoredTurn",
           "WindowStore"]


@dataclass
class AppendResult:
    status: Literal["appended", "duplicate"]
    window: list[StoredTurn]  # oldest first; the last one is the turn at ``seq``
    result: dict[str, Any] | None = None  # the stored result of a duplicate, when there is one
    anchor: int | None = None  # streaming bundles: seq of the current span's first turn, when recorded
    monitor: dict[str, Any] | None = None  # the call's alert/aggregate state, as of this append


@dataclass
class DialogueState:
    dialogue_id: str
    window: list[StoredTurn]
    last_seq: int | None
    result: dict[str, Any] | None
    model: str | None
    monitor: dict[str, Any] | None = None


@dataclass
class MonitorWrite:
    """What :meth:`WindowStore.put_monitor` did: ``ok`` (stored), ``stale`` (another write got there first:
    ``current`` is the stored state to evaluate from again) or ``gone`` (the call ended or expired)."""

    status: Literal["ok", "stale", "gone"]
    current: dict[str, Any] | None = None


class WindowStore(ABC):
    """Where every call's state lives; replicas are stateless when this is Redis."""

    kind: str

    @abstractmethod
    async def append(self, dialogue_id: str, seq: int, speaker: str, text: str, *, max_turns: int) -> AppendResult:
        """Atomic append + dedupe + trim + TTL refresh; see the module docstring."""

    @abstractmethod
    async def set_result(self, dialogue_id: str, seq: int, result: dict[str, Any], model: str,
                         anchor: int | None = None) -> bool:
        """Store the result of ``seq`` if it is still the last turn (a later turn's result wins).

        ``anchor`` (streaming bundles): the seq of the first turn of the span that scored ``seq``. It is
        recorded whatever the result's fate when it belongs to this call (``anchor <= seq <= last_seq``;
        the later of the stored and the given one wins) and the window drops its turns before it: a
        streaming window holds exactly the turns of its span."""

    @abstractmethod
    async def get(self, dialogue_id: str) -> DialogueState | None:
        """The window and last result, or None for an unknown (or expired) dialogue."""

    @abstractmethod
    async def delete(self, dialogue_id: str) -> bool:
        """Forget a dialogue (end of call). True if there was something to delete."""

    @abstractmethod
    async def add_feedback(self, record: dict[str, str]) -> str:
        """Append a feedback record to the stream the training sidecar consumes; returns its id."""

    # --- call monitor: alert state, events, live calls (service.alerts) ---------------------------
    @abstractmethod
    async def put_monitor(self, dialogue_id: str, base_seq: int, state: dict[str, Any]) -> MonitorWrite:
        """Store the call's monitor state if the stored one is still the one evaluated from (its ``seq`` is
        ``base_seq``, -1 for none) and the call is live: a compare-and-set, so two writers never both win."""

    @abstractmethod
    async def publish(self, events: list[dict[str, Any]], live: tuple[str, float] | None = None) -> None:
        """Append events to their streams (``turn`` events to the turn stream, the rest to the events
        stream, both bounded) and, with ``live`` = (dialogue_id, unix time), mark the call live."""

    @abstractmethod
    async def live_calls(self, limit: int) -> list[DialogueState]:
        """Live calls with their monitor state, most recently scored first."""

    @abstractmethod
    async def read_events(self, cursor: Any, block_s: float) -> tuple[Any, list[dict[str, Any]]]:
        """Events published after ``cursor`` (None: from now on), waiting up to ``block_s`` for the first;
        returns the new cursor and the events, oldest first."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreError` ``unavailable`` if the store cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook: the embedded store holds no resources
        """Release connections."""

