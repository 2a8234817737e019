"""What the rendered chart must say: probes, hardening, resources, where settings and secrets come
from, GPU scheduling, scaling objects, the ServiceMonitor and dashboard toggles, the sidecar topologies,
and the refusals for combinations that would deploy something broken."""

from __future__ import annotations

import base64
import json

import pytest

from bundle.providers import TRT_CACHE_ENV
from service.config import Settings
from sidecar.settings import SidecarSettings

from .chart import CHART, RELEASE, Renderer, by_kind, container, env_of, one, pod_spec, presets

FULL = f"{RELEASE}-turnwise"
VALKEY = f"{FULL}-valkey"
ALL_SETS = ["default", *presets()]


def render(chart: Renderer, value_set: str, **values: object) -> list[dict]:
    presets = () if value_set == "default" else (value_set,)
    return chart.template(*presets, values=values or None)


def workloads(docs: list[dict]) -> list[dict]:
    return by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet") + by_kind(docs, "Pod")


def config_map(docs: list[dict]) -> dict[str, str]:
    return one(docs, "ConfigMap", FULL)["data"]


# --------------------------------------------------------------------------------------------- probes


def test_probes_cover_model_load_liveness_and_readiness(chart: Renderer) -> None:
    c = container(chart.template(), "turnwise")
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = c["startupProbe"]
    # The port opens only after the bundle is loaded: the startup probe is the model-load budget.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert c["command"] == ["turnwise", "serve"]
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}


