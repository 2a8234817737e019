"""Prometheus metrics, all named ``turnwise_*``; latencies are histograms in seconds.

Each app owns its own :class:`~prometheus_client.CollectorRegistry` (several apps live in one test
process). Stage latencies share one histogram split by ``stage``: queue (waiting for a batch), store
(window append / result write), tokenize (window formatter + tokenizer), inference (the model call of
the batch the request rode in). The same numbers come back to the client in ``timings_ms``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "turnwise_"
STAGES = ("queue", "store", "tokenize", "inference")
# 0.5 ms .. 5 s: the interesting range is 1-100 ms (the p99 target is 100 ms).
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


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests_total",
            "Scoring requests answered, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.failures = Counter(PREFIX + "failures_total", "Failures answered, by error kind.", ["kind"], registry=r)
        self.request_seconds = Histogram(
            PREFIX + "request_seconds",
            "End-to-end time of a scored turn.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            PREFIX + "stage_seconds",
            "Time per serving stage of a scored turn.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size", "Sequences per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            PREFIX + "batch_tokens",
            "Tokens per batch, before padding.",
            buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
            registry=r,
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
        self.reloads = Counter(PREFIX + "reloads_total", "Bundle reload attempts, by result.", ["result"], registry=r)
        self.ws_connections = Gauge(PREFIX + "ws_connections", "Open WebSocket streams.", registry=r)
        self.feedback = Counter(PREFIX + "feedback_total", "Feedback records accepted.", registry=r)
        for stage in STAGES:  # export every stage from the start, so dashboards see zeros, not gaps
            self.stage_seconds.labels(stage=stage)

    def observe_timings(self, endpoint: str, timings_ms: dict[str, float]) -> None:
        for stage in STAGES:
            if stage in timings_ms:
                self.stage_seconds.labels(stage=stage).observe(timings_ms[stage] / 1000.0)
        if "total" in timings_ms:
            self.request_seconds.labels(endpoint=endpoint).observe(timings_ms["total"] / 1000.0)

    def set_model(self, name: str, version: str, variant: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, variant=variant).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
