"""The Kubernetes manifests under deploy/kubernetes: schema-valid, and saying what matters.

Every manifest is checked offline against the Kubernetes JSON schemas that the
``kubernetes-validate`` package bundles (strict: an unknown field is an error), for the
oldest and the newest Kubernetes version we claim. Then the facts a schema cannot see:
probes on the bridge's real paths, a grace period longer than preStop plus the bridge's
drain, selectors that match, a Service that reaches the container, a non-root pod, and a
Secret example holding placeholders only.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from bridge.config import Settings
from bridge.harness import running_bridge
from bridge.metrics import Metrics, MetricsCollector

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still widely run, and the newest the package knows.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
PLACEHOLDER = "REPLACE_ME"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":  # kustomize's file, not an API object
            continue
        for doc in _documents(path):
            found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


def _one(kind: str) -> dict[str, Any]:
    docs = [doc for _, doc in _manifests() if doc["kind"] == kind]
    assert len(docs) == 1, f"expected one {kind}, found {len(docs)}"
    return docs[0]


def _container() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env_of_pod() -> dict[str, str]:
    """What the pod's environment would be: the ConfigMap, then the example Secret."""
    env: dict[str, str] = {}
    env.update(_one("ConfigMap")["data"])
    env.update(_one("Secret")["stringData"])
    return env


MANIFESTS = _manifests()


def test_every_kind_is_there():
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
    } <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "manifest"), MANIFESTS, ids=[name for name, _ in MANIFESTS])
def test_manifest_is_schema_valid(name, manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def _broken_deployments() -> list[tuple[str, dict[str, Any]]]:
    good = _one("Deployment")
    misspelled = copy.deepcopy(good)
    container = misspelled["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicas"] = "two"
    no_selector = copy.deepcopy(good)
    del no_selector["spec"]["selector"]
    bad_port = copy.deepcopy(good)
    bad_port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    return [
        ("misspelled field", misspelled),
        ("string replicas", wrong_type),
        ("no selector", no_selector),
        ("named containerPort", bad_port),
    ]


@pytest.mark.parametrize(("what", "manifest"), _broken_deployments(), ids=lambda v: str(v)[:20])
def test_validator_rejects_a_broken_copy(what, manifest):
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, VERSIONS[-1], strict=True)


def test_kustomization_lists_the_manifests_but_not_the_secret_example():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    for name in listed:
        assert (K8S / name).is_file(), name
    assert "secret.example.yaml" not in listed
    assert {"deployment.yaml", "service.yaml", "pdb.yaml", "configmap.yaml"} <= set(listed)


def test_probes_use_the_bridge_paths():
    container = _container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def _prestop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


def test_grace_period_covers_prestop_and_the_drain():
    container = _container()
    pod = _one("Deployment")["spec"]["template"]["spec"]
    pre_stop = _prestop_seconds(container)
    assert pre_stop > 0
    # The drain the pods will have: the ConfigMap's value, checked by the bridge's own
    # reader, and never less than the bridge's default.
    configured = Settings.from_env(_env_of_pod(), env_file=None).shutdown_drain_s
    drain = max(configured, Settings.shutdown_drain_s)
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


def test_configmap_and_secret_example_are_a_valid_bridge_config():
    settings = Settings.from_env(_env_of_pod(), env_file=None)
    assert settings.host == "0.0.0.0"
    assert settings.public_url and settings.public_url.startswith("https://")
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert settings.twilio_auth_token  # signatures checked
    env = _env_of_pod()
    # Names the cluster-wide work relies on (bridge serve --workers / REDIS_URL).
    assert env["REDIS_URL"].startswith(("redis://", "rediss://"))
    assert int(env["WORKERS"]) >= 1


def test_secret_example_holds_placeholders_only():
    secret = _one("Secret")
    assert "data" not in secret  # base64 would hide what is in it
    for name, value in secret["stringData"].items():
        assert PLACEHOLDER in value, f"{name} is not a placeholder"
    config = _one("ConfigMap")["data"]
    for secret_name in secret["stringData"]:
        assert secret_name not in config, f"{secret_name} belongs in the Secret"


def test_env_comes_from_the_configmap_and_the_secret():
    sources = _container()["envFrom"]
    assert {"name": _one("ConfigMap")["metadata"]["name"]} in [
        s.get("configMapRef") for s in sources
    ]
    assert {"name": _one("Secret")["metadata"]["name"]} in [s.get("secretRef") for s in sources]
    assert "env" not in _container() or all("value" not in e for e in _container()["env"])


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_match_the_pods():
    labels = _pod_labels()
    deployment = _one("Deployment")
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert _selects(_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert _selects(_one("Service")["spec"]["selector"], labels)
    # A selector that also matched other pods would count them: it must be exact.
    assert (
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
        == (deployment["spec"]["selector"]["matchLabels"])
    )
    assert not _selects({**_one("Service")["spec"]["selector"], "x": "y"}, labels)


def test_service_targets_the_container_port():
    ports = _container()["ports"]
    for port in _one("Service")["spec"]["ports"]:
        target = port["targetPort"]
        match = [p for p in ports if target in (p.get("name"), p["containerPort"])]
        assert match, f"Service port {port} reaches no container port"
        assert match[0]["containerPort"] == int(_env_of_pod()["PORT"])


def test_pod_runs_as_non_root_on_a_read_only_root():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # What the bridge writes has a volume: /tmp, and recordings.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    recordings = Path(_env_of_pod()["RECORDINGS_DIR"])
    assert any(recordings.is_relative_to(m) for m in mounts)


def test_resources_are_bounded():
    resources = _container()["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]


def test_rollout_keeps_capacity_and_the_pdb_allows_drains():
    strategy = _one("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0 and strategy["maxSurge"] >= 1
    pdb = _one("PodDisruptionBudget")["spec"]
    assert (
        pdb.get("maxUnavailable", 0) >= 1
        or pdb.get("minAvailable", 0) < (_one("Deployment")["spec"]["replicas"])
    )


def test_hpa_scales_the_deployment_on_a_metric_the_bridge_exports():
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        _one("Deployment")["metadata"]["name"],
    )
    [metric] = hpa["metrics"]
    assert metric["type"] == "Pods"
    exported = {family.name for family in MetricsCollector(Metrics()).collect()}
    assert metric["pods"]["metric"]["name"] in exported
    assert hpa["minReplicas"] >= 2
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_probe_paths_answer_as_the_manifest_expects():
    """A real bridge: the readiness path turns 503 when draining, liveness stays on HTTP."""
    container = _container()
    ready = container["readinessProbe"]["httpGet"]["path"]
    live = container["livenessProbe"]["httpGet"]["path"]

    async def main() -> None:
        async with running_bridge(Settings()) as bridge, httpx.AsyncClient() as client:
            assert (await client.get(bridge.base_url + ready)).status_code == 200
            assert (await client.get(bridge.base_url + live)).status_code == 200
            bridge.services.draining = True
            assert (await client.get(bridge.base_url + ready)).status_code == 503

    asyncio.run(asyncio.wait_for(main(), 30))
