"""docs/ is generated where it can be and cannot drift: the tables of settings, routes, error kinds and
frames, and the OpenAPI / AsyncAPI documents, are what the code says; every link resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli import docgen

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_generated_docs_are_up_to_date():
    stale = docgen.generate(check=True)
    assert not stale, f"regenerate with `python -m cli.docgen`: {[str(p.relative_to(REPO)) for p in stale]}"


def test_every_setting_is_documented_with_its_default():
    from service.config import Settings
    from sidecar.settings import SidecarSettings

    text = (REPO / "docs" / "settings.md").read_text()
    for name in Settings.model_fields:
        assert f"| `TURNWISE_{name.upper()}` |" in text, name
    for name, field in SidecarSettings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else f"TURNWISE_SIDECAR_{name.upper()}"
        assert f"| `{env}` |" in text, name
    assert "| `TURNWISE_MAX_QUEUE` | int | `256` | &gt;= 1 |" in text  # ">= 1" once rendered


def test_every_route_and_error_kind_is_in_api_md():
    from turnwise.api import ErrorKind

    text = (REPO / "docs" / "api.md").read_text()
    spec = json.loads((REPO / "docs" / "openapi.json").read_text())
    for path in spec["paths"]:
        assert f"`{path}`" in text, path
    ws = (REPO / "docs" / "websocket.md").read_text()
    for kind in ErrorKind:
        assert f"`{kind.value}`" in text and f"`{kind.value}`" in ws, kind


def test_links_resolve():
    """README and docs link only to files in the repository (and to anchors that exist)."""
    broken = []
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in LINK.findall(md.read_text()):
            if target.startswith(("http://", "https://", "mailto:")) or target.startswith("/"):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                broken.append(f"{md.name}: {target}")
            elif anchor and dest.suffix == ".md":
                body = dest.read_text()
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                         for h in re.findall(r"^#+ (.*)$", body, re.M)}
                if anchor not in slugs and f'id="{anchor}"' not in body:
                    broken.append(f"{md.name}: {target}")
    assert not broken, broken
    assert "DESIGN" not in (REPO / "README.md").read_text()


def test_asyncapi_document_is_self_consistent():
    doc = json.loads((REPO / "docs" / "asyncapi.json").read_text())
    assert doc["asyncapi"].startswith("3.") and doc["channels"]["stream"]["address"] == "/v1/stream"

    def resolve(ref: str) -> object:
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
        return node

    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(doc))
    assert refs and all(resolve(r) is not None for r in refs)
    messages = doc["components"]["messages"]
    assert set(messages) == {"turn", "end", "scores", "ended", "error", "alert", "turnEvent", "endedEvent"}
    assert set(doc["channels"]["stream"]["messages"]) == {"turn", "end", "scores", "ended", "error", "alert"}
    assert doc["channels"]["events"]["address"] == "/v1/events"
    assert set(doc["channels"]["events"]["messages"]) == {"alert", "turnEvent", "endedEvent"}
    for m in messages.values():
        assert m["examples"], m["name"]
    codes = doc["components"]["schemas"]["ErrorKind"]["enum"]
    from turnwise.api import ErrorKind

    assert codes == [k.value for k in ErrorKind]
