"""Prometheus metrics, all named ``turnwise_*`` after the Prometheus naming conventions (base units,
``_total`` counters, ``_duration_seconds`` latency histograms), plus the standard ``process_*``,
``python_gc_*`` and ``python_info`` series.

Each app owns its own :class:`~prometheus_client.CollectorRegistry` (several apps live in one test
process).

- ``turnwise_requests_total{endpoint, outcome}`` counts every answered API request once, failures
  included: every /v1 HTTP request and every WebSocket frame (probes and /metrics are not counted).
  ``endpoint`` is one of :data:`ENDPOINTS`; ``outcome`` is ``scored`` / ``duplicate`` (a turn scored,
  or answered from its stored result), ``ok`` (any other success) or the error kind of the failure
  (``service.errors.ErrorKind``: ``overloaded`` = 429, ``deadline_exceeded`` = 504, ...). Error ratio:
  ``sum(rate(turnwise_requests_total{outcome=~"<5xx kinds>"}[5m])) / sum(rate(turnwise_requests_total[5m]))``.
- ``turnwise_request_duration_seconds{endpoint}``: end-to-end time of a scored turn (the latency SLI).
- ``turnwise_stage_duration_seconds{stage}``: one histogram split by stage: queue (waiting for a batch),
  store (window append / result write), tokenize (window formatter + tokenizer), inference (the model
  call of the batch the request rode in). The same numbers come back to the client in ``timings_ms``.
- Streaming bundles: ``turnwise_state_cache_lookups_total{result}`` (a call's cached keys/values
  found or not), ``turnwise_stream_steps_total{mode}`` (incremental / rebuilt / cached turns),
  ``turnwise_state_cache_evictions_total``, ``turnwise_state_cache_bytes``, ``turnwise_state_cache_entries``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

PREFIX = "turnwise_"
STAGES = ("queue", "store", "tokenize", "inference")
# 0.5 ms .. 5 s: the interesting range is 1-100 ms (the p99 target is 100 ms). The latency SLO's
# threshold (the chart's metrics.prometheusRule.slo.latencySeconds) must be one of these bounds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

# The endpoint label of turnwise_requests_total, from the request path. None: not counted (probes, metrics).
ENDPOINTS = ("turns", "dialogue", "score", "stream", "feedback", "admin", "other")
_ENDPOINT_PATHS = (
    (re.compile(r"^/v1/dialogues/[^/]+/turns/?$"), "turns"),
    (re.compile(r"^/v1/dialogues/[^/]+/?$"), "dialogue"),
    (re.compile(r"^/v1/score/?$"), "score"),
    (re.compile(r"^/v1/stream/?$"), "stream"),
    (re.compile(r"^/v1/feedback/?$"), "feedback"),
    (re.compile(r"^/v1/admin(/.*)?$"), "admin"),
)
UNCOUNTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def endpoint_of(path: str) -> str | None:
    """The ``endpoint`` label for a request path; None for the probes and /metrics."""
    if path in UNCOUNTED_PATHS:
        return None
    for pattern, name in _ENDPOINT_PATHS:
        if pattern.match(path):
            return name
    return "other"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # CPU seconds, RSS, open fds, start time (Linux /proc), GC runs per generation, the Python version.
        for collector in (ProcessCollector, GCCollector, PlatformCollector):
            collector(registry=r)
        self.requests = Counter(
            PREFIX + "requests_total",
            "API requests answered (every /v1 request and WebSocket frame once), by endpoint and outcome: "
            "scored, duplicate, ok, or the error kind of a failure.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "End-to-end time of a scored turn.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            PREFIX + "stage_duration_seconds",
            "Time per serving stage of a scored turn (queue, store, tokenize, inference).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size", "Sequences per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            PREFIX + "batch_tokens",
            "Real (unpadded) tokens per batch.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_padded_tokens = Histogram(
            PREFIX + "batch_padded_tokens",
            "Tokens the model computed per batch, padding included (sum over its length groups of rows x longest).",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.state_cache = Counter(
            PREFIX + "state_cache_lookups_total",
            "Streaming bundles: lookups of a call's cached keys/values, by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.stream_steps = Counter(
            PREFIX + "stream_steps_total",
            "Streaming bundles: turns scored, by mode: incremental (the new turn over the cache), rebuilt "
            "(the span in one pass: a miss, a re-anchor) or cached (a duplicate retry).",
            ["mode"],
            registry=r,
        )
        self.state_cache_evictions = Counter(
            PREFIX + "state_cache_evictions_total", "Streaming bundles: call states evicted (LRU, byte budget).",
            registry=r,
        )
        self.state_cache_bytes = Gauge(
            PREFIX + "state_cache_bytes", "Streaming bundles: bytes of cached keys/values held.", registry=r
        )
        self.state_cache_entries = Gauge(
            PREFIX + "state_cache_entries", "Streaming bundles: calls with cached keys/values.", registry=r
        )
        self.queue_depth = Gauge(PREFIX + "queue_depth", "Requests waiting for a batch.", registry=r)
        self.inflight = Gauge(PREFIX + "inflight_requests", "Requests admitted into the serving path.", registry=r)
        self.expired = Counter(
            PREFIX + "expired_total", "Requests dropped before inference: deadline passed.", registry=r
        )
        self.model_info = Gauge(
            PREFIX + "model_info",
            "The bundle being served (value 1).",
            ["name", "version", "variant"],
            registry=r,
        )
        self.bundle_loaded = Gauge(
            PREFIX + "bundle_loaded_timestamp_seconds",
            "Unix time the bundle being served was loaded (start or hot reload).",
            registry=r,
        )
        self.reloads = Counter(PREFIX + "reloads_total", "Bundle reload attempts, by result.", ["result"], registry=r)
        self.token_cache = Counter(
            PREFIX + "token_cache_lookups_total",
            "Per-turn tokenizer cache lookups, by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.labels = Counter(
            PREFIX + "labels_total",
            "Labels predicted for scored turns, by task and label (a multilabel task counts each label it predicts).",
            ["task", "label"],
            registry=r,
        )
        self.store_up = Gauge(
            PREFIX + "store_up",
            "1 if the window store answered its last check (readiness ping or a request), 0 if it failed.",
            registry=r,
        )
        self.ws_connections = Gauge(PREFIX + "ws_connections", "Open WebSocket streams.", registry=r)
        self.feedback = Counter(PREFIX + "feedback_total", "Feedback records accepted.", registry=r)
        self.alerts_fired = Counter(
            PREFIX + "alerts_fired_total", "Alerts fired, by rule and severity.", ["rule", "severity"], registry=r
        )
        self.webhook_deliveries = Counter(
            PREFIX + "webhook_deliveries_total",
            "Alert webhook deliveries, by outcome: delivered, retried (an attempt after a failed one), failed "
            "(every attempt, or a 4xx), dropped (the queue was full).",
            ["outcome"],
            registry=r,
        )
        self.events_dropped = Counter(
            PREFIX + "events_dropped_total", "Events a slow /v1/events subscriber did not get (oldest first).",
            registry=r,
        )
        self.monitor_errors = Counter(
            PREFIX + "monitor_errors_total",
            "Scored turns whose alert rules and call aggregates could not be updated (the turn itself succeeded).",
            registry=r,
        )
        self.event_subscribers = Gauge(PREFIX + "event_subscribers", "Open WS /v1/events streams.", registry=r)
        for stage in STAGES:  # export every stage from the start, so dashboards see zeros, not gaps
            self.stage_duration.labels(stage=stage)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        for result in ("hit", "miss"):
            self.token_cache.labels(result=result)
            self.state_cache.labels(result=result)
        for mode in ("incremental", "rebuilt", "cached"):
            self.stream_steps.labels(mode=mode)
        for outcome in ("delivered", "retried", "failed", "dropped"):
            self.webhook_deliveries.labels(outcome=outcome)

    def count(self, endpoint: str | None, outcome: str) -> None:
        """One answered request (``endpoint`` None: a probe, not counted)."""
        if endpoint is not None:
            self.requests.labels(endpoint=endpoint, outcome=outcome).inc()

    def observe_timings(self, endpoint: str, timings_ms: Mapping[str, float]) -> None:
        for stage in STAGES:
            if stage in timings_ms:
                self.stage_duration.labels(stage=stage).observe(timings_ms[stage] / 1000.0)
        if "total" in timings_ms:
            self.request_duration.labels(endpoint=endpoint).observe(timings_ms["total"] / 1000.0)

    def observe_labels(self, labels: Mapping[str, Any]) -> None:
        """The labels of one scored turn: ``{task: label | [labels]}``."""
        for task, predicted in labels.items():
            for label in [predicted] if isinstance(predicted, str) else predicted:
                self.labels.labels(task=task, label=label).inc()

    def set_model(self, name: str, version: str, variant: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, variant=variant).set(1)
        self.bundle_loaded.set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)

