"""The window store's own failures: a closed set of kinds that says nothing about HTTP.

A store raises :class:`StoreError` and nothing else for the failures its contract names;
:mod:`service.errors` maps each :class:`StoreErrorKind` to the service's error kinds (and so to an
HTTP status and a WebSocket error code) in one place.
"""

from __future__ import annotations

from enum import Enum


class StoreErrorKind(str, Enum):
    conflict = "conflict"  # seq older than the last one, or the last seq again with another speaker or text
    unavailable = "unavailable"  # the store cannot be reached or failed (Redis down, timeout, server error)


class StoreError(Exception):
    """A store failure with a kind and a message fit for the client (it never holds turn text)."""

    def __init__(self, kind: StoreErrorKind, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def seq_conflict(dialogue_id: str, seq: int, last_seq: int, *, stale: bool) -> StoreError:
    """``stale``: ``seq < last_seq``; otherwise ``seq == last_seq`` with another speaker or text."""
    if stale:
        msg = f"dialogue '{dialogue_id}': seq {seq} is older than the last seq {last_seq}"
    else:
        msg = f"dialogue '{dialogue_id}': seq {seq} was already sent with a different speaker or text"
    return StoreError(StoreErrorKind.conflict, msg)
