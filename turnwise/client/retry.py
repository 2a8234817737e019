"""When the client sends a request again: on 429 and 503 (honouring ``Retry-After``) and on transport
failures, with capped exponential backoff. Retries are safe because turns are idempotent on
(dialogue_id, seq) and every other retried request is a read, a delete or stateless scoring."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from turnwise.api import RETRYABLE_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (1 = never retry). Without a ``Retry-After`` the n-th retry waits
    ``backoff_s * 2**n`` (capped at ``max_backoff_s``, with up to 25 % jitter); a ``Retry-After`` is
    honoured up to ``max_retry_after_s`` (a longer one is not waited for: the error is raised)."""

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 30.0
    statuses: frozenset[int] = RETRYABLE_STATUSES
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("RetryPolicy waits must be >= 0")

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based); None = do not retry."""
        if retry + 1 >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        wait = min(self.max_backoff_s, self.backoff_s * (2**retry))
        return wait * (1 + 0.25 * random.random()) if self.jitter else wait


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
