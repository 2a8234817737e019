"""Window stores: one contract (:mod:`service.store.base`), an embedded and a Redis implementation."""

from service.store.base import AppendResult, DialogueState, StoredTurn, WindowStore, open_store

__all__ = ["AppendResult", "DialogueState", "StoredTurn", "WindowStore", "open_store"]
