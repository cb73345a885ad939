"""What the deployment tests read: the Dockerfile stages (through deploy/replay_install.py), compose files with
their variables unset, the Kubernetes manifests, the settings leaves and the app's routes."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

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
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GRM_")]:
        monkeypatch.delenv(name)
