"""The running service against its own OpenAPI document: schemathesis generates requests for every
operation (schema-valid and schema-violating ones, a bounded number each) and checks that no answer is a
5xx and every answer matches the document (status code, content type, headers, body). Then one focused
test per mismatch found before: what a response leaves out must not be declared required, and a
boolean field must not accept a string."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402

KEY = "key-schemathesis"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = 20  # per operation and generation mode: the whole run stays well under a minute


@pytest.fixture(scope="module")
def server(fp32_bundle: Path) -> Iterator[Any]:
    from harness.live import LiveServer
    from service.config import Settings

    live = LiveServer(Settings(bundle=fp32_bundle, reload_poll_s=0, api_keys=[KEY], log_level="warning",
                               shutdown_grace_s=5)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def openapi(server: Any) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/openapi.json", timeout=30).json())


def test_schemathesis_finds_no_5xx_and_no_response_outside_the_schema(server: Any, openapi: dict[str, Any]) -> None:
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance]
    # WebSockets are documented as a GET (the handshake) for people; a plain GET is not how they are used.
    sockets = [path for path, ops in openapi["paths"].items() if any(o.get("x-websocket") for o in ops.values())]
    assert "/v1/stream" in sockets
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json").exclude(path=sockets)
    failures: dict[tuple[str, str], str] = {}
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            try:
                explore(op, mode, checks, failures)()
            except Unsatisfiable:  # no schema-violating request exists for an operation without inputs
                assert mode == GenerationMode.NEGATIVE
    assert operations >= 8
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


def explore(op: Any, mode: Any, checks: list[Any], failures: dict[tuple[str, str], str]) -> Any:
    """A hypothesis test over ``op``'s generated requests that records each distinct failure (all are
    reported together at the end, rather than the first one only)."""
    from schemathesis.core.failures import FailureGroup

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        try:
            case.call_and_validate(headers=AUTH, checks=checks, timeout=30)
        except (AssertionError, FailureGroup) as err:
            failures.setdefault((op.label, str(mode)), str(err)[:1500])

    return run


def validator(openapi: dict[str, Any], component: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{component}", "components": openapi["components"]})


CALL = {"turns": [{"speaker": "agent", "text": "How can I help?"},
                  {"speaker": "customer", "text": "I was charged twice."}]}


def test_score_all_turns_match_the_schema_without_a_model_each(server: Any, openapi: dict[str, Any]) -> None:
    body = httpx.post(f"{server.url}/v1/score", json={**CALL, "all": True}, headers=AUTH, timeout=30).json()
    assert len(body["turns"]) == 2 and all("model" not in t for t in body["turns"])  # given once, at the top
    assert "model" not in openapi["components"]["schemas"]["ScoreResult"].get("required", [])
    validator(openapi, "ScoreAllResult").validate(body)


def test_a_dialogues_last_result_matches_the_schema_without_timings(server: Any, openapi: dict[str, Any]) -> None:
    turn = {"seq": 0, "speaker": "customer", "text": "My card was charged twice."}
    posted = httpx.post(f"{server.url}/v1/dialogues/schema-1/turns", json=turn, headers=AUTH, timeout=30)
    assert posted.status_code == 200, posted.text
    body = httpx.get(f"{server.url}/v1/dialogues/schema-1", headers=AUTH, timeout=30).json()
    assert body["last_result"] is not None and "timings_ms" not in body["last_result"]
    validator(openapi, "DialogueOut").validate(body)


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_score_all_is_a_strict_boolean(server: Any, value: Any) -> None:
    r = httpx.post(f"{server.url}/v1/score", json={**CALL, "all": value}, headers=AUTH, timeout=30)
    assert r.status_code == 422, r.text
    assert r.json()["error_type"] == "invalid" and "all" in r.json()["error"]
