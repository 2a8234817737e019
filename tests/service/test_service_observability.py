"""What an operator sees: the one request counter (failures included, each request once), the process
collectors, JSON logs with request and dialogue ids (text only with TURNWISE_LOG_TEXT), and the optional
OpenTelemetry traces of the serving path, with an in-memory exporter and over real OTLP/HTTP."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import websockets

from service import tracing
from service.logs import JsonFormatter

TEXT = "my card was charged twice"


def turn(c: httpx.AsyncClient, dialogue: str, seq: int, text: str = TEXT, **headers: str) -> Any:
    return c.post(f"/v1/dialogues/{dialogue}/turns", json={"seq": seq, "speaker": "customer", "text": text},
                  headers=headers)


def counter(text: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("turnwise_requests_total{") and line.split("{")[1].split("}")[0] == want:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ----------------------------------------------------------------------------------------- metrics


async def test_every_request_is_counted_once_by_endpoint_and_outcome(live) -> None:
    srv = live(max_body_bytes=2048)
    async with httpx.AsyncClient(base_url=srv.url) as c:
        assert (await turn(c, "call-m", 0)).status_code == 200
        assert (await turn(c, "call-m", 0)).status_code == 200  # a retry: the stored result
        assert (await turn(c, "call-m", 0, text="other")).status_code == 409
        big = await c.post("/v1/dialogues/call-m/turns", content=b"x" * 4096,
                           headers={"content-type": "application/json"})
        assert big.status_code == 413  # refused by the body limit before routing
        assert (await c.get("/no/such/path")).status_code == 404
        assert (await c.get("/v1/dialogues/call-m")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        async with websockets.connect(srv.ws_url, proxy=None) as ws:
            await ws.send("{not json")
            assert json.loads(await ws.recv())["code"] == "invalid"
            await ws.send(json.dumps({"type": "turn", "dialogue_id": "call-w", "seq": 0, "speaker": "agent",
                                      "text": "hello"}))
            assert json.loads(await ws.recv())["type"] == "scores"
        text = (await c.get("/metrics")).text
    expected = {("turns", "scored"): 1, ("turns", "duplicate"): 1, ("turns", "conflict"): 1, ("turns", "too_large"): 1,
                ("other", "not_found"): 1, ("dialogue", "ok"): 1, ("stream", "invalid"): 1, ("stream", "scored"): 1}
    for (endpoint, outcome), n in expected.items():
        assert counter(text, endpoint=endpoint, outcome=outcome) == n, (endpoint, outcome)
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("turnwise_requests_total{"))
    assert total == sum(expected.values())  # probes and /metrics are not counted
    assert "turnwise_failures_total" not in text and "turnwise_request_seconds" not in text
    assert 'turnwise_token_cache_lookups_total{result="miss"}' in text
    assert "turnwise_batch_padded_tokens_count 2.0" in text  # one per model call (the probe is not counted)
    assert "turnwise_bundle_loaded_timestamp_seconds" in text


# -------------------------------------------------------------------------------------------- logs


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("turnwise")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.mark.parametrize("log_text", [False, True])
async def test_json_logs_carry_request_and_dialogue_ids_and_text_only_when_asked(live, captured, log_text) -> None:
    srv = live(log_text=log_text, log_level="debug")
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await turn(c, "call-log", 0, **{"x-request-id": "req-7"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-7"
        generated = (await turn(c, "call-log", 1, **{"x-request-id": "bad id with spaces"})).headers["x-request-id"]
        assert len(generated) == 32 and generated != "bad id with spaces"
    records = [json.loads(line) for line in captured.lines]
    scored = [r for r in records if r["message"] == "turn scored" and r.get("request_id") == "req-7"]
    assert scored and scored[0]["dialogue_id"] == "call-log" and scored[0]["seq"] == 0
    assert {"ts", "level", "logger"} <= set(scored[0])
    joined = "\n".join(captured.lines)
    assert (TEXT in joined) is log_text
    if log_text:
        (line,) = [r for r in records if r.get("text") == TEXT and r.get("request_id") == "req-7"]
        assert line["dialogue_id"] == "call-log"


def test_json_formatter_on_its_own() -> None:
    record = logging.LogRecord("turnwise.service", logging.WARNING, __file__, 1, "request failed: %s", ("x",), None)
    record.error_kind = "store_unavailable"
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "request failed: x" and out["level"] == "warning"
    assert out["error_kind"] == "store_unavailable"
    assert "request_id" not in out  # outside a request


# ------------------------------------------------------------------------------------------ traces


@pytest.fixture
def memory_exporter(monkeypatch: pytest.MonkeyPatch) -> Any:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "make_exporter", lambda endpoint: exporter)
    return exporter


async def test_spans_of_a_turn_follow_the_callers_trace(live, memory_exporter) -> None:
    srv = live(otlp_endpoint="http://collector.invalid:4318")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await turn(c, "call-t", 0, traceparent=f"00-{trace_id}-{parent_id}-01")
        assert r.status_code == 200
        assert (await c.get("/readyz")).status_code == 200  # probes are not traced
    srv.app.state.tracing.flush()
    spans = {s.name: s for s in memory_exporter.get_finished_spans()}
    assert set(spans) == {"HTTP POST turns", "score_turn", "store.append", "tokenize", "queue", "inference",
                          "store.set_result", "monitor"}
    server = spans["HTTP POST turns"]
    assert f"{server.context.trace_id:032x}" == trace_id and f"{server.parent.span_id:016x}" == parent_id
    assert server.attributes["http.response.status_code"] == 200
    assert spans["score_turn"].parent.span_id == server.context.span_id
    for child in ("store.append", "tokenize", "queue", "inference", "store.set_result", "monitor"):
        assert spans[child].parent.span_id == spans["score_turn"].context.span_id, child
        assert spans[child].context.trace_id == server.context.trace_id
    assert spans["queue"].end_time <= spans["inference"].start_time + 1
    assert spans["inference"].attributes["turnwise.batch_size"] >= 1
    attrs = dict(spans["score_turn"].attributes)
    assert attrs["turnwise.dialogue_id"] == "call-t" and attrs["turnwise.seq"] == 0
    assert attrs["turnwise.model.version"] == "1"
    everything = json.dumps([dict(s.attributes) for s in spans.values()])
    assert TEXT not in everything  # never utterance text
    assert spans["score_turn"].resource.attributes["service.name"] == "turnwise"


async def test_a_websocket_frame_is_its_own_trace(live, memory_exporter) -> None:
    srv = live(otlp_endpoint="http://collector.invalid:4318")
    async with websockets.connect(srv.ws_url, proxy=None) as ws:
        for seq in range(2):
            await ws.send(json.dumps({"type": "turn", "dialogue_id": "call-ws", "seq": seq, "speaker": "agent",
                                      "text": "hello"}))
            assert json.loads(await ws.recv())["type"] == "scores"
    srv.app.state.tracing.flush()
    roots = [s for s in memory_exporter.get_finished_spans() if s.name == "score_turn"]
    assert len(roots) == 2 and all(s.parent is None for s in roots)
    assert len({s.context.trace_id for s in roots}) == 2
    assert {s.attributes["turnwise.endpoint"] for s in roots} == {"stream"}


class Collector:
    """An OTLP/HTTP trace receiver on loopback: keeps the decoded export requests."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.requests: list[Any] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                    msg = ExportTraceServiceRequest()
                    msg.ParseFromString(body)
                    outer.requests.append(msg)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def span_names(self) -> set[str]:
        return {s.name for req in self.requests for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}


