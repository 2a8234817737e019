"""The sidecar's place in the layers: it builds on the core, the trainer and the exporter (bundle reader
included), only the CLI imports it, and it spells no Redis key, stored-turn field or file name that
turnwise.names owns."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIDECAR = REPO / "sidecar"
FIRST_PARTY = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
ALLOWED = {"sidecar", "turnwise", "trainer", "export"}


def imported_roots(path: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def test_the_sidecar_imports_only_core_trainer_and_export():
    bad = [f"{p.relative_to(REPO)}:{line} imports {root}" for p in sorted(SIDECAR.rglob("*.py"))
           for root, line in imported_roots(p) if root in FIRST_PARTY - ALLOWED]
    assert bad == []


def test_only_the_cli_imports_the_sidecar():
    others = sorted(FIRST_PARTY - {"sidecar", "cli", "tests"})
    assert {"turnwise", "trainer", "export", "service"} <= set(others)
    bad = [f"{p.relative_to(REPO)}:{line}" for pkg in others for p in sorted((REPO / pkg).rglob("*.py"))
           for root, line in imported_roots(p) if root == "sidecar"]
    assert bad == []


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_the_sidecar_spells_no_shared_name():
    """Key layout, stored-turn format and file names come from turnwise.names (docstrings may mention them)."""
    forbidden = (":turns", ":meta", "bundle.json", "turnwise.json", "model.safetensors", "state/last.pt")
    bad = []
    for path in sorted(SIDECAR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):  # f"{prefix}feedback": the stream's name spelled again
                parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
                bad += [f"{path.relative_to(REPO)}:{node.lineno} {p!r}" for p in parts if p.startswith("feedback")]
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
                continue
            if any(f in node.value for f in forbidden):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert bad == []
