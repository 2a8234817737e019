"""The chart's Valkey: a hardened StatefulSet of the official image, its password only in a Secret, a
NetworkPolicy letting in this release's service and sidecar pods, and a config + start script that
really start a server (run here with redis-server, which reads the same directives) and answer the
probes only with the password."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.ports import free_port

from .chart import RELEASE, Renderer, by_kind, container, one, pod_spec

FULL = f"{RELEASE}-turnwise"
VALKEY = f"{FULL}-valkey"


def valkey(docs: list[dict]) -> dict[str, Any]:
    return container(docs, "valkey", deployment=VALKEY, kind="StatefulSet")


def test_statefulset_is_the_official_image_hardened_and_persistent(chart: Renderer) -> None:
    docs = chart.template()
    sts = one(docs, "StatefulSet", VALKEY)
    spec = pod_spec(sts)
    c = valkey(docs)
    assert c["image"] == "valkey/valkey:9.0.1-alpine"
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == f"{VALKEY}-headless"
    assert spec["securityContext"]["runAsUser"] == 999 and spec["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert set(mounts) == {"/data", "/etc/valkey", "/run/valkey", "/tmp"}
    assert mounts["/etc/valkey"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"  # the written auth.conf never touches a disk
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "valkey-cli" in " ".join(c[probe]["exec"]["command"]), probe
    assert "PONG|LOADING" in c["livenessProbe"]["exec"]["command"][2]  # loading a big AOF is alive, not ready
    assert "LOADING" not in c["readinessProbe"]["exec"]["command"][2]
    # the StatefulSet restarts when its config changes
    assert sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_password_only_in_the_secret(chart: Renderer) -> None:
    docs = chart.template()
    c = valkey(docs)
    env = {e["name"]: e for e in c["env"]}
    for name in ("VALKEY_PASSWORD", "REDISCLI_AUTH"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": VALKEY, "key": "valkey-password"}
    conf = one(docs, "ConfigMap", VALKEY)["data"]["valkey.conf"]
    assert "requirepass" not in conf.replace("# requirepass", "") and "include /run/valkey/auth.conf" in conf
    password = one(docs, "Secret", VALKEY)["data"]["valkey-password"]
    assert password not in str([d for d in docs if d["kind"] != "Secret"])


def test_no_persistence_is_an_emptydir(chart: Renderer) -> None:
    docs = chart.template(values={"valkey": {"persistence": {"enabled": False}}})
    sts = one(docs, "StatefulSet", VALKEY)
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {v["name"]: v for v in pod_spec(sts)["volumes"]}["data"]["emptyDir"]["sizeLimit"] == "2Gi"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_network_policy_lets_in_only_this_releases_service_and_sidecar(chart: Renderer) -> None:
    docs = chart.template("sidecar-deployment")
    policy = one(docs, "NetworkPolicy", VALKEY)
    pod_labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
                  for d in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")}
    assert selects(policy["spec"]["podSelector"], pod_labels[VALKEY])
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert selects(peer["podSelector"], pod_labels[FULL])
    assert selects(peer["podSelector"], pod_labels[f"{FULL}-sidecar"])
    assert not selects(peer["podSelector"], pod_labels[VALKEY])
    other_release = {**pod_labels[FULL], "app.kubernetes.io/instance": "other"}
    assert not selects(peer["podSelector"], other_release)
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    assert not by_kind(chart.template(values={"valkey": {"networkPolicy": {"enabled": False}}}), "NetworkPolicy")


@pytest.fixture
def started(chart: Renderer, tmp_path: Path) -> Any:
    """The rendered valkey.conf and start script, run with redis-server (same config directives)."""
    server = shutil.which("redis-server")
    if server is None or shutil.which("redis-cli") is None:
        pytest.skip("needs redis-server and redis-cli (make system-deps)")
    docs = chart.template()
    c = valkey(docs)
    port = free_port()
    conf = one(docs, "ConfigMap", VALKEY)["data"]["valkey.conf"]
    conf = conf.replace("port 6379", f"port {port}").replace("bind * -::*", "bind 127.0.0.1")
    conf = conf.replace("dir /data", f"dir {tmp_path}").replace("/run/valkey", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "valkey.conf").write_text(conf)
    script = c["command"][2].replace("/run/valkey", str(tmp_path / "run")).replace("/etc/valkey", str(tmp_path / "etc"))
    script = script.replace("exec valkey-server", f"exec {server}")
    env = {"PATH": os.environ["PATH"], "VALKEY_PASSWORD": "s3cret-Pass_word"}
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            time.sleep(0.05)
    yield {"port": port, "container": c, "dir": tmp_path}
    proc.terminate()
    proc.wait(timeout=10)


def test_rendered_config_starts_a_server_that_needs_the_password(started: dict[str, Any]) -> None:
    port = started["port"]
    assert redis.Redis(port=port, password="s3cret-Pass_word").ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    client = redis.Redis(port=port, password="s3cret-Pass_word")
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert oct((started["dir"] / "run" / "auth.conf").stat().st_mode & 0o777) == "0o600"


def test_probes_pass_only_with_the_password(started: dict[str, Any]) -> None:
    c, port = started["container"], started["port"]

    def probe(name: str, password: str | None) -> int:
        command = c[name]["exec"]["command"][2].replace("valkey-cli", "redis-cli").replace("-p 6379", f"-p {port}")
        env = {"PATH": os.environ["PATH"], **({"REDISCLI_AUTH": password} if password else {})}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=10).returncode

    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe(name, "s3cret-Pass_word") == 0, name
        assert probe(name, None) != 0, name  # NOAUTH: the probe does not pass without the password
