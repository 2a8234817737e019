"""Fan-out of call events to this replica's ``WS /v1/events`` subscribers.

One reader task per replica follows the store's event streams (Redis streams, so a subscriber sees
the events of calls scored on every replica; the embedded store's own list on a single one) and hands
each event to the subscribers whose filter takes it. A subscriber that does not keep up loses its
oldest undelivered events (counted in ``turnwise_events_dropped_total``), never slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.alerts.rules import Severity
from service.store.errors import StoreError

if TYPE_CHECKING:
    from service.metrics import Metrics
    from service.store.base import WindowStore

log = logging.getLogger("turnwise.service")
EVENT_TYPES = ("alert", "turn", "ended")
SUBSCRIBER_QUEUE = 1000
BLOCK_S = 0.5


@dataclass
class EventFilter:
    dialogue_id: str | None = None
    severity: Severity = Severity.info  # the least severe alert delivered
    types: frozenset[str] = frozenset({"alert"})

    def takes(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind not in self.types:
            return False
        if self.dialogue_id is not None and event.get("dialogue_id") != self.dialogue_id:
            return False
        if kind == "alert":
            try:
                return Severity[event.get("severity", "info")] >= self.severity
            except KeyError:
                return False
        return True


@dataclass(eq=False)
class Subscription:
    filter: EventFilter
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    dropped: int = 0


class EventHub:
    def __init__(self, store: WindowStore, metrics: Metrics):
        self.store, self.metrics = store, metrics
        self._subs: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None

    def subscribe(self, flt: EventFilter) -> Subscription:
        sub = Subscription(flt)
        self._subs.add(sub)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._follow(), name="turnwise-events")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def dispatch(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for sub in list(self._subs):
                if not sub.filter.takes(event):
                    continue
                if sub.queue.full():  # a slow reader loses its oldest event, not the newest
                    sub.queue.get_nowait()
                    sub.dropped += 1
                    self.metrics.events_dropped.inc()
                sub.queue.put_nowait(event)

    async def _follow(self) -> None:
        cursor: Any = None
        while True:
            try:
                cursor, events = await self.store.read_events(cursor, BLOCK_S)
            except StoreError as err:
                log.warning("event stream read failed: %s", err)
                await asyncio.sleep(1.0)
                continue
            self.dispatch(events)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
