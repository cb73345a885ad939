"""Shared fixtures: the embedded model (prepared once), one in-process vLLM engine per session, the real
servers (tests/servers.py) started as soon as collection sees a test needing them, and labelled dev items."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from meta_rm.protocol import MetaRM
from meta_rm.vllm_common import configure_cpu_environment
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.generators.base import Generator
from server.core.generators.vllm_local import VLLMGenerator
from server.core.items import read_jsonl, skip_reason
from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.http.app import create_app
from tests.fakes import ScriptedGenerator
from tests.servers import Background, start_grm_server, start_vllm_server

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "dev"


def cache_dir() -> Path:
    return Settings().cache_dir


def make_service(gen: Generator, meta: MetaRM | None = None, /, **overrides: object) -> JudgeService:
    """The judging service (generic template) over any generator, a fake or the real engine; settings
    overridden by dotted keys."""
    return JudgeService(gen, PromptBuilder(TemplateName.GENERIC), Settings().with_overrides(overrides), meta_rm=meta)


@contextlib.asynccontextmanager
async def app_client(
    overrides: dict[str, Any] | None = None, **engines: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real app (lifespan run) behind an httpx client on ASGITransport; a scripted generator by default."""
    engines.setdefault("generator", ScriptedGenerator())
    app = create_app(Settings().with_overrides(overrides or {}), **engines)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client, app


@pytest_asyncio.fixture
async def app_factory() -> AsyncIterator[Any]:
    """`await app_factory(overrides, **engines)` -> (client, app): as many apps as a test needs, closed after it."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(overrides: dict[str, Any] | None = None, **kw: Any) -> tuple[httpx.AsyncClient, Any]:
            return await stack.enter_async_context(app_client(overrides, **kw))

        yield make


def assert_error(r: httpx.Response, status: int, param: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """The one error body: `status`, all four fields, a message; `param` and `type` when given."""
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if kind is not None:
        assert err["type"] == kind, err
    return err


def start_vllm_api_server(model: Path) -> Background:
    """The real vLLM OpenAI-compatible server the `remote` tests share."""
    return start_vllm_server(model)


def start_live_grm_server() -> Background:
    """The live `grm-server serve` on the embedded CPU default that the `live` tests share."""
    return start_grm_server(env={"GRM_JUDGING__MAX_TOKENS": "192"})


_SERVERS = pytest.StashKey[dict[str, Background]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the servers the selected tests need now, so they load while other tests run."""
    servers: dict[str, Background] = {}
    if any(item.get_closest_marker("remote") for item in items):
        servers["remote"] = start_vllm_api_server(prepare_embedded_model(cache_dir()))
    if any(item.get_closest_marker("live") for item in items):
        prepare_embedded_model(cache_dir())
        servers["live"] = start_live_grm_server()
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


def shortest_labelled_items(name: str, limit: int) -> list[dict[str, Any]]:
    """Labelled items from the development data (DATA_DIR, outside the repository) when present, else the committed
    sample."""
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