def test_gpu_startup_budget_allows_tensorrt_engine_builds(chart: Renderer) -> None:
    startup = container(chart.template("gpu"), "turnwise")["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900


def test_drain_fits_in_the_termination_grace_period(chart: Renderer) -> None:
    docs = chart.template()
    spec = pod_spec(one(docs, "Deployment", FULL))
    grace = int(config_map(docs)["TURNWISE_SHUTDOWN_GRACE_S"])
    assert spec["terminationGracePeriodSeconds"] > grace + 5


# -------------------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_every_container_is_hardened_and_bounded(chart: Renderer, value_set: str) -> None:
    docs = render(chart, value_set)
    for wl in workloads(docs):
        spec = pod_spec(wl)
        where = wl["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            where = f"{wl['metadata']['name']}/{c['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), where
            assert "memory" in res["limits"], where
            assert ":latest" not in c["image"] and (":" in c["image"] or "@" in c["image"]), where
        if wl["kind"] in ("Deployment", "StatefulSet"):
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes["tmp"]["emptyDir"]["sizeLimit"], where
            for c in spec["containers"]:
                assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], f"{where}/{c['name']}"


def test_service_mounts_the_bundle_read_only(chart: Renderer) -> None:
    mounts = {m["name"]: m for m in container(chart.template(), "turnwise")["volumeMounts"]}
    assert mounts["bundle"] == {"name": "bundle", "mountPath": "/models", "readOnly": True}


# ------------------------------------------------------------------------------ settings & secrets


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_configmap_keys_are_service_settings(chart: Renderer, value_set: str) -> None:
    """Every TURNWISE_* the chart sets is a field of service.config.Settings (a typo would be ignored
    silently by pydantic-settings' extra="ignore"), or the TensorRT cache variable export reads; the
    sidecar container may also set fields of sidecar.settings.SidecarSettings."""
    docs = render(chart, value_set)
    known = {f"TURNWISE_{name.upper()}" for name in Settings.model_fields} | {TRT_CACHE_ENV}
    sidecar_known = known | {f"TURNWISE_SIDECAR_{name.upper()}" for name in SidecarSettings.model_fields}
    keys = set(config_map(docs))
    for wl in by_kind(docs, "Deployment"):
        for c in pod_spec(wl)["containers"]:
            env = {k for k in env_of(c) if k.startswith("TURNWISE_")}
            if c["name"] == "sidecar":
                assert env <= sidecar_known, f"not sidecar settings: {sorted(env - sidecar_known)}"
            else:
                keys |= env
    assert keys <= known, f"not service settings: {sorted(keys - known)}"


def test_configmap_carries_the_issue_settings(chart: Renderer) -> None:
    data = config_map(chart.template())
    required = {"BUNDLE", "MAX_BATCH_SIZE", "MAX_BATCH_WAIT_MS", "MAX_QUEUE", "LATENCY_BUDGET_MS", "MAX_TEXT_CHARS",
                "WINDOW_TTL_S", "VARIANT", "PROVIDERS", "LOG_TEXT", "KEY_PREFIX", "HOST", "PORT"}
    assert {f"TURNWISE_{k}" for k in required} <= set(data)
    assert data["TURNWISE_BUNDLE"] == "/models/current"
    assert data["TURNWISE_HOST"] == "0.0.0.0"
    assert data["TURNWISE_LOG_TEXT"] == "false"
    assert data["TURNWISE_KEY_PREFIX"] == "tw:"
    # The values parse as the service parses them.
    settings = Settings.model_validate({k.removeprefix("TURNWISE_").lower(): v for k, v in data.items()})
    assert settings.max_batch_size == 32 and settings.log_text is False and str(settings.bundle) == "/models/current"


def test_config_values_flow_through_and_null_unsets(chart: Renderer) -> None:
    data = config_map(chart.template(values={"config": {"maxQueue": 64, "intraOpThreads": None,
                                                        "maxBodyBytes": 100000}}))
    assert data["TURNWISE_MAX_QUEUE"] == "64"
    assert "TURNWISE_INTRA_OP_THREADS" not in data
    assert data["TURNWISE_MAX_BODY_BYTES"] == "100000"


def test_default_redis_is_the_charts_valkey_with_password_from_its_secret(chart: Renderer) -> None:
    docs = chart.template()
    data = config_map(docs)
    assert "TURNWISE_REDIS_URL" not in data  # it carries a password reference: pod env, not ConfigMap
    env = container(docs, "turnwise")["env"]
    names = [e["name"] for e in env]
    pw = env[names.index("REDIS_PASSWORD")]
    url = env[names.index("TURNWISE_REDIS_URL")]
    assert names.index("REDIS_PASSWORD") < names.index("TURNWISE_REDIS_URL")  # $(VAR) needs it defined first
    assert pw["valueFrom"]["secretKeyRef"] == {"name": VALKEY, "key": "valkey-password"}
    assert url["value"] == f"redis://:$(REDIS_PASSWORD)@{VALKEY}:6379/0"
    assert one(docs, "Service", VALKEY)["spec"]["ports"][0]["port"] == 6379
    # The generated password is in the Valkey Secret only; nothing for the chart's own Secret (no API keys).
    secret = one(docs, "Secret", VALKEY)
    assert len(base64.b64decode(secret["data"]["valkey-password"])) == 32
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == FULL]


def test_valkey_secret_options(chart: Renderer) -> None:
    docs = chart.template(values={"valkey": {"auth": {"existingSecret": "shared-redis",
                                                      "existingSecretPasswordKey": "pw"}}})
    ref = env_of(container(docs, "turnwise"))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "shared-redis", "key": "pw"}
    valkey_env = env_of(container(docs, "valkey", deployment=VALKEY, kind="StatefulSet"))
    assert valkey_env["VALKEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "shared-redis", "key": "pw"}
    assert not by_kind(docs, "Secret")  # the existing Secret is used, none is generated
    docs = chart.template(values={"valkey": {"auth": {"enabled": False}}})
    assert config_map(docs)["TURNWISE_REDIS_URL"] == f"redis://{VALKEY}:6379/0"
    assert "REDIS_PASSWORD" not in env_of(container(docs, "turnwise"))
    assert "protected-mode no" in one(docs, "ConfigMap", VALKEY)["data"]["valkey.conf"]
    long = chart.template(release="a-very-long-release-name-for-turnwise-in-production-x")
    (sts,) = by_kind(long, "StatefulSet")
    assert len(sts["metadata"]["name"]) <= 52  # the controller appends a revision hash in a 63-char label


def test_external_redis_with_existing_secrets(chart: Renderer) -> None:
    docs = chart.template("external-redis")
    env = env_of(container(docs, "turnwise"))
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "turnwise-redis", "key": "password"}
    assert env["TURNWISE_REDIS_URL"]["value"] == "rediss://:$(REDIS_PASSWORD)@redis.data.svc.cluster.local:6380/2"
    assert env["TURNWISE_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "turnwise-api-keys", "key": "keys"}
    assert not by_kind(docs, "Secret")
    assert not [d for d in docs if "redis" in d["metadata"]["name"] or "valkey" in d["metadata"]["name"]]
    assert not by_kind(docs, "StatefulSet")


def test_external_redis_password_in_values_goes_to_the_chart_secret(chart: Renderer) -> None:
    docs = chart.template(values={"valkey": {"enabled": False},
                                  "externalRedis": {"host": "r.example", "username": "tw", "password": "s3cret"}})
    secret = one(docs, "Secret", FULL)
    assert base64.b64decode(secret["data"]["redis-password"]).decode() == "s3cret"
    env = env_of(container(docs, "turnwise"))
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": FULL, "key": "redis-password"}
    assert env["TURNWISE_REDIS_URL"]["value"] == "redis://tw:$(REDIS_PASSWORD)@r.example:6379/0"
    assert "s3cret" not in json.dumps([d for d in docs if d["kind"] != "Secret"])


def test_external_redis_url_and_inline_api_keys(chart: Renderer) -> None:
    docs = chart.template("external-redis-url")
    assert config_map(docs)["TURNWISE_REDIS_URL"] == "redis://redis-master.data.svc.cluster.local:6379/0"
    env = env_of(container(docs, "turnwise"))
    assert "REDIS_PASSWORD" not in env
    assert env["TURNWISE_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": FULL, "key": "api-keys"}
    secret = one(docs, "Secret", FULL)
    assert base64.b64decode(secret["data"]["api-keys"]).decode() == "key-for-ci-a,key-for-ci-b"
    assert "key-for-ci" not in json.dumps([d for d in docs if d["kind"] != "Secret"])


def test_settings_changes_roll_the_pods(chart: Renderer) -> None:
    def checksums(docs: list[dict]) -> dict[str, str]:
        ann = one(docs, "Deployment", FULL)["spec"]["template"]["metadata"]["annotations"]
        return {k: v for k, v in ann.items() if k.startswith("checksum/")}

    base = checksums(chart.template())
    assert checksums(chart.template(values={"config": {"maxQueue": 64}}))["checksum/config"] != base["checksum/config"]
    assert checksums(chart.template(values={"auth": {"apiKeys": ["k"]}}))["checksum/secret"] != base["checksum/secret"]


# ---------------------------------------------------------------------------------------------- GPU


def test_gpu_values(chart: Renderer) -> None:
    docs = chart.template("gpu")
    spec = pod_spec(one(docs, "Deployment", FULL))
    c = container(docs, "turnwise")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    data = config_map(docs)
    assert data["TURNWISE_VARIANT"] == "fp16"
    assert data["TURNWISE_PROVIDERS"] == "tensorrt"
    cache_dir = data[TRT_CACHE_ENV]
    assert {"name": "tensorrt-cache", "mountPath": cache_dir} in c["volumeMounts"]
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}["tensorrt-cache"]
    # CPU utilisation says little about a GPU replica: the preset scales on queue depth only.
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "turnwise_queue_depth"


def test_gpu_cache_on_a_claim_and_user_scheduling_merged(chart: Renderer) -> None:
    docs = chart.template("gpu", values={"gpu": {"tensorrtCache": {"existingClaim": "trt-a100"}},
                                         "nodeSelector": {"pool": "inference"},
                                         "tolerations": [{"key": "dedicated", "operator": "Exists"}]})
    spec = pod_spec(one(docs, "Deployment", FULL))
    assert {v["name"]: v for v in spec["volumes"]}["tensorrt-cache"] == {
        "name": "tensorrt-cache", "persistentVolumeClaim": {"claimName": "trt-a100"}}
    assert spec["nodeSelector"] == {"pool": "inference", "nvidia.com/gpu.present": "true"}
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]


