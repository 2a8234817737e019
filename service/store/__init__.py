"""Window stores: one contract (:mod:`service.store.base`) with its own errors
(:mod:`service.store.errors`), an embedded and a Redis implementation, and :func:`open_store`
(:mod:`service.store.factory`), which picks one from the settings."""

from service.store.base import AppendResult, DialogueState, StoredTurn, WindowStore
from service.store.errors import StoreError, StoreErrorKind
from service.store.factory import open_store

__all__ = [
    "AppendResult",
    "DialogueState",
    "StoreError",
    "StoreErrorKind",
    "StoredTurn",
    "WindowStore",
    "open_store",
]
