"""Which window store a service gets: Redis when ``redis_url`` is set, the embedded store otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.store.base import WindowStore
from service.store.memory import MemoryStore
from service.store.redis import RedisStore

if TYPE_CHECKING:
    from service.config import Settings


def open_store(settings: Settings) -> WindowStore:
    """Redis when ``settings.redis_url`` is set, the embedded store otherwise."""
    if settings.redis_url:
        return RedisStore(
            settings.redis_url,
            prefix=settings.key_prefix,
            ttl_s=settings.window_ttl_s,
            timeout_s=settings.redis_timeout_s,
            feedback_maxlen=settings.feedback_maxlen,
            call_timeout_s=settings.latency_budget_ms / 1000.0,
            events_maxlen=settings.events_maxlen,
            turn_events_maxlen=settings.turn_events_maxlen,
        )
    return MemoryStore(ttl_s=settings.window_ttl_s, feedback_maxlen=settings.feedback_maxlen,
                       events_maxlen=settings.events_maxlen)
