"""The deadline of the request being served, for the store calls made on its behalf.

Admission (:meth:`service.batcher.MicroBatcher.admit`) binds the request's deadline with
:func:`bound_by`; a store that talks over the network bounds every call by :func:`remaining` (the
time left, never more than the store's own cap), so a frozen store costs a request at most its
latency budget instead of a few socket timeouts and retries in a row.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("turnwise_request_deadline", default=None)


@contextlib.contextmanager
def bound_by(deadline: float) -> Iterator[None]:
    """Store calls inside the block end by ``deadline`` (``time.monotonic()`` seconds)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining(cap_s: float) -> float:
    """Seconds a store call may take now: the time left to the bound deadline, at most ``cap_s``
    (``cap_s`` alone outside a request); <= 0 when the budget is already spent."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return cap_s
    return min(cap_s, deadline - time.monotonic())
