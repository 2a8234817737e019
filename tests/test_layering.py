"""The layers, read from the imports (every import, also those inside functions):

    turnwise (core)  <-  bundle (reader)  <-  trainer  <-  export  <-  sidecar  <-  cli
                                          <-  service  <--------------------------'

A package may import only the packages listed for it below, and no module may take part in an
import circle. Dev tools (harness, benchmarks, loadtests) sit outside the product and may import it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("turnwise", "bundle", "trainer", "export", "service", "sidecar", "cli")
ALLOWED = {
    "turnwise": set(),
    "bundle": {"turnwise"},
    "trainer": {"turnwise", "bundle"},
    "export": {"turnwise", "bundle", "trainer"},
    "service": {"turnwise", "bundle"},
    "sidecar": {"turnwise", "bundle", "trainer", "export"},
    "cli": {"turnwise", "bundle", "trainer", "export", "service", "sidecar"},
}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PRODUCT:
        for p in (REPO / pkg).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (resolved to the longest known module name)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]  # a name that is no module resolves to base
        for t in targets:
            parts = t.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in known:
                    found.add(cand)
                    break
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(p, m, known) for m, p in mods.items()}


def test_no_package_imports_a_layer_above_it():
    bad = defaultdict(list)
    for mod, deps in graph().items():
        top = mod.split(".")[0]
        for d in deps:
            dtop = d.split(".")[0]
            if dtop != top and dtop not in ALLOWED[top]:
                bad[mod].append(d)
    assert not bad, f"imports that point up or sideways: {dict(bad)}"


def test_no_import_circles():
    g = graph()
    # Tarjan's strongly connected components; a package importing its own __init__ is not a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w.startswith(v + ".") or v.startswith(w + "."):
                continue  # a package and its own submodules
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_service_does_not_need_torch_or_the_trainer():
    """What the service imports, transitively, stays inside the core, the reader and itself."""
    g = graph()
    seen, todo = set(), [m for m in g if m.startswith("service")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(g.get(m, ()))
    assert {m.split(".")[0] for m in seen} <= {"service", "turnwise", "bundle"}


def test_no_product_module_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these along their seams: {long}"


def test_the_checker_sees_a_violation(tmp_path):
    """The import reader resolves absolute and relative imports (else the tests above prove nothing)."""
    p = tmp_path / "m.py"
    p.write_text("from trainer.train import train\nfrom . import window\nimport export.pipeline as x\n")
    found = imports_of(p, "turnwise.m", {"trainer.train", "turnwise.window", "export.pipeline", "turnwise"})
    assert found == {"trainer.train", "turnwise.window", "export.pipeline"}
