"""Every manifest of every value set validates strictly and offline against Kubernetes' schemas.

Value sets: the chart defaults and every preset in deploy/helm/turnwise/ci/*-values.yaml (a new
preset is picked up automatically). Kubernetes versions: the chart's floor and the current release.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .chart import (
    CHART,
    CRD_SCHEMAS,
    K8S_CURRENT,
    K8S_VERSIONS,
    Renderer,
    by_kind,
    one,
    presets,
    validate_manifest,
)

VALUE_SETS = ["default", *presets()]
# The sets the issues name; the glob above must keep finding them.
REQUIRED_SETS = {"default", "external-redis", "gpu", "autoscaling-off", "sidecar", "bundle-url", "bundle-oci",
                 "bundle-claim", "observability"}


def render(chart: Renderer, value_set: str) -> list[dict]:
    return chart.template() if value_set == "default" else chart.template(value_set)


def test_required_value_sets_exist() -> None:
    assert set(VALUE_SETS) >= REQUIRED_SETS, f"missing presets: {REQUIRED_SETS - set(VALUE_SETS)}"


def test_kubernetes_validate_bundles_the_versions_we_validate_against() -> None:
    bundled = {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    version = kubernetes_validate.__version__
    assert set(K8S_VERSIONS) <= bundled, f"kubernetes-validate {version} bundles {sorted(bundled)}"


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_manifest_validates_strictly(chart: Renderer, value_set: str, k8s: str) -> None:
    docs = render(chart, value_set)
    assert by_kind(docs, "Deployment"), "nothing rendered"
    failures = []
    for doc in docs:
        try:
            validate_manifest(doc, k8s)
        except kubernetes_validate.SchemaNotFoundError as err:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: NO SCHEMA: {err.message}")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as err:
            path = ".".join(str(p) for p in err.path)
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {err.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(chart: Renderer, value_set: str) -> None:
    out = chart.lint() if value_set == "default" else chart.lint(value_set)
    assert "0 chart(s) failed" in out


def test_names_and_labels_fit_kubernetes_limits(chart: Renderer) -> None:
    """A 53-character release name (Helm's maximum) still gives valid names and label values."""
    release = "a-very-long-release-name-for-turnwise-in-production-x"[:53]
    docs = chart.template("sidecar-deployment", release=release)
    dns_label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    for doc in docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 63 and dns_label.match(name), f"{doc['kind']} name {name!r}"
        for key, value in doc["metadata"].get("labels", {}).items():
            assert len(str(value)) <= 63, f"label {key}={value!r} on {name}"


def test_kubernetes_validate_cli_agrees(chart: Renderer, tmp_path: Path) -> None:
    """The `kubernetes-validate --strict` command line passes the default render with no warning, and
    shows why the suite calls the library instead: for a CRD it only warns and still exits 0."""
    def cli(docs: list[dict]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", f"{K8S_CURRENT}.0",
                               str(path)], capture_output=True, text=True, timeout=60, check=False)

    proc = cli(chart.template())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARN" not in proc.stdout and "ERROR" not in proc.stdout and "passed" in proc.stdout
    proc = cli(chart.template(values={"metrics": {"serviceMonitor": {"enabled": True}}}))
    assert proc.returncode == 0 and "WARN" in proc.stdout and "ServiceMonitor" in proc.stdout


def test_unknown_kind_fails_instead_of_passing() -> None:
    """kubernetes-validate's CLI only warns on kinds it has no schema for; our check must fail."""
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_manifest(widget, K8S_CURRENT)


def test_validation_is_strict(chart: Renderer) -> None:
    dep = copy.deepcopy(one(chart.template(), "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonRot"):
        validate_manifest(dep, K8S_CURRENT)


def test_servicemonitor_is_validated_against_the_vendored_schema(chart: Renderer) -> None:
    docs = chart.template(values={"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = one(docs, "ServiceMonitor")
    assert validate_manifest(monitor, K8S_CURRENT).startswith("vendored schema")
    assert ("monitoring.coreos.com/v1", "ServiceMonitor") in CRD_SCHEMAS
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate_manifest(broken, K8S_CURRENT)
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(broken, K8S_CURRENT)


def test_prometheusrule_is_validated_against_the_vendored_schema(chart: Renderer) -> None:
    docs = chart.template("observability")
    rule = one(docs, "PrometheusRule")
    assert validate_manifest(rule, K8S_CURRENT).startswith("vendored schema")
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError, match="fro"):
        validate_manifest(broken, K8S_CURRENT)
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(broken, K8S_CURRENT)
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["record"] = "turnwise:x"  # an alert and a record at once
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(broken, K8S_CURRENT)


def test_the_chart_has_no_dependencies_and_packages_as_shipped(chart: Renderer, tmp_path: Path) -> None:
    """`helm package` (what a chart repository serves) keeps every file the templates read, and the
    packaged chart renders and validates offline with no `helm dependency build`."""
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert "dependencies" not in meta and not (CHART / "charts").exists() and not (CHART / "Chart.lock").exists()
    proc = subprocess.run([chart.helm, "package", str(CHART), "--destination", str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    (tgz,) = tmp_path.glob("turnwise-*.tgz")
    assert tgz.name == f"turnwise-{meta['version']}.tgz"
    sets = ["--set", "metrics.dashboard.enabled=true", "--set", "metrics.prometheusRule.enabled=true"]
    rendered = subprocess.run([chart.helm, "template", "tw", str(tgz), "--namespace", "turnwise", *sets],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        validate_manifest(doc, K8S_CURRENT)
    dashboard = one(docs, "ConfigMap", "tw-turnwise-dashboard")["data"]["turnwise.json"]
    assert json.loads(dashboard)["uid"] == "turnwise-service"