async def test_spans_reach_an_otlp_http_collector(live) -> None:
    collector = Collector()
    try:
        srv = live(otlp_endpoint=collector.url)
        async with httpx.AsyncClient(base_url=srv.url) as c:
            assert (await turn(c, "call-otlp", 0)).status_code == 200
        srv.app.state.tracing.flush()
        assert {"HTTP POST turns", "score_turn", "inference"} <= collector.span_names()
        resource = collector.requests[0].resource_spans[0].resource
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "turnwise"
    finally:
        collector.httpd.shutdown()


def test_exporter_endpoint_gets_the_traces_path() -> None:
    assert tracing.make_exporter("http://c:4318")._endpoint == "http://c:4318/v1/traces"
    assert tracing.make_exporter("http://c:4318/v1/traces")._endpoint == "http://c:4318/v1/traces"


def test_tracing_off_imports_no_tracer_or_exporter() -> None:
    """(redis-py itself may import opentelemetry.sdk.metrics when it is installed; not the tracer.)"""
    code = ("import sys; from service.app import create_app; from service.config import Settings; "
            "app = create_app(Settings()); assert not app.state.tracing.enabled; "
            "print(sorted(m for m in sys.modules "
            "if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_tracing_asked_for_without_the_sdk_fails_with_a_fix() -> None:
    code = ("import sys; sys.modules['opentelemetry.sdk.resources'] = None; from service.app import create_app; "
            "from service.config import Settings; create_app(Settings(otlp_endpoint='http://c:4318'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode != 0 and "pip install 'turnwise[otel]'" in proc.stderr
