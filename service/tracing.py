"""Optional OpenTelemetry traces of the serving path, exported over OTLP/HTTP.

Off unless ``TURNWISE_OTLP_ENDPOINT`` is set; then the service needs ``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http`` (the ``otel`` extra; the service image has them) and fails
at start with a message saying so when they are missing. Off, nothing of OpenTelemetry is imported
and every call here is a no-op.

Spans (none carries utterance text):

- ``HTTP <method> <endpoint>`` (server span) per /v1 HTTP request, continuing the caller's W3C
  ``traceparent``; probes and /metrics are not traced;
- ``score_turn`` / ``score`` (one per scored turn; a WebSocket frame's is a root span) with
  ``turnwise.dialogue_id``, ``turnwise.seq``, ``turnwise.endpoint``, ``turnwise.model.version``;
- their children ``store.append``, ``tokenize``, ``queue``, ``inference`` (``turnwise.batch_size``)
  and ``store.set_result``. ``queue`` and ``inference`` happen inside the micro-batcher, shared by
  the batch; they are recorded afterwards from the batcher's timings.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.metrics import endpoint_of

if TYPE_CHECKING:
    from service.config import Settings

SERVICE_NAME = "turnwise"
TRACES_PATH = "/v1/traces"
Attributes = Mapping[str, str | int | float | bool]


class Tracing:
    """The service's tracer; ``Tracing()`` (no provider) is the no-op used when tracing is off."""

    def __init__(self, provider: Any = None):
        self.provider = provider
        self._tracer = provider.get_tracer("turnwise.service") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def span(self, name: str, attributes: Attributes | None = None) -> Iterator[Any]:
        """A child of the current span (or a root span), current inside the block."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(name, attributes=dict(attributes or {})) as span:
            yield span

    def record(self, name: str, start_ns: int, end_ns: int, attributes: Attributes | None = None) -> None:
        """A finished child span of the current span, from timestamps taken elsewhere."""
        if self._tracer is None:
            return
        span = self._tracer.start_span(name, start_time=start_ns, attributes=dict(attributes or {}))
        span.end(end_time=max(start_ns, end_ns))

    def record_batch(self, submitted_ns: int, batch_timings: Mapping[str, float]) -> None:
        """``queue`` and ``inference`` spans of one request from the batcher's timings (ms)."""
        if self._tracer is None:
            return
        queued_until = submitted_ns + int(batch_timings["queue"] * 1e6)
        self.record("queue", submitted_ns, queued_until)
        self.record("inference", queued_until, queued_until + int(batch_timings["inference"] * 1e6),
                    {"turnwise.batch_size": int(batch_timings.get("batch_size", 1))})

    def flush(self, timeout_ms: int = 5000) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
            logs.current_trace_ids = _no_trace_ids


def _no_trace_ids() -> tuple[str, str] | None:
    return None


class ServerSpans:
    """ASGI middleware: one SERVER span per /v1 HTTP request, child of the caller's traceparent."""

    def __init__(self, app: ASGIApp, tracing: Tracing):
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoint_of(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        tracer = self.tracing._tracer
        assert tracer is not None
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"], "turnwise.endpoint": endpoint}
        request_id = logs.REQUEST_ID.get()
        if request_id:
            attributes["turnwise.request_id"] = request_id
        with tracer.start_as_current_span(f"HTTP {scope['method']} {endpoint}", context=propagate.extract(carrier),
                                          kind=trace.SpanKind.SERVER, attributes=attributes) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_traced)


def make_exporter(endpoint: str) -> Any:
    """The OTLP/HTTP span exporter for a collector base URL (``/v1/traces`` appended unless given)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint.rstrip("/")
    if not url.endswith(TRACES_PATH):
        url += TRACES_PATH
    return OTLPSpanExporter(endpoint=url)


def setup_tracing(settings: Settings, version: str) -> Tracing:
    """No-op without ``settings.otlp_endpoint``; else a batching tracer provider exporting to it."""
    if not settings.otlp_endpoint:
        return Tracing()
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as err:
        raise RuntimeError(
            "TURNWISE_OTLP_ENDPOINT is set but OpenTelemetry is not installed: pip install 'turnwise[otel]' "
            f"({err.name} missing)"
        ) from err
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": version})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(make_exporter(settings.otlp_endpoint)))

    def trace_ids() -> tuple[str, str] | None:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    logs.current_trace_ids = trace_ids
    return Tracing(provider)


def now_ns() -> int:
    return time.time_ns()
