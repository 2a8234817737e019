"""Every value of the chart is documented with a bitnami-style `## @param <key> <description>` line,
and every @param names a value that exists (a @param on a map documents the whole map)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from .chart import CHART

PARAM = re.compile(r"^\s*## @param (\S+) (\S.*)$")


def leaf_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        out: set[str] = set()
        for key, value in node.items():
            out |= leaf_paths(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip(".")}


def all_paths(node: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(f"{prefix}{key}")
            out |= all_paths(value, f"{prefix}{key}.")
    return out


def documented() -> dict[str, str]:
    params = {}
    for line in (CHART / "values.yaml").read_text().splitlines():
        m = PARAM.match(line)
        if m:
            params[m.group(1)] = m.group(2)
    return params


def test_every_value_has_a_param_comment() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    params = documented()
    undocumented = sorted(
        leaf for leaf in leaf_paths(values)
        if not any(leaf == p or leaf.startswith(p + ".") for p in params)
    )
    assert not undocumented, f"values without a ## @param line: {undocumented}"


def test_every_param_names_a_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    stale = sorted(set(documented()) - all_paths(values))
    assert not stale, f"## @param lines for values that do not exist: {stale}"

