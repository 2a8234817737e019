"""The generated parts of ``docs/``: tables and machine-readable documents written from the code.

``python -m cli.docgen`` rewrites every block between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->`` in the Markdown files, and ``docs/openapi.json`` /
``docs/asyncapi.json`` as wholes; ``python -m cli.docgen --check`` only reports what is stale (exit 1).
``tests/cli/test_docs.py`` runs the check, so a setting, route, frame field or error kind cannot
change without its documentation.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
                   re.S)


def _cell(text: Any) -> str:
    """Text for a Markdown table cell: pipes escaped, and ``<``/``>`` outside code spans (else HTML)."""
    parts = str(text).replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = text.replace("NoneType", "None").replace("SecretStr", "str")
    literal = re.fullmatch(r"Literal\[(.*)\]", text)
    if literal:
        return "one of " + literal.group(1).replace("'", "")
    if "list[str]" in text:
        return "comma-separated list"
    return {"Path | None": "path", "Path": "path", "str | None": "str", "int | None": "int",
            "float | None": "float"}.get(text, text)


def _constraints(field: FieldInfo) -> str:
    marks = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                marks.append(f"{sign} {value}")
    return ", ".join(marks)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "empty" if not value else ",".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def settings_table(cls: type[BaseSettings], prefix: str) -> str:
    rows = ["| variable | type | default | allowed | what |", "|---|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        env = alias or f"{prefix}{name.upper()}"
        rows.append(f"| `{env}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | "
                    f"{_cell(_constraints(field))} | {_cell(field.description or '')} |")
    return "\n".join(rows) + "\n"


def _schema_type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return f'`"{prop["const"]}"`'
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_schema_type(p) for p in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_schema_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"object of {_schema_type(prop['additionalProperties'])}"
    if kind == "integer" and "maximum" in prop:
        return f"integer {prop.get('minimum', '')}..{int(prop['maximum'])}"
    if kind == "string" and "pattern" in prop:
        return f"string `{prop['pattern']}`"
    return str(kind)


def fields_table(model: type[BaseModel], mode: str = "validation") -> str:
    schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    required = set(schema.get("required", []))
    rows = ["| field | type | required | what |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        rows.append(f"| `{name}` | {_cell(_schema_type(prop))} | {'yes' if name in required else 'no'} | "
                    f"{_cell(prop.get('description', ''))} |")
    return "\n".join(rows) + "\n"


def example(model: type[BaseModel]) -> str:
    extra: Any = model.model_config.get("json_schema_extra") or {}
    return "```json\n" + json.dumps(extra["examples"][0], ensure_ascii=False) + "\n```\n"


def frames_doc(models: list[type[BaseModel]], mode: str) -> str:
    parts = []
    for m in models:
        doc = (m.__doc__ or "").strip().splitlines()[0] if m.__doc__ else ""
        parts.append(f"#### `{m.__name__}`\n\n{doc}\n\n{fields_table(m, mode)}\n{example(m)}")
    return "\n".join(parts)


def _app_openapi() -> dict[str, Any]:
    from service.app import create_app
    from service.config import Settings

    return create_app(Settings(bundle=Path("bundle"))).openapi()


def routes_table(spec: dict[str, Any]) -> str:
    rows = ["| method | path | what | answers | errors | auth |", "|---|---|---|---|---|---|"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = sorted(op["responses"])
            ok = [c for c in codes if c.startswith(("1", "2"))]
            bad = [c for c in codes if not c.startswith(("1", "2"))]
            what = op.get("summary", "") if op.get("x-websocket") else (op.get("description") or op.get("summary", ""))
            what = what.split("\n\n")[0].strip()
            verb = "WS" if op.get("x-websocket") else method.upper()
            rows.append(f"| {verb} | `{path}` | {_cell(what)} | {', '.join(ok)} | {', '.join(bad)} | "
                        f"{'bearer' if op.get('security') else '-'} |")
    return "\n".join(rows) + "\n"


def error_kinds_table() -> str:
    from turnwise.api import MEANING, RETRYABLE, STATUS, ErrorKind

    rows = ["| `error_type` / `code` | HTTP | retry the same request? | meaning |", "|---|---|---|---|"]
    for k in ErrorKind:
        retry = "yes, after `Retry-After`" if k in RETRYABLE else "no"
        rows.append(f"| `{k.value}` | {STATUS[k]} | {retry} | {_cell(MEANING[k])} |")
    return "\n".join(rows) + "\n"


def close_codes_table() -> str:
    from turnwise.api import CLOSE_CODES

    rows = ["| close code | when |", "|---|---|"] + [f"| {c} | {_cell(t)} |" for c, t in CLOSE_CODES.items()]
    return "\n".join(rows) + "\n"


def blocks() -> dict[str, Callable[[], str]]:
    from service.config import Settings
    from sidecar.settings import SidecarSettings
    from trainer.teachers.scores import ScoreRecord
    from turnwise.dialogue import Dialogue, Turn
    from turnwise.events import AlertEvent, EndedEvent, TurnEvent
    from turnwise.messages import EndedFrame, EndFrame, ErrorFrame, ScoresFrame, TurnFrame
    from turnwise.tasks import Task

    return {
        "service-settings": lambda: settings_table(Settings, "TURNWISE_"),
        "sidecar-settings": lambda: settings_table(SidecarSettings, "TURNWISE_SIDECAR_"),
        "routes": lambda: routes_table(_app_openapi()),
        "error-kinds": error_kinds_table,
        "close-codes": close_codes_table,
        "client-frames": lambda: frames_doc([TurnFrame, EndFrame], "validation"),
        "server-frames": lambda: frames_doc([ScoresFrame, EndedFrame, ErrorFrame], "serialization"),
        "event-frames": lambda: frames_doc([AlertEvent, TurnEvent, EndedEvent], "serialization"),
        "dialogue-fields": lambda: "Dialogue:\n\n" + fields_table(Dialogue) + "\nTurn:\n\n" + fields_table(Turn),
        "task-fields": lambda: fields_table(Task),
        "score-record-fields": lambda: fields_table(ScoreRecord),
    }


def whole_files() -> dict[Path, Callable[[], str]]:
    from service.asyncapi import build_asyncapi

    return {
        DOCS / "openapi.json": lambda: json.dumps(_app_openapi(), indent=2, ensure_ascii=False) + "\n",
        DOCS / "asyncapi.json": lambda: json.dumps(build_asyncapi(), indent=2, ensure_ascii=False) + "\n",
    }


def render(text: str, makers: dict[str, Callable[[], str]], cache: dict[str, str]) -> str:
    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in makers:
            raise KeyError(f"unknown generated block '{name}'")
        if name not in cache:
            cache[name] = makers[name]()
        return m.group(1) + cache[name] + m.group(4)

    return BLOCK.sub(fill, text)


def generate(check: bool = False) -> list[Path]:
    """Rewrite the generated docs (or with ``check`` only list the stale ones); returns the stale files."""
    stale: list[Path] = []
    makers = blocks()
    cache: dict[str, str] = {}
    for md in sorted(DOCS.glob("*.md")):
        old = md.read_text(encoding="utf-8")
        new = render(old, makers, cache)
        if new != old:
            stale.append(md)
            if not check:
                md.write_text(new, encoding="utf-8")
    for path, make in whole_files().items():
        new = make()
        if not path.exists() or path.read_text(encoding="utf-8") != new:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale = generate(check=check)
    for path in stale:
        print(f"{'stale' if check else 'wrote'}: {path.relative_to(REPO)}")
    if check and stale:
        print("run: python -m cli.docgen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