def test_no_gpu_by_default(chart: Renderer) -> None:
    docs = chart.template()
    assert "nvidia.com/gpu" not in json.dumps(docs)
    assert TRT_CACHE_ENV not in config_map(docs)
    assert config_map(docs)["TURNWISE_PROVIDERS"] == "cpu"


# ----------------------------------------------------------------------------- scaling & disruption


def test_hpa_owns_replicas_by_default(chart: Renderer) -> None:
    docs = chart.template()
    assert "replicas" not in one(docs, "Deployment", FULL)["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULL}
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == one(docs, "Service", FULL)["spec"]["selector"]


def test_hpa_can_add_the_queue_depth_metric(chart: Renderer) -> None:
    hpa = one(chart.template(values={"autoscaling": {"queueDepth": {"enabled": True}}}), "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["target"] == {"type": "AverageValue", "averageValue": "8"}


def test_autoscaling_off(chart: Renderer) -> None:
    docs = chart.template("autoscaling-off")
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert one(docs, "Deployment", FULL)["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def test_no_pdb_for_a_single_replica(chart: Renderer) -> None:
    """A PDB with minAvailable 1 over one pod would block every node drain."""
    assert not by_kind(chart.template("sidecar"), "PodDisruptionBudget")


def test_service_routes_to_the_serving_pods(chart: Renderer) -> None:
    docs = chart.template("sidecar-deployment")
    svc = one(docs, "Service", FULL)
    server = one(docs, "Deployment", FULL)
    trainer = one(docs, "Deployment", f"{FULL}-sidecar")
    selector = svc["spec"]["selector"]
    assert selector.items() <= server["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= trainer["spec"]["template"]["metadata"]["labels"].items()
    assert server["spec"]["selector"]["matchLabels"] == selector
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]


# --------------------------------------------------------------------------- metrics & dashboards


def test_servicemonitor_toggle(chart: Renderer) -> None:
    assert not by_kind(chart.template(), "ServiceMonitor")
    docs = chart.template(values={"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    monitor = one(docs, "ServiceMonitor")
    svc = one(docs, "Service", FULL)
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_dashboard_configmap_toggle(chart: Renderer) -> None:
    assert not [d for d in chart.template() if d["metadata"]["name"].endswith("-dashboard")]
    docs = chart.template(values={"metrics": {"dashboard": {"enabled": True}}})
    cm = one(docs, "ConfigMap", f"{FULL}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "turnwise.json").read_text())
    assert json.loads(cm["data"]["turnwise.json"]) == shipped


def test_scrape_annotations_toggle(chart: Renderer) -> None:
    ann = one(chart.template(values={"metrics": {"scrapeAnnotations": True}}), "Deployment", FULL)[
        "spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"


# ------------------------------------------------------------------------------ bundle and sidecar


def test_default_bundle_comes_from_the_bundle_image_into_an_emptydir(chart: Renderer) -> None:
    """The defaults run as shipped: no empty PVC to wait on, nothing shared between the HPA's replicas."""
    docs = chart.template()
    spec = pod_spec(one(docs, "Deployment", FULL))
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}["bundle"]
    (init,) = spec["initContainers"]
    assert init["image"] == "turnwise/turnwise-bundle:0.1.0"  # the Dockerfile's demo-bundle (deploy/README.md)
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env == {"SRC": "/bundle", "DEST": "/models", "LINK": "current", "VERSION": "image-0.1.0"}
    assert {"name": "bundle", "mountPath": "/models"} in init["volumeMounts"]
    assert config_map(docs)["TURNWISE_BUNDLE"] == "/models/current"


def test_bundle_image_pinned_by_digest(chart: Renderer) -> None:
    docs = chart.template("bundle-image")
    (init,) = pod_spec(one(docs, "Deployment", FULL))["initContainers"]
    assert init["image"].startswith("registry.example.com/turnwise/bundle@sha256:")
    assert {e["name"]: e["value"] for e in init["env"]}["VERSION"].startswith("image-sha256-")


def test_bundle_from_a_url_checked_by_sha256(chart: Renderer) -> None:
    from bundle.fetch import build_parser

    docs = chart.template("bundle-url")
    spec = pod_spec(one(docs, "Deployment", FULL))
    (init,) = spec["initContainers"]
    assert init["image"] == container(docs, "turnwise")["image"]  # the service image runs bundle/fetch.py
    assert init["command"][:3] == ["python", "-m", "bundle.fetch"]
    args = build_parser().parse_args(init["command"][3:])
    assert (args.source, args.dest.as_posix(), args.link) == ("url", "/models", "current")
    assert args.url.startswith("https://") and len(args.sha256) == 64
    assert {"name": "tmp", "mountPath": "/tmp"} in init["volumeMounts"]


def test_bundle_from_an_oci_artifact_with_registry_credentials(chart: Renderer) -> None:
    from bundle.fetch import build_parser

    docs = chart.template("bundle-oci")
    spec = pod_spec(one(docs, "Deployment", FULL))
    (init,) = spec["initContainers"]
    args = build_parser().parse_args(init["command"][3:])
    assert (args.source, args.reference) == ("oci", "registry.example.com/turnwise/bundles:support-v7")
    assert args.auth_file.as_posix() == "/run/secrets/registry/.dockerconfigjson" and not args.plain_http
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["registry-auth"]["secret"] == {
        "secretName": "registry-credentials", "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}
    assert {"name": "registry-auth", "mountPath": "/run/secrets/registry", "readOnly": True} in init["volumeMounts"]
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by the HPA's replicas
    assert volumes["bundle"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_bundle_already_on_an_existing_claim(chart: Renderer) -> None:
    docs = chart.template("bundle-claim")
    spec = pod_spec(one(docs, "Deployment", FULL))
    assert "initContainers" not in spec  # nothing is fetched
    assert not by_kind(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["bundle"]["persistentVolumeClaim"]["claimName"] == "turnwise-models"


def test_created_bundle_pvc_is_kept_on_uninstall(chart: Renderer) -> None:
    docs = chart.template(values={"bundle": {"persistence": {"enabled": True}}})
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in pod_spec(one(docs, "Deployment", FULL))["volumes"]}
    assert volumes["bundle"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # seeded from the bundle image once per version (the init container still runs)
    assert pod_spec(one(docs, "Deployment", FULL))["initContainers"][0]["name"] == "bundle"


def test_sidecar_in_the_pod(chart: Renderer) -> None:
    docs = chart.template("sidecar")
    assert len(by_kind(docs, "Deployment")) == 1
    assert one(docs, "Deployment", FULL)["spec"]["replicas"] == 1
    sidecar = container(docs, "sidecar")
    assert sidecar["command"] == ["turnwise", "sidecar"]
    # It writes the bundle volume the service reads (read-only) and hot-reloads from.
    assert {"name": "bundle", "mountPath": "/models"} in sidecar["volumeMounts"]
    assert {"name": "bundle", "mountPath": "/models", "readOnly": True} in container(docs, "turnwise")["volumeMounts"]
    # Same Redis and key prefix (the tw:feedback stream) as the service.
    assert sidecar["envFrom"] == container(docs, "turnwise")["envFrom"]
    assert env_of(sidecar)["TURNWISE_REDIS_URL"] == env_of(container(docs, "turnwise"))["TURNWISE_REDIS_URL"]
    # Finetunes work on the scratch volume; the seed checkpoint is passed only when one is given.
    assert env_of(sidecar)["TURNWISE_SIDECAR_WORK_DIR"]["value"] == "/scratch"
    assert {"name": "scratch", "mountPath": "/scratch"} in sidecar["volumeMounts"]
    assert "TURNWISE_SIDECAR_CHECKPOINT" not in env_of(sidecar)
    docs = chart.template("sidecar", values={"sidecar": {"checkpoint": "/models/seed-checkpoint"}})
    assert env_of(container(docs, "sidecar"))["TURNWISE_SIDECAR_CHECKPOINT"]["value"] == "/models/seed-checkpoint"
    assert config_map(docs)["TURNWISE_KEY_PREFIX"] + "feedback" == "tw:feedback"
    # The sidecar runs the trainer image (the service image has no torch), at the service's tag.
    assert container(docs, "sidecar")["image"] == "turnwise/turnwise-trainer:0.1.0"
    assert container(docs, "turnwise")["image"] == "turnwise/turnwise:0.1.0"
    digest = "sha256:" + "a" * 64
    docs = chart.template("sidecar", values={"image": {"tag": "0.2.0"}, "sidecar": {"image": {"digest": digest}}})
    assert container(docs, "sidecar")["image"] == f"turnwise/turnwise-trainer@{digest}"
    assert container(docs, "turnwise")["image"] == "turnwise/turnwise:0.2.0"
    docs = chart.template("sidecar", values={"image": {"tag": "0.2.0"}})
    assert container(docs, "sidecar")["image"] == "turnwise/turnwise-trainer:0.2.0"


def test_sidecar_as_one_trainer_for_a_scaled_service(chart: Renderer) -> None:
    docs = chart.template("sidecar-deployment")
    trainer = one(docs, "Deployment", f"{FULL}-sidecar")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"] == {"type": "Recreate"}
    assert [c["name"] for c in pod_spec(trainer)["containers"]] == ["sidecar"]
    assert [c["name"] for c in pod_spec(one(docs, "Deployment", FULL))["containers"]] == ["turnwise"]
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for dep in by_kind(docs, "Deployment"):
        volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
        assert volumes["bundle"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == FULL


# ------------------------------------------------------------------------------------- refusals


RWO = {"accessModes": ["ReadWriteOnce"]}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"enabled": False}}, "the redis.* values (the bitnami/redis subchart) were replaced"),
        ({"valkey": {"enabled": False}}, "can run only one replica"),
        ({"valkey": {"enabled": False}, "autoscaling": {"enabled": False}, "replicaCount": 3},
         "can run only one replica"),
        ({"externalRedis": {"host": "r"}}, "choose one"),
        ({"valkey": {"enabled": False}, "externalRedis": {"url": "redis://r:6379/0", "password": "x"}},
         "must not carry a password"),
        ({"bundle": {"source": "s3"}}, "bundle.source must be image, url, oci or claim"),
        ({"bundle": {"source": "claim"}}, "bundle.source=claim serves the bundle already on an existing PVC"),
        ({"bundle": {"source": "claim", "persistence": {"enabled": True}}}, "a claim the chart creates starts empty"),
        ({"bundle": {"source": "url"}}, "needs bundle.url.location"),
        ({"bundle": {"source": "url", "url": {"location": "https://h/b.tar.gz"}}}, "needs bundle.url.sha256"),
        ({"bundle": {"source": "url", "url": {"location": "ftp://h/b.tar.gz", "sha256": "a" * 64}}},
         "needs bundle.url.location"),
        ({"bundle": {"source": "oci", "oci": {"reference": "turnwise-bundle"}}}, "needs bundle.oci.reference"),
        # Pods that cannot schedule: a ReadWriteOnce claim under an HPA (or a trainer next to the service).
        ({"bundle": {"persistence": {"enabled": True, **RWO}}},
         "up to 10 pods mount the bundle claim, but bundle.persistence.accessModes is ReadWriteOnce"),
        ({"bundle": {"persistence": {"enabled": True, "accessModes": ["ReadWriteOncePod"]}},
          "autoscaling": {"enabled": False}, "replicaCount": 2}, "is ReadWriteOncePod"),
        ({"sidecar": {"enabled": True, "mode": "deployment"}, "autoscaling": {"enabled": False}, "replicaCount": 1,
          "bundle": {"persistence": {"enabled": True, **RWO}}}, "up to 2 pods mount the bundle claim"),
        ({"sidecar": {"enabled": True}}, "each trainer would learn from its own share"),
        ({"sidecar": {"enabled": True, "mode": "deployment"}}, "set bundle.persistence.enabled=true"),
        ({"sidecar": {"enabled": True, "mode": "cron"}}, "sidecar.mode must be container or deployment"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": None}}, "needs a metric"),
        ({"terminationGracePeriodSeconds": 20}, "must exceed preStopSleepSeconds + the drain"),
        ({"metrics": {"prometheusRule": {"enabled": True, "slo": {"latencySeconds": 0.12}}}},
         "must be a bucket bound of turnwise_request_duration_seconds"),
        ({"metrics": {"prometheusRule": {"enabled": True, "slo": {"availabilityTarget": 1}}}},
         "slo.availabilityTarget (1) must be between 0 and 1"),
    ],
)
def test_broken_combinations_fail_with_a_reason(chart: Renderer, values: dict, message: str) -> None:
    assert message in chart.error(values=values)


def test_embedded_store_is_allowed_for_one_replica(chart: Renderer) -> None:
    docs = chart.template(values={"valkey": {"enabled": False}, "autoscaling": {"enabled": False}, "replicaCount": 1})
    assert "TURNWISE_REDIS_URL" not in config_map(docs)
    assert "TURNWISE_REDIS_URL" not in env_of(container(docs, "turnwise"))


# ------------------------------------------------------------------------------------------- NOTES


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_notes_render(chart: Renderer, value_set: str) -> None:
    notes = chart.notes(*(() if value_set == "default" else (value_set,)))
    assert f"svc/{FULL}" in notes and "TURNWISE_BUNDLE=/models/current" in notes


def test_notes_warn_about_what_needs_attention(chart: Renderer) -> None:
    notes = chart.notes()
    assert "authentication is OFF" in notes
    assert "copied from turnwise/turnwise-bundle:0.1.0 by the init container into an emptyDir per pod." in notes
    assert f"the chart's Valkey ({FULL}-valkey:6379; one pod, no failover: use externalRedis in production)" in notes
    assert "downloaded from https://artifacts.example.com/" in chart.notes("bundle-url")
    assert "into the PVC" in chart.notes("bundle-oci")
    assert "already on the claim turnwise-models" in chart.notes("bundle-claim")
    assert "Alerts: PrometheusRule" in chart.notes("observability")
    assert "authentication is OFF" not in chart.notes("external-redis")
    assert "the startup probe allows 900 s" in chart.notes("gpu")
    assert "Bearer $API_KEY" in chart.notes("external-redis")
    assert "-H 'content-type: application/json' \\\n    -d '{" in notes
    embedded = chart.notes(values={"valkey": {"enabled": False}, "autoscaling": {"enabled": False}, "replicaCount": 1})
    assert "EMBEDDED" in embedded
