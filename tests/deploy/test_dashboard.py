"""The Grafana dashboard shipped with the chart queries metrics the service really exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from service.metrics import STAGES, Metrics

from .chart import CHART

DASHBOARD = CHART / "dashboards" / "turnwise.json"
METRIC = re.compile(r"\b(?:turnwise|process|python)_[a-z0-9_]+")


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
    """Sample names the service's registry exposes (histograms as _bucket/_sum/_count), including the
    process and GC collectors'."""
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
    for metric in ("turnwise_requests_total", "turnwise_request_duration_seconds_bucket",
                   "turnwise_stage_duration_seconds_bucket", "turnwise_batch_size_bucket", "turnwise_queue_depth",
                   "turnwise_reloads_total", "turnwise_model_info", "turnwise_store_up",
                   # CPU and RSS, cache and reload, per-task label rates
                   "process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_collections_total",
                   "turnwise_token_cache_lookups_total", "turnwise_bundle_loaded_timestamp_seconds",
                   "turnwise_labels_total", "turnwise_batch_tokens_sum", "turnwise_batch_padded_tokens_sum"):
        assert metric in text, metric
    assert "by (le, stage)" in text  # the per-stage split (queue, store, tokenize, inference)
    assert set(STAGES) == {"queue", "store", "tokenize", "inference"}
    # failures are outcomes of the one request counter; there is no separate failure counter any more
    assert "turnwise_failures_total" not in text and 'outcome!~"scored|duplicate|ok"' in text


def test_panels_say_what_their_metrics_measure(dashboard: dict[str, Any]) -> None:
    """A panel's title and description must not contradict the help of the metrics it plots."""
    helps = {f.name: f.documentation for f in Metrics().registry.collect()}
    assert "before padding" in helps["turnwise_batch_tokens"] or "unpadded" in helps["turnwise_batch_tokens"]
    assert "padding included" in helps["turnwise_batch_padded_tokens"]
    for p in panels(dashboard):
        exprs = " ".join(t["expr"] for t in p.get("targets", []))
        title = p["title"].lower()
        if "padded" in title:
            assert "turnwise_batch_padded_tokens" in exprs, p["title"]
        if "turnwise_batch_tokens" in exprs and "turnwise_batch_padded_tokens" not in exprs:
            assert "padded" not in title, p["title"]


def test_per_task_label_panels_repeat_over_the_task_variable(dashboard: dict[str, Any]) -> None:
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert "task" in names
    repeated = [p for p in panels(dashboard) if p.get("repeat") == "task"]
    assert repeated and all('task="$task"' in t["expr"] for p in repeated for t in p["targets"])
