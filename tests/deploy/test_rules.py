"""The chart's alert rules (PrometheusRule, metrics.prometheusRule.*) and their local-stack copy.

- Rendered only when enabled; strict schema check always (vendored PrometheusRule schema).
- ``promtool check rules`` on every rendering (PromQL, durations, annotation templates) and
  ``promtool test rules`` on synthetic series: each alert fires when it should and stays quiet on a
  healthy service. promtool comes from Debian's prometheus package (`scripts/tools.sh install`); the
  promtool tests skip, saying so, where it is missing.
- Every series the rules read is exported by service/metrics.py; the 5xx outcomes are the service's
  5xx error kinds; the latency threshold is a histogram bucket bound, matched as the client writes it.
- deploy/compose/prometheus/turnwise-rules.yml is exactly the chart's rendering for the compose labels.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.errors import SERVER_ERROR_KINDS
from service.metrics import LATENCY_BUCKETS, Metrics

from .chart import CHART, COMPOSE_RULES, RELEASE, Renderer, by_kind, find_helm, one, render_compose_rules
from .test_dashboard import exported_series

PROMTOOL = shutil.which("promtool", path=str(Path(find_helm() or "x").parent)) or shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool: `bash scripts/tools.sh install` (Debian's prometheus package) or PATH")
ALERTS = {"TurnwiseErrorBudgetBurnFast", "TurnwiseErrorBudgetBurnSlow", "TurnwiseLatencyBudgetBurnFast",
          "TurnwiseLatencyBudgetBurnSlow", "TurnwiseP99OverBudget", "TurnwiseOverloaded", "TurnwiseBundleReloadFailed",
          "TurnwiseRedisUnavailable", "TurnwiseTargetDown"}


def rules_of(docs: list[dict]) -> list[dict[str, Any]]:
    return [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


# ------------------------------------------------------------------------------------- rendering


def test_rules_render_only_when_enabled(chart: Renderer) -> None:
    assert not by_kind(chart.template(), "PrometheusRule")
    docs = chart.template("observability")
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {r["alert"] for r in rules_of(docs)} == ALERTS
    for r in rules_of(docs):
        # this release's series only (two releases in one Prometheus must not alert for each other)
        assert f'namespace="turnwise", service="{RELEASE}-turnwise"' in r["expr"], r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning") and r["labels"]["team"] == "contact-center"
        assert r["annotations"]["runbook_url"] == f"https://runbooks.example.com/turnwise#{r['alert']}"
        assert r["annotations"]["summary"] and r["annotations"]["description"]


def test_selector_and_slo_values_flow_into_the_rules(chart: Renderer) -> None:
    docs = chart.template(values={"metrics": {"prometheusRule": {
        "enabled": True, "selector": 'cluster="eu-1", job="turnwise"',
        "slo": {"latencySeconds": 0.25, "latencyTarget": 0.95, "availabilityTarget": 0.99}}}})
    by_name = {r["alert"]: r for r in rules_of(docs)}
    assert all('cluster="eu-1", job="turnwise"' in r["expr"] for r in by_name.values())
    assert "> 0.144" in by_name["TurnwiseErrorBudgetBurnFast"]["expr"]  # 14.4 x (1 - 0.99)
    assert "> 0.72" in by_name["TurnwiseLatencyBudgetBurnFast"]["expr"]  # 14.4 x (1 - 0.95)
    assert "le=~`0\\.25(\\.0)?`" in by_name["TurnwiseLatencyBudgetBurnFast"]["expr"]
    assert "> 0.25" in by_name["TurnwiseP99OverBudget"]["expr"]


def test_rules_read_only_exported_series(chart: Renderer) -> None:
    exported = exported_series() | {"up"}
    for r in rules_of(chart.template("observability")):
        names = set(re.findall(r"\b(turnwise_[a-z0-9_]+|up)\{", r["expr"]))
        assert names and names <= exported, f"{r['alert']}: {sorted(names - exported)}"


def test_server_error_outcomes_are_the_5xx_kinds(chart: Renderer) -> None:
    expr = {r["alert"]: r for r in rules_of(chart.template("observability"))}["TurnwiseErrorBudgetBurnFast"]["expr"]
    (alternatives,) = set(re.findall(r'outcome=~"([^"]+)"', expr))
    assert set(alternatives.split("|")) == {k.value for k in SERVER_ERROR_KINDS}


def test_latency_threshold_matches_the_histogram_as_exposed() -> None:
    """The chart's bucket list is the service's, and the `le` regex matches the client's exposition
    (prometheus_client writes 1.0 as "1.0"; Prometheus 3 normalises it to "1")."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    listed = re.search(r'define "turnwise.latencyBuckets" -}}\n(.*)\n', helpers)
    assert listed is not None
    assert [float(b) for b in listed.group(1).split()] == list(LATENCY_BUCKETS)
    m = Metrics()
    m.request_duration.labels(endpoint="turns").observe(0.01)
    exposed = set(re.findall(r'turnwise_request_duration_seconds_bucket\{endpoint="turns",le="([^"]+)"\}',
                             m.render().decode()))
    for bound in LATENCY_BUCKETS:
        helm_string = f"{bound:g}"  # how Helm's toString writes the value
        pattern = re.compile(re.escape(helm_string) + r"(\.0)?")
        assert any(pattern.fullmatch(le) for le in exposed), (bound, sorted(exposed))
        assert pattern.fullmatch(helm_string)  # the Prometheus 3 normalised form


