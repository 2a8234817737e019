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
        )
    return MemoryStore(ttl_s=settings.window_ttl_s, feedback_maxlen=settings.feedback_maxlen)
