"""Shared fixtures: the embedded model (prepared once), one in-process vLLM engine per session, and a
real `vllm.entrypoints.openai.api_server` subprocess started as soon as collection sees a test needing it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from server.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.generators.vllm_local import VLLMGenerator, configure_cpu_environment
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "dev"


def cache_dir() -> Path:
    return Settings().cache_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not up after {timeout_s} s:\n{log.read_text()[-4000:]}")


class Remote:
    """A real vLLM OpenAI-compatible server serving the embedded model."""

    def __init__(self, model: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log_dir / "vllm-api-server.log"
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--served-model-name", EMBEDDED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--enforce-eager", "--max-model-len", "4096",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)

    def wait(self) -> str:
        wait_http(self.url.removesuffix("/v1") + "/health", self.proc, 300, self.log)
        return self.url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


_REMOTE_KEY = pytest.StashKey[Remote]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the remote server now, so it loads while the in-process engine tests run."""
    if any(item.get_closest_marker("remote") for item in items):
        log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
        config.stash[_REMOTE_KEY] = Remote(prepare_embedded_model(cache_dir()), log_dir)


def pytest_unconfigure(config: pytest.Config) -> None:
    remote = config.stash.get(_REMOTE_KEY, None)
    if remote is not None:
        remote.stop()


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    return prepare_embedded_model(cache_dir())


@pytest.fixture(scope="session")
def remote_url(request: pytest.FixtureRequest) -> str:
    remote = request.config.stash.get(_REMOTE_KEY, None)
    if remote is None:
        pytest.fail("remote fixture used by a test without the `remote` marker")
    return remote.wait()


@pytest_asyncio.fixture(scope="session")
async def vllm_generator(embedded_model: Path) -> AsyncIterator[VLLMGenerator]:
    """One real in-process vLLM CPU engine for the whole session."""
    settings = Settings()
    configure_cpu_environment(str(settings.cache_dir), 1)
    named = settings.generator.model_copy(update={"served_model_name": EMBEDDED_NAME})
    gen = VLLMGenerator(named, str(embedded_model), str(settings.cache_dir))
    await gen.start()
    yield gen
    await gen.close()


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    yield DATA_DIR