def test_compose_rules_are_the_charts(chart: Renderer) -> None:
    assert COMPOSE_RULES.read_text() == render_compose_rules(chart), (
        "deploy/compose/prometheus/turnwise-rules.yml is stale: run "
        "`.venv/bin/python -m tests.deploy.chart write-compose-rules`")
    prom = yaml.safe_load((COMPOSE_RULES.parent / "prometheus.yml").read_text())
    labels = prom["scrape_configs"][0]["static_configs"][0]["labels"]
    assert (labels["namespace"], labels["service"]) == ("compose", "turnwise")  # what the rules select


# --------------------------------------------------------------------------------------- promtool


@needs_promtool
@pytest.mark.parametrize("value_set", ["observability", "sidecar-deployment"])
def test_promtool_check_rules(chart: Renderer, value_set: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": one(chart.template(value_set), "PrometheusRule")["spec"]["groups"]}))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


@needs_promtool
def test_promtool_check_rules_catches_a_broken_expression(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


SEL = 'namespace="compose",service="turnwise",job="turnwise",pod="turnwise-1"'


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{SEL}{extra}}}", "values": values}


def fired(alert: str, *, pod: bool = False, severity: str = "warning", **extra: str) -> dict[str, Any]:
    labels = {"namespace": "compose", "service": "turnwise", "job": "turnwise", "severity": severity, **extra}
    if pod:
        labels["pod"] = "turnwise-1"
    return {"exp_labels": labels}


def healthy_traffic(minutes: int = 120) -> list[dict[str, str]]:
    """10 scored turns/s, every one under 50 ms; the store is up."""
    n = f"0+600x{minutes}"
    return [
        series("turnwise_requests_total", n, endpoint="turns", outcome="scored"),
        *(series("turnwise_request_duration_seconds_bucket", n, endpoint="turns", le=le)
          for le in ("0.05", "0.1", "0.25", "+Inf")),
        series("turnwise_request_duration_seconds_count", n, endpoint="turns"),
        series("turnwise_store_up", f"1x{minutes}"),
        series("turnwise_reloads_total", f"0x{minutes}", result="failed"),
        {"series": f'up{{{SEL},instance="turnwise:8080"}}', "values": f"1x{minutes}"},
    ]


