"""The serving path shared by REST and WebSocket.

validate -> admit -> append to window (atomic, idempotent) -> window formatter + tokenizer ->
micro-batcher -> model -> store the result -> respond, with the time of each stage in ``timings_ms``,
in the ``turnwise_stage_duration_seconds`` histogram and, when tracing is on, as spans
(:mod:`service.tracing`). Log lines of a turn carry its dialogue id (:mod:`service.logs`); its text
only with ``TURNWISE_LOG_TEXT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.alerts.evaluate import ScoredTurn, listing, summary
from service.errors import ErrorKind, ServiceError
from service.logs import bound_dialogue
from service.schemas import FeedbackIn, ScoreIn
from service.tracing import Tracing, now_ns
from turnwise.tasks import TaskType
from turnwise.window import windows_of

if TYPE_CHECKING:
    from service.alerts.monitor import CallMonitor, Ticket
    from service.config import Settings
    from service.engine import Engine
    from service.metrics import Metrics
    from service.store.base import WindowStore

log = logging.getLogger("turnwise.service")
STEP_MODES = ("incremental", "rebuilt", "cached")  # streaming bundles: how the turn's model time was spent


def _levels(row: dict[str, Any]) -> dict[str, Any]:
    """A hierarchical task's chosen path per level (``{"levels": {task: [{level, label, p}]}}``); nothing
    for bundles without one, so their answers keep their shape."""
    return {"levels": row["levels"]} if "levels" in row else {}


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


class Pipeline:
    def __init__(self, settings: Settings, store: WindowStore, engine: Engine, metrics: Metrics,
                 tracing: Tracing | None = None, monitor: CallMonitor | None = None):
        self.settings = settings
        self.monitor = monitor
        self.tracing = tracing or Tracing()
        self.store = store
        self.engine = engine
        self.batcher = engine.batcher  # admission control (the queue itself is the engine's)
        self.metrics = metrics
        self.budget_s = settings.latency_budget_ms / 1000.0

    def check_text(self, text: str) -> None:
        if len(text) > self.settings.max_text_chars:
            raise ServiceError(
                ErrorKind.too_large,
                f"text has {len(text)} characters; the limit is {self.settings.max_text_chars}",
            )

    def _log_turn(self, dialogue_id: str, seq: int, text: str) -> None:
        if self.settings.log_text:
            log.info("turn %s/%d text=%r", dialogue_id, seq, text, extra={"seq": seq, "text": text})

    async def score_turn(
        self,
        dialogue_id: str,
        seq: int,
        speaker: str,
        text: str,
        *,
        endpoint: str,
        on_appended: Callable[[], None] | None = None,
        on_alerts: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> dict[str, Any]:
        """Append one turn and score it. ``on_appended`` fires once the store has ordered the turn
        (or it failed), so a WebSocket can keep several turns in flight without reordering them;
        ``on_alerts`` gets the alerts the turn fired (after its result is stored)."""
        attributes: dict[str, str | int] = {"turnwise.dialogue_id": dialogue_id, "turnwise.seq": seq,
                                            "turnwise.endpoint": endpoint}
        with bound_dialogue(dialogue_id), self.tracing.span("score_turn", attributes) as span:
            body = await self._score_turn(dialogue_id, seq, speaker, text, endpoint=endpoint, on_appended=on_appended,
                                          on_alerts=on_alerts)
            if span is not None:
                span.set_attribute("turnwise.model.version", body["model"]["version"])
            log.debug("turn scored", extra={"seq": seq, "endpoint": endpoint, "total_ms": body["timings_ms"]["total"]})
            return body

    async def _score_turn(
        self,
        dialogue_id: str,
        seq: int,
        speaker: str,
        text: str,
        *,
        endpoint: str,
        on_appended: Callable[[], None] | None,
        on_alerts: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        ticket: Ticket | None = None
        deadline = time.monotonic() + self.budget_s
        try:
            self.check_text(text)
            self._log_turn(dialogue_id, seq, text)
            with self.batcher.admit():
                bundle = self.engine.current
                t = time.perf_counter()
                try:
                    with self.tracing.span("store.append"):
                        appended = await self.store.append(
                            dialogue_id, seq, speaker, text, max_turns=bundle.window.store_turns
                        )
                    if self.monitor is not None:  # before the next frame may append: tickets in append order
                        ticket = self.monitor.ticket(dialogue_id)
                finally:
                    if on_appended is not None:
                        on_appended()
                        on_appended = None
                store_ms = _ms(t)
                if appended.status == "duplicate" and appended.result is not None:
                    # Evaluated again only if it never was (a replica died between result and monitor).
                    await self._watch(ticket, speaker, text, appended.result, appended.monitor, on_alerts)
                    ticket = None
                    timings = {"store": store_ms, "total": _ms(started)}
                    self._observe(endpoint, "duplicate", timings)
                    return {**appended.result, "timings_ms": timings}
                submitted = now_ns()
                try:
                    row, batch_timings, anchor, window_turns = await self.engine.score(
                        bundle, dialogue_id, appended.window, appended.anchor, deadline)
                except ServiceError as err:  # an expired turn's store time counts too (its queue: the batcher)
                    if err.kind is ErrorKind.deadline_exceeded:
                        self.metrics.observe_timings(endpoint, {"store": store_ms})
                    raise
                tokenize_ms = batch_timings.pop("tokenize")
                tokenized = submitted + int(tokenize_ms * 1e6)
                self.tracing.record("tokenize", submitted, tokenized)
                self.tracing.record_batch(tokenized, batch_timings)
                body = {
                    "dialogue_id": dialogue_id,
                    "seq": seq,
                    "scores": row["scores"],
                    "labels": row["labels"],
                    **_levels(row),
                    "model": {"name": str(bundle.name), "version": str(bundle.version)},
                    "window_turns": window_turns,
                }
                t = time.perf_counter()
                with self.tracing.span("store.set_result"):
                    await self.store.set_result(dialogue_id, seq, body, f"{bundle.name}@{bundle.version}",
                                                anchor=anchor)
                store_ms += _ms(t)
                await self._watch(ticket, speaker, text, body, appended.monitor, on_alerts)
                ticket = None
        finally:
            if on_appended is not None:
                on_appended()
            if ticket is not None and self.monitor is not None:
                self.monitor.release(ticket)
        timings = {
            "store": store_ms,
            "tokenize": tokenize_ms,
            "queue": batch_timings["queue"],
            "inference": batch_timings["inference"],
            **{m: batch_timings[m] for m in STEP_MODES if m in batch_timings},
            "total": _ms(started),
        }
        self._observe(endpoint, "scored", timings)
        self.metrics.observe_labels(row["labels"])
        return {**body, "timings_ms": timings}

    async def _watch(self, ticket: Ticket | None, speaker: str, text: str, body: dict[str, Any],
                     state: dict[str, Any] | None, on_alerts: Callable[[list[dict[str, Any]]], None] | None) -> None:
        """Rules and call aggregates on the stored result (:mod:`service.alerts.monitor`)."""
        if ticket is None or self.monitor is None:
            return
        turn = ScoredTurn(body["dialogue_id"], int(body["seq"]), speaker, text, body["labels"], body["scores"],
                          time.time())
        with self.tracing.span("monitor"):
            alerts = await self.monitor.observe(ticket, turn, state)
        if alerts and on_alerts is not None:
            on_alerts(alerts)

    async def score(self, req: ScoreIn) -> dict[str, Any]:
        """Stateless scoring of a list of turns: the last one, or every one with ``all``."""
        started = time.perf_counter()
        deadline = time.monotonic() + self.budget_s
        if len(req.turns) > self.settings.max_turns_per_request:
            raise ServiceError(
                ErrorKind.too_large,
                f"{len(req.turns)} turns in one request; the limit is {self.settings.max_turns_per_request}",
            )
        for turn in req.turns:
            self.check_text(turn.text)
        bundle = self.engine.current
        if bundle.streaming:
            return await self._score_streaming(bundle, req, started, deadline)
        windows = windows_of(req.turns, bundle.window) if req.all else [req.turns]
        with self.tracing.span("score", {"turnwise.endpoint": "score", "turnwise.windows": len(windows)}), \
                self.batcher.admit(weight=len(windows)):
            t = time.perf_counter()
            with self.tracing.span("tokenize"):
                all_ids = self.engine.encode(bundle, windows)
            tokenize_ms = _ms(t)
            # Submitted together, so they share batches.
            submitted = now_ns()
            rows = await asyncio.gather(*(self.batcher.submit(bundle, ids, deadline) for ids in all_ids))
            slowest = max((bt for _, bt in rows), key=lambda bt: bt["queue"] + bt["inference"])
            self.tracing.record_batch(submitted, slowest)
        model = {"name": str(bundle.name), "version": str(bundle.version)}
        timings = {
            "tokenize": tokenize_ms,
            "queue": max(bt["queue"] for _, bt in rows),
            "inference": max(bt["inference"] for _, bt in rows),
            "total": _ms(started),
        }
        scored = [(row, min(len(w), bundle.window.max_turns)) for (row, _), w in zip(rows, windows, strict=True)]
        return self._score_body(scored, model, timings, every=req.all)

    def _score_body(self, scored: list[tuple[dict[str, Any], int]], model: dict[str, str],
                    timings: dict[str, float], *, every: bool) -> dict[str, Any]:
        """The /v1/score answer from (decoded row, turns the model saw) per scored turn."""
        self._observe("score", "scored", timings)
        outs = []
        for row, seen in scored:
            self.metrics.observe_labels(row["labels"])
            outs.append({"scores": row["scores"], "labels": row["labels"], **_levels(row), "model": model,
                         "window_turns": seen})
        if every:
            return {"turns": [{k: v for k, v in o.items() if k != "model"} for o in outs], "model": model,
                    "timings_ms": timings}
        return {**outs[-1], "timings_ms": timings}

    async def _score_streaming(self, bundle: Any, req: ScoreIn, started: float, deadline: float) -> dict[str, Any]:
        """/v1/score with a streaming bundle: one pass per span (the last span only without ``all``)."""
        n_spans = len(req.turns) if req.all else 1  # admission weight: at most one pass per turn
        with self.tracing.span("score", {"turnwise.endpoint": "score"}), self.batcher.admit(weight=n_spans):
            t = time.perf_counter()
            rows = await self.engine.streams.score_dialogue(bundle, req.turns, deadline, every=req.all)
            model_ms = _ms(t)
        model = {"name": str(bundle.name), "version": str(bundle.version)}
        return self._score_body(rows, model, {"inference": model_ms, "total": _ms(started)}, every=req.all)

    async def dialogue(self, dialogue_id: str) -> dict[str, Any]:
        state = await self.store.get(dialogue_id)
        if state is None:
            raise ServiceError(
                ErrorKind.not_found, f"dialogue '{dialogue_id}' not found (never seen, ended or expired)"
            )
        return {
            "dialogue_id": dialogue_id,
            "last_seq": state.last_seq,
            "window": [t.as_dict() for t in state.window],
            "last_result": state.result,
            "model": state.model,
            "summary": summary(state.monitor),
        }

    async def live_calls(self, limit: int) -> dict[str, Any]:
        """Live calls (scored within the window TTL, not ended), most recently scored first."""
        calls = await self.store.live_calls(limit)
        return {"dialogues": [listing(c.dialogue_id, c.monitor or {}, c.last_seq) for c in calls]}

    async def end(self, dialogue_id: str) -> None:
        existed = await self.store.delete(dialogue_id)
        self.engine.forget(dialogue_id)
        if existed and self.monitor is not None:
            await self.monitor.ended(dialogue_id)

    async def feedback(self, fb: FeedbackIn) -> tuple[str, bool]:
        """Append the feedback to the stream; returns (entry id, whether the turn's window was attached)."""
        bundle = self.engine.current
        task = bundle.schema.tasks.get(fb.task)
        if task is None:
            raise ServiceError(ErrorKind.invalid, f"unknown task '{fb.task}' (model has {bundle.schema.names()})")
        labels = [fb.label] if isinstance(fb.label, str) else list(fb.label)
        if task.type is not TaskType.multilabel and len(labels) != 1:
            raise ServiceError(ErrorKind.invalid, f"task '{fb.task}' takes exactly one label")
        unknown = [lab for lab in labels if lab not in task.labels]
        if unknown:
            raise ServiceError(
                ErrorKind.invalid,
                f"unknown label(s) {unknown} for task '{fb.task}' (expected one of {task.labels})",
            )
        record = {
            "dialogue_id": fb.dialogue_id,
            "seq": str(fb.seq),
            "task": fb.task,
            "label": fb.label if isinstance(fb.label, str) else ",".join(labels),
            "model": f"{bundle.name}@{bundle.version}",
        }
        # The window as the model saw it for this turn, stored with the feedback: the sidecar joins from
        # this snapshot, so later turns trimming the window, the call's end or the TTL cannot lose it.
        state = await self.store.get(fb.dialogue_id)
        context = [t.as_dict() for t in state.window if t.seq <= fb.seq] if state else []
        if context and context[-1]["seq"] == fb.seq:
            record["window"] = json.dumps(context, ensure_ascii=False)
        entry_id = await self.store.add_feedback(record)
        self.metrics.feedback.inc()
        return entry_id, "window" in record

    def _observe(self, endpoint: str, outcome: str, timings: dict[str, float]) -> None:
        self.metrics.count(endpoint, outcome)
        self.metrics.observe_timings(endpoint, timings)
        if "store" in timings:
            self.metrics.store_up.set(1)
