"""The call monitor: after a turn's result is stored, evaluate the rules and the call aggregates on it,
store the call's new state (compare-and-set), then publish the turn and its alerts.

Turns of one call are evaluated in the order this replica appended them (a ticket per append); the
compare-and-set catches a write from another replica in between, and the turn is evaluated again from
the state it wrote. A turn already evaluated (a retry) fires nothing. Failures here are logged and
counted (``turnwise_monitor_errors_total``) and never fail the turn: its scores are already stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.alerts.evaluate import ScoredTurn, evaluate, turn_event
from service.alerts.hub import EventHub
from service.alerts.rules import RuleSet
from service.alerts.webhooks import WebhookSender
from service.store.errors import StoreError

if TYPE_CHECKING:
    from service.config import Settings
    from service.metrics import Metrics
    from service.store.base import WindowStore

log = logging.getLogger("turnwise.service")
CAS_ATTEMPTS = 4


@dataclass
class Ticket:
    dialogue_id: str
    previous: asyncio.Event | None
    done: asyncio.Event


class CallMonitor:
    def __init__(self, settings: Settings, rules: RuleSet, store: WindowStore, metrics: Metrics):
        self.rules, self.store, self.metrics = rules, store, metrics
        self.trend_task = settings.trend_task
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.webhooks = WebhookSender(settings.webhook_urls, secret, metrics, attempts=settings.webhook_attempts)
        self.hub = EventHub(store, metrics)
        self._tails: dict[str, asyncio.Event] = {}

    def start(self) -> None:
        self.webhooks.start()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.webhooks.stop()

    def ticket(self, dialogue_id: str) -> Ticket:
        """Taken right after the append: this turn is evaluated after the call's turns appended before it."""
        done = asyncio.Event()
        previous = self._tails.get(dialogue_id)
        self._tails[dialogue_id] = done
        return Ticket(dialogue_id, previous, done)

    def release(self, ticket: Ticket) -> None:
        ticket.done.set()
        if self._tails.get(ticket.dialogue_id) is ticket.done:
            del self._tails[ticket.dialogue_id]

    async def observe(self, ticket: Ticket, turn: ScoredTurn, state: dict[str, Any] | None,
                      wait_s: float = 10.0) -> list[dict[str, Any]]:
        """Evaluate ``turn`` from ``state`` (the call state read with its append); the alerts it fired."""
        try:
            if ticket.previous is not None:
                try:
                    await asyncio.wait_for(ticket.previous.wait(), wait_s)
                except asyncio.TimeoutError:
                    log.warning("monitor: previous turn of %s still pending; evaluating out of order",
                                turn.dialogue_id)
            return await self._observe(turn, state)
        except StoreError as err:
            self.metrics.monitor_errors.inc()
            log.warning("monitor: call state of %s not updated: %s", turn.dialogue_id, err)
            return []
        except Exception:
            self.metrics.monitor_errors.inc()
            log.exception("monitor: evaluation failed")
            return []
        finally:
            self.release(ticket)

    async def _observe(self, turn: ScoredTurn, state: dict[str, Any] | None) -> list[dict[str, Any]]:
        for _ in range(CAS_ATTEMPTS):
            outcome = evaluate(self.rules, state, turn, self.trend_task)
            if outcome is None:  # evaluated before: a retry, or another replica got there first
                return []
            new_state, alerts = outcome
            base = -1 if state is None else int(state.get("seq", -1))
            write = await self.store.put_monitor(turn.dialogue_id, base, new_state)
            if write.status == "gone":
                return []
            if write.status == "ok":
                await self._publish(turn, alerts)
                return alerts
            state = write.current
        raise RuntimeError(f"call state of {turn.dialogue_id} kept changing during {CAS_ATTEMPTS} attempts")

    async def _publish(self, turn: ScoredTurn, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            self.metrics.alerts_fired.labels(rule=alert["rule"], severity=alert["severity"]).inc()
            self.webhooks.submit(alert)
        await self.store.publish([turn_event(turn), *alerts], live=(turn.dialogue_id, turn.at))

    async def ended(self, dialogue_id: str) -> None:
        """Tell subscribers a call ended (best effort)."""
        try:
            await self.store.publish([{"type": "ended", "dialogue_id": dialogue_id, "at": round(time.time(), 3)}])
        except StoreError as err:
            log.warning("monitor: end of %s not published: %s", dialogue_id, err)
