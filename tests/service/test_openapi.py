"""The OpenAPI document says what the service really does: bearer security, examples on every body,
the error kinds as an enum, per-route error statuses (real 404/405, 413 only with a body, Retry-After
on 429/503), /metrics as text, and the WebSocket."""

from __future__ import annotations

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from turnwise.api import ErrorKind


@pytest.fixture(scope="module")
def spec() -> dict:
    return create_app(Settings(bundle="bundle")).openapi()


def operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_bearer_security_scheme(spec):
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "API key",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"]}
    for path, method, op in operations(spec):
        needs_key = path.startswith("/v1/")
        assert (op.get("security") == [{"bearer": []}]) == needs_key, (method, path)


def test_every_body_has_an_example(spec):
    schemas = spec["components"]["schemas"]
    for path, method, op in operations(spec):
        body = op.get("requestBody")
        if body:
            ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            assert schemas[ref].get("examples"), (method, path, ref)
            # what Swagger's "Try it out" starts from
            assert body["content"]["application/json"]["example"] == schemas[ref]["examples"][0]
        for status, resp in op["responses"].items():
            for media, content in resp.get("content", {}).items():
                schema = content.get("schema", {})
                name = schema.get("$ref", "").rsplit("/", 1)[-1]
                has_example = "example" in content or "examples" in content or schemas.get(name, {}).get("examples")
                any_of = schema.get("anyOf", [])
                if any_of:
                    has_example = all(schemas[s["$ref"].rsplit("/", 1)[-1]].get("examples") for s in any_of)
                if media == "application/json" and path != "/asyncapi.json":
                    assert has_example, (method, path, status)
    seq = schemas["TurnIn"]["properties"]["seq"]
    assert seq["examples"] == [0]  # Swagger's example body no longer says 9007199254740991


def test_error_type_is_an_enum(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["ErrorOut"]["properties"]["error_type"] == {"$ref": "#/components/schemas/ErrorKind"}
    assert schemas["ErrorKind"]["enum"] == [k.value for k in ErrorKind]


def test_error_statuses_are_per_route(spec):
    errors = {(m.upper(), p): {s for s in op["responses"] if s[0] in "45"} for p, m, op in operations(spec)}
    assert errors[("GET", "/v1/dialogues/{dialogue_id}")] >= {"404", "405"}
    assert "404" not in errors[("POST", "/v1/dialogues/{dialogue_id}/turns")]
    assert errors[("POST", "/v1/dialogues/{dialogue_id}/turns")] >= {"409", "413", "429", "503", "504"}
    for path, method, op in operations(spec):
        codes = set(op["responses"])
        if op.get("x-websocket"):
            continue
        assert "405" in codes, (method, path)
        assert ("413" in codes) == ("requestBody" in op), (method, path)
        for status in ("429", "503"):
            if status in codes:
                assert "Retry-After" in op["responses"][status]["headers"], (method, path, status)
    assert errors[("GET", "/healthz")] == {"405", "500"}
    assert "409" not in errors[("POST", "/v1/score")] and "401" not in errors[("GET", "/readyz")]


def test_metrics_is_text_and_the_websocket_is_documented(spec):
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain; version=0.0.4; charset=utf-8"]
    ws = spec["paths"]["/v1/stream"]["get"]
    assert ws["x-websocket"] and set(ws["responses"]) == {"101", "401", "503"}
    assert "/asyncapi.json" in ws["externalDocs"]["url"]
    events = spec["paths"]["/v1/events"]["get"]
    assert events["x-websocket"] and {p["name"] for p in events["parameters"]} >= {"dialogue_id", "severity", "types"}
    for frame in ("TurnFrame", "EndFrame", "ScoresFrame", "EndedFrame", "ErrorFrame", "AlertEvent", "TurnEvent"):
        assert frame in spec["components"]["schemas"]


async def test_documented_errors_are_what_the_server_answers(live):
    """404 and 405 are real answers with the error body; 503 carries Retry-After; /asyncapi.json is served."""
    srv = live(api_keys="k1")
    async with httpx.AsyncClient(base_url=srv.url, headers={"Authorization": "Bearer k1"}) as c:
        r = await c.get("/v1/dialogues/call-unknown")
        assert r.status_code == 404 and r.json()["error_type"] == "not_found"
        r = await c.put("/v1/score", json={})
        assert r.status_code == 405 and r.json()["error_type"] == "not_allowed"
        r = await c.get("/v1/no-such-path")
        assert r.status_code == 404 and r.json()["error_type"] == "not_found"
        r = await c.get("/openapi.json")
        assert r.status_code == 200 and "bearer" in r.json()["components"]["securitySchemes"]
        r = await c.get("/asyncapi.json")
        assert r.status_code == 200 and r.json()["servers"]["local"]["host"] == f"127.0.0.1:{srv.settings.port}"
        r = await c.post("/v1/dialogues/c/turns", json={"seq": 0, "speaker": "a", "text": "hi"},
                         headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        srv.state.draining = True
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        srv.state.draining = False