def unit_tests() -> list[dict[str, Any]]:
    quiet = [{"eval_time": "70m", "alertname": a, "exp_alerts": []} for a in sorted(ALERTS)]
    errors = [*healthy_traffic(), series("turnwise_requests_total", "0+60x120", endpoint="turns",
                                         outcome="store_unavailable")]  # 1 in 11 requests fails: 9 %
    slow = [s for s in healthy_traffic() if "le=" not in s["series"]] + [
        series("turnwise_request_duration_seconds_bucket", "0+300x120", endpoint="turns", le="0.05"),
        series("turnwise_request_duration_seconds_bucket", "0+480x120", endpoint="turns", le="0.1"),  # 20 % slower
        series("turnwise_request_duration_seconds_bucket", "0+600x120", endpoint="turns", le="0.25"),
        series("turnwise_request_duration_seconds_bucket", "0+600x120", endpoint="turns", le="+Inf"),
    ]
    overloaded = [*healthy_traffic(), series("turnwise_requests_total", "0+120x120", endpoint="turns",
                                             outcome="overloaded")]  # 2 in 12 refused: 17 %
    reload = [s for s in healthy_traffic() if "reloads" not in s["series"]] + [
        series("turnwise_reloads_total", "0x30 1x90", result="failed")]
    store_down = [s for s in healthy_traffic() if "store_up" not in s["series"]] + [
        series("turnwise_store_up", "1x30 0x90")]
    scrape_down = [s for s in healthy_traffic() if not s["series"].startswith("up")] + [
        {"series": f'up{{{SEL},instance="turnwise:8080"}}', "values": "1x30 0x90"}]
    target = fired("TurnwiseTargetDown", pod=True, instance="turnwise:8080")
    return [
        {"interval": "1m", "input_series": healthy_traffic(), "alert_rule_test": quiet},
        {"interval": "1m", "input_series": errors, "alert_rule_test": [
            {"eval_time": "70m", "alertname": "TurnwiseErrorBudgetBurnFast",
             "exp_alerts": [fired("TurnwiseErrorBudgetBurnFast", severity="critical")]},
            {"eval_time": "70m", "alertname": "TurnwiseRedisUnavailable",
             "exp_alerts": [fired("TurnwiseRedisUnavailable", pod=True, severity="critical")]},
            {"eval_time": "70m", "alertname": "TurnwiseOverloaded", "exp_alerts": []},
            {"eval_time": "70m", "alertname": "TurnwiseLatencyBudgetBurnFast", "exp_alerts": []}]},
        {"interval": "1m", "input_series": slow, "alert_rule_test": [
            {"eval_time": "70m", "alertname": "TurnwiseLatencyBudgetBurnFast",
             "exp_alerts": [fired("TurnwiseLatencyBudgetBurnFast", severity="critical")]},
            {"eval_time": "70m", "alertname": "TurnwiseP99OverBudget", "exp_alerts": [fired("TurnwiseP99OverBudget")]},
            {"eval_time": "70m", "alertname": "TurnwiseErrorBudgetBurnFast", "exp_alerts": []}]},
        {"interval": "1m", "input_series": overloaded, "alert_rule_test": [
            {"eval_time": "5m", "alertname": "TurnwiseOverloaded", "exp_alerts": []},  # `for: 10m`
            {"eval_time": "30m", "alertname": "TurnwiseOverloaded", "exp_alerts": [fired("TurnwiseOverloaded")]},
            {"eval_time": "30m", "alertname": "TurnwiseErrorBudgetBurnFast", "exp_alerts": []}]},
        {"interval": "1m", "input_series": reload, "alert_rule_test": [
            {"eval_time": "29m", "alertname": "TurnwiseBundleReloadFailed", "exp_alerts": []},
            {"eval_time": "35m", "alertname": "TurnwiseBundleReloadFailed",
             "exp_alerts": [fired("TurnwiseBundleReloadFailed", pod=True)]},
            {"eval_time": "60m", "alertname": "TurnwiseBundleReloadFailed", "exp_alerts": []}]},  # one failure: 15 min
        {"interval": "1m", "input_series": store_down, "alert_rule_test": [
            {"eval_time": "31m", "alertname": "TurnwiseRedisUnavailable", "exp_alerts": []},  # `for: 2m`
            {"eval_time": "35m", "alertname": "TurnwiseRedisUnavailable",
             "exp_alerts": [fired("TurnwiseRedisUnavailable", pod=True, severity="critical")]}]},
        {"interval": "1m", "input_series": scrape_down, "alert_rule_test": [
            {"eval_time": "40m", "alertname": "TurnwiseTargetDown", "exp_alerts": [target]}]},
    ]


@needs_promtool
def test_promtool_unit_tests_fire_each_alert_when_it_should(tmp_path: Path) -> None:
    """Synthetic series against the compose rules (the chart's rendering): the annotations are dropped
    for the unit tests (promtool compares them verbatim; check rules validates their templates)."""
    groups = copy.deepcopy(yaml.safe_load(COMPOSE_RULES.read_text())["groups"])
    for g in groups:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": unit_tests()}, sort_keys=False))
    proc = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
