"""Shared fixtures: the embedded model (prepared once), one in-process vLLM engine per session, and a
real `vllm.entrypoints.openai.api_server` subprocess started as soon as collection sees a test needing it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from meta_rm.vllm_common import configure_cpu_environment
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.generators.vllm_local import VLLMGenerator
from server.core.items import read_jsonl, skip_reason
from server.core.settings import Settings

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


class Background:
    """A server subprocess started early; `wait()` blocks until its health route answers."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}-{port}.log"
        full_env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING", **env)
        full_env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=full_env)

    def wait(self) -> str:
        wait_http(self.url + "/health", self.proc, 420, self.log)
        return self.url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_vllm_api_server(model: Path) -> Background:
    """A real vLLM OpenAI-compatible server serving the embedded model (`vllm serve` is broken in vllm-cpu)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", EMBEDDED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "4096",
        "--structured-outputs-config.backend", "guidance",
    ]  # fmt: skip
    return Background("vllm-api-server", cmd, port, {})


def start_grm_server() -> Background:
    """A live `grm-server serve` on the embedded CPU default."""
    port = free_port()
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--log-level", "warning"]
    return Background("grm-server", cmd, port, {"GRM_JUDGING__MAX_TOKENS": "192"})


_SERVERS = pytest.StashKey[dict[str, Background]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the servers the selected tests need now, so they load while other tests run."""
    servers: dict[str, Background] = {}
    if any(item.get_closest_marker("remote") for item in items):
        servers["remote"] = start_vllm_api_server(prepare_embedded_model(cache_dir()))
    if any(item.get_closest_marker("live") for item in items):
        prepare_embedded_model(cache_dir())
        servers["live"] = start_grm_server()
    config.stash[_SERVERS] = servers


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in config.stash.get(_SERVERS, {}).values():
        server.stop()


def _server(request: pytest.FixtureRequest, marker: str) -> str:
    server = request.config.stash.get(_SERVERS, {}).get(marker)
    if server is None:
        pytest.fail(f"this fixture needs the `{marker}` marker on the test")
    return server.wait()


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    return prepare_embedded_model(cache_dir())


@pytest.fixture(scope="session")
def remote_url(request: pytest.FixtureRequest) -> str:
    """Base URL (…/v1) of the real vLLM OpenAI-compatible server."""
    return _server(request, "remote") + "/v1"


@pytest.fixture(scope="session")
def live_url(request: pytest.FixtureRequest) -> str:
    """Base URL of the live grm-server process (real uvicorn, real CPU engine)."""
    return _server(request, "live")


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


def load_items(name: str, limit: int) -> list[dict[str, Any]]:
    """Labelled items from ../shared/data/dev when present, else the committed sample."""
    path = DATA_DIR / name
    if not path.is_file():
        path = ROOT / "tests" / "data" / "dev_sample.jsonl"
    usable = [i for i in read_jsonl(path) if skip_reason(i) is None]  # the shared reader's rules
    usable.sort(key=lambda i: len(json.dumps(i["prompt"])) + sum(len(r) for r in i["responses"]))
    return usable[:limit]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's, through /usr/bin/chromedriver; apt-installed when missing) per session."""
    from tests.browser import start_browser  # selenium is imported only by the browser tests

    driver = start_browser()
    yield driver
    driver.quit()
