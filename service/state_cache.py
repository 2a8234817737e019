"""Per-call streaming state in this process: a least-recently-used cache bounded in bytes.

Keys are ``(bundle key, dialogue id)``: a reloaded bundle never meets the keys/values of the old one.
Values are :class:`bundle.streaming.CallState` (a call's cached keys/values, ~18 KB per token for
MiniLM-L6). Nothing here is the truth -- the Redis window is -- so an evicted or missing state is
rebuilt from it in one pass with the same scores; the budget only trades memory for rebuilds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from bundle.streaming import CallState

Key = tuple[str, str]


@dataclass
class CacheCounts:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class StateCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Key, CallState] = OrderedDict()
        self._sizes: dict[Key, int] = {}
        self.bytes = 0
        self.counts = CacheCounts()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Key) -> CallState | None:
        state = self._items.get(key)
        if state is None:
            self.counts.misses += 1
            return None
        self._items.move_to_end(key)
        self.counts.hits += 1
        return state

    def put(self, key: Key, state: CallState) -> None:
        """Insert or refresh ``key`` (its size re-measured), then evict the least recently used until
        the budget holds. A state larger than the whole budget is not kept."""
        self.discard(key)
        size = state.nbytes
        if size > self.max_bytes:
            self.counts.evictions += 1
            return
        self._items[key] = state
        self._sizes[key] = size
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = self._items.popitem(last=False)
            self.bytes -= self._sizes.pop(old)
            self.counts.evictions += 1

    def discard(self, key: Key) -> None:
        if key in self._items:
            del self._items[key]
            self.bytes -= self._sizes.pop(key)

    def keep_only(self, bundle_key: str) -> None:
        """Drop every state that belongs to another bundle (after a reload)."""
        for key in [k for k in self._items if k[0] != bundle_key]:
            self.discard(key)

    def drop_dialogue(self, dialogue_id: str) -> None:
        for key in [k for k in self._items if k[1] == dialogue_id]:
            self.discard(key)
