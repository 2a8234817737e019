"""The Grafana dashboard shipped with the chart queries metrics the service really exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from service.metrics import STAGES, Metrics

from .chart import CHART

DASHBOARD = CHART / "dashboards" / "turnwise.json"
METRIC = re.compile(r"\bturnwise_[a-z0-9_]+")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


def exported_series() -> set[str]:
    """Sample names the service's registry exposes (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_dashboard_is_grafana_json(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "turnwise-service"
    assert dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
    assert dashboard["templating"]["list"][0]["name"] == "datasource"


def test_every_queried_metric_is_exported(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    queried = {m for expr in expressions(dashboard) for m in METRIC.findall(expr)}
    assert queried, "no turnwise_ metric in the dashboard"
    unknown = sorted(queried - exported)
    assert not unknown, f"dashboard queries metrics service/metrics.py does not export: {unknown}"


def test_dashboard_covers_the_serving_signals(dashboard: dict[str, Any]) -> None:
    text = "\n".join(expressions(dashboard))
    for metric in ("turnwise_requests_total", "turnwise_failures_total", "turnwise_request_seconds_bucket",
                   "turnwise_stage_seconds_bucket", "turnwise_batch_size_bucket", "turnwise_queue_depth",
                   "turnwise_reloads_total", "turnwise_model_info"):
        assert metric in text, metric
    assert "by (le, stage)" in text  # the per-stage split (queue, store, tokenize, inference)
    assert set(STAGES) == {"queue", "store", "tokenize", "inference"}
