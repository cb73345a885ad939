"""The Kubernetes manifests, probes and documented fault semantics agree with the app: validated against the
Kubernetes schema, every probed route exists, and the ingress hashes a prompt group onto one replica."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.core.settings import Settings
from tests.deploy_files import (
    K8S,
    ROOT,
    app_routes,
    clean_env,
    container,
    flag,
    k8s,
    k8s_docs,
    last,
    server_env_sets,
    url_parts,
)

__all__ = ["clean_env"]  # the autouse fixture: no GRM_* variable of the host leaks into these tests


def test_k8s_manifests_are_valid_kubernetes_objects() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    docs = k8s_docs()
    for doc in docs:
        kubernetes_validate.validate(doc, "1.32", strict=True)
    if shutil.which("kubectl"):
        rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
        assert len([d for d in yaml.safe_load_all(rendered) if d]) == len(docs)


def test_k8s_server_probes_and_ports() -> None:
    deployment, pod = k8s("Deployment", "grm-server"), container(k8s("Deployment", "grm-server"))
    refs = {(r.get("configMapRef") or r.get("secretRef"))["name"] for r in pod["envFrom"]}
    assert refs == {"grm-server-settings", "grm-server-api-keys"}
    port = int(server_env_sets()["k8s"]["GRM_SERVER__PORT"])
    assert pod["ports"] == [{"name": "http", "containerPort": port}]
    probes = {kind: pod[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {k: p["path"] for k, p in probes.items()} == {
        "startupProbe": "/health",
        "readinessProbe": "/ready",
        "livenessProbe": "/health",
    }
    assert {p["port"] for p in probes.values()} == {"http"}
    assert k8s("Service", "grm-server")["spec"]["ports"][0]["targetPort"] == "http"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "nvidia.com/gpu" not in str(pod["resources"]), "the reward server itself needs no GPU"


def test_k8s_front_is_one_replica_so_every_clients_rollouts_are_joined() -> None:
    """Rollouts are joined per process and raw clients send no group key: the front runs one replica, nothing
    scales it out, updates overlap instead of leaving a gap, and a second replica would keep clients apart."""
    deployment = k8s("Deployment", "grm-server")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    scalers = [d for d in k8s_docs() if d["kind"] == "HorizontalPodAutoscaler"]
    assert [d for d in scalers if d["spec"]["scaleTargetRef"]["name"] == "grm-server"] == []
    # a PodDisruptionBudget that keeps one pod of one replica would block every node drain
    budgets = [d for d in k8s_docs() if d["kind"] == "PodDisruptionBudget"]
    assert [b for b in budgets if b["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]] == []
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    lost_node = {t["key"]: t["tolerationSeconds"] for t in spec["template"]["spec"]["tolerations"]}
    assert lost_node.keys() == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert max(lost_node.values()) <= 30, "the default 300 s leaves trainers without a reward for 5 minutes"
    service = k8s("Service", "grm-server")["spec"]
    assert service["selector"] == spec["selector"]["matchLabels"]
    assert service["sessionAffinity"] == "ClientIP"
    assert service["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600


@pytest.mark.parametrize(
    ("url_key", "engine"), [("GRM_GENERATOR__BASE_URL", "grm-vllm"), ("GRM_META_RM__BASE_URL", "meta-rm-vllm")]
)
def test_k8s_front_judges_through_the_engine_services(url_key: str, engine: str) -> None:
    """The front holds no model: it reaches each engine tier through that tier's Service, which spreads its calls
    over the engine replicas; the engines scale by replicas, the front does not."""
    env = server_env_sets()["k8s"]
    backend = {"GRM_GENERATOR__BASE_URL": "GRM_GENERATOR__BACKEND", "GRM_META_RM__BASE_URL": "GRM_META_RM__BACKEND"}
    assert env[backend[url_key]] in {"openai", "remote"}
    host, port, _ = url_parts(env[url_key])
    assert host == engine
    service, deployment = k8s("Service", engine)["spec"], k8s("Deployment", engine)
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service.get("sessionAffinity", "None") == "None", "engine calls must spread over the engine replicas"
    assert port in {p["port"] for p in service["ports"]}
    front = k8s("Deployment", "grm-server")["spec"]["selector"]["matchLabels"]
    assert service["selector"] != front


def test_k8s_ingress_routes_a_prompt_group_to_one_replica_by_the_client_header() -> None:
    from server.integrations.client import GROUP_KEY_HEADER

    ingress = k8s("Ingress", "grm-server")
    notes = ingress["metadata"]["annotations"]
    # ingress-nginx consistent hashing on the header the client and adapters send ($http_ + lower, - -> _)
    assert notes["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_" + GROUP_KEY_HEADER.lower().replace(
        "-", "_"
    )
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= Settings().limits.request_timeout_s
    body_mb = int(notes["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m"))
    assert body_mb * 1_000_000 >= Settings().limits.max_body_bytes
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    service = k8s("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["selector"] == k8s("Deployment", "grm-server")["spec"]["selector"]["matchLabels"]


INGRESS_NGINX_UPSTREAM_KEEPALIVE_S = 60  # ingress-nginx's default upstream-keepalive-timeout (controller ConfigMap)


def test_k8s_ingress_timeouts_complement_the_server_connection_settings() -> None:
    notes = k8s("Ingress", "grm-server")["metadata"]["annotations"]
    env = server_env_sets()["k8s"]
    server = (
        Settings()
        .with_overrides(
            {
                f"server.{k.removeprefix('GRM_SERVER__').lower()}": v
                for k, v in env.items()
                if k.startswith("GRM_SERVER__") and k.endswith("_S")
            }
        )
        .server
    )
    request_timeout_s = float(env["GRM_LIMITS__REQUEST_TIMEOUT_S"])
    # a judgment may take the whole request deadline: nginx must wait longer for the answer
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > request_timeout_s
    # nginx takes whole bodies from slow clients before it calls a pod, and sends them within the body deadline
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= server.body_timeout_s
    assert int(notes["nginx.ingress.kubernetes.io/proxy-connect-timeout"]) <= server.header_timeout_s
    # nginx closes its idle upstream connections before the server does (else a reused one can get a 502)
    assert server.keep_alive_s > INGRESS_NGINX_UPSTREAM_KEEPALIVE_S
    doc = (ROOT / "docs" / "deploy.md").read_text()
    section = doc[doc.index("## Connections and timeouts") :]
    for name in ("keep_alive_s", "header_timeout_s", "body_timeout_s", "max_header_bytes", "max_connections"):
        assert f"server.{name}" in section, name
    for key in ("client-header-timeout", "client-body-timeout", "upstream-keepalive-timeout", "proxy-read-timeout"):
        assert key in section, key


@pytest.mark.parametrize(
    ("name", "url_key"), [("grm-vllm", "GRM_GENERATOR__BASE_URL"), ("meta-rm-vllm", "GRM_META_RM__BASE_URL")]
)
def test_k8s_engines_request_gpus_for_their_tensor_parallel_size(name: str, url_key: str) -> None:
    pod = container(k8s("Deployment", name))
    assert pod["image"] == last("gpu", "FROM").split()[0], "engines run the vLLM release the image is built on"
    tp = next(e["value"] for e in pod["env"] if e["name"] == "TENSOR_PARALLEL_SIZE")
    assert flag(pod["args"], "tensor-parallel-size") == "$(TENSOR_PARALLEL_SIZE)"
    assert (
        str(pod["resources"]["limits"]["nvidia.com/gpu"]) == str(pod["resources"]["requests"]["nvidia.com/gpu"]) == tp
    )
    settings = server_env_sets()["k8s"]
    host, port, _ = url_parts(settings[url_key])
    service = k8s("Service", host)
    assert (
        service["spec"]["ports"][0]["port"] == port
        and service["spec"]["selector"] == k8s("Deployment", name)["spec"]["selector"]["matchLabels"]
    )
    assert int(flag(pod["args"], "port")) == pod["ports"][0]["containerPort"]
    assert pod["args"][0] == settings[url_key.replace("BASE_URL", "MODEL")]
    assert {pod[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/health"}


def test_vllm_serves_the_route_its_probes_hit() -> None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm not installed")
    sources = (Path(spec.origin).parent / "entrypoints").rglob("*.py")
    assert any('"/health"' in p.read_text(errors="ignore") for p in sources)


def test_probes_health_checks_and_documented_calls_hit_real_routes() -> None:
    routes = app_routes()
    pod = container(k8s("Deployment", "grm-server"))
    probed = {pod[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    probed |= {"/health", "/metrics"}  # HEALTHCHECK of the image and compose files, the Prometheus annotation
    for path in probed:
        assert "GET" in routes.get(path, set()), f"{path} is probed but the app has no GET {path}"
    documented = set(re.findall(r"(?:localhost|127\.0\.0\.1):8000(/[\w/]+)", (ROOT / "docs" / "deploy.md").read_text()))
    assert documented and documented <= set(routes), f"docs/deploy.md calls unknown routes: {documented - set(routes)}"


def test_deploy_doc_states_the_fault_semantics_of_every_supervision_setting() -> None:
    from server.core.settings import SupervisionSettings

    doc = (ROOT / "docs" / "deploy.md").read_text()
    section = doc[doc.index("## Engine faults") :]
    missing = [f"supervision.{name}" for name in SupervisionSettings.model_fields if name != "check_interval_s"]
    assert [m for m in missing if m not in section] == []
    assert "grm_engine_restarts_total" in section and "grm_engine_state" in section
    for remote in ("generator.connection_retries", "meta_rm.connection_retries", "grm_engine_retries_total"):
        assert f"`{remote}" in section, remote
    liveness = container(k8s("Deployment", "grm-server"))["livenessProbe"]["httpGet"]["path"]
    assert liveness == "/health" and "/health" in section  # liveness must be the route that fails only when dead


def test_deploy_doc_states_the_fronts_policy_and_sizes_it_from_measured_capacity() -> None:
    """docs/deploy.md says what server.yaml does, and its sizing table is the bench's committed measurement."""
    import json

    doc = (ROOT / "docs" / "deploy.md").read_text()
    section = doc[doc.index("## One front, many engines") : doc.index("## The CPU install")]
    spec = k8s("Deployment", "grm-server")["spec"]
    assert spec["replicas"] == 1 and "one replica, no autoscaler" in section
    assert f"sessionAffinity: {k8s('Service', 'grm-server')['spec']['sessionAffinity']}" in section
    rolling = spec["strategy"]["rollingUpdate"]
    assert f"`maxSurge: {rolling['maxSurge']}`, `maxUnavailable: {rolling['maxUnavailable']}`" in section
    cpu = container(k8s("Deployment", "grm-server"))["resources"]["requests"]["cpu"]
    assert f'`requests.cpu: "{cpu}"`' in section
    results = ROOT / "bench" / "results"
    measured = json.loads((results / "front_capacity.json").read_text())["rows"]
    table = re.findall(r"^\| (\d+) \| (\d+) x (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", section, re.M)
    assert table == [
        tuple(
            str(round(r[key]))
            for key in ("k", "prompts", "rollouts", "rollout_calls", "calls_per_cpu_s", "judgments_per_cpu_s")
        )
        for r in measured
    ]
    (rule,) = re.findall(r"one core takes over (\d+) rollout calls per second", section)
    slower = json.loads((results / "front_capacity_window_0.5.json").read_text())["rows"]
    assert all(int(rule) <= r["calls_per_cpu_s"] for r in measured + slower), "the rule must hold in every run"
    assert all(r["valid_fraction"] == 1.0 for r in measured + slower)
