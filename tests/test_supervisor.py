"""Engine supervision with fault-injecting fakes: a dead engine heals, or /health says it cannot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from meta_rm.errors import MetaRMUnavailableError
from meta_rm.protocol import MetaRMInput
from server.core.errors import BackendUnavailableError
from server.core.generators.base import Generation, SamplingConfig
from server.core.settings import Settings, SupervisionSettings
from server.core.supervisor import EngineState, SupervisedGenerator, SupervisedMetaRM, Supervisor
from server.http.app import create_app
from tests.fakes import ScriptedGenerator, ScriptedMetaRM
from tests.threaded import Prober, serve_in_thread

FAST = {"backoff_initial_s": 0.0, "backoff_max_s": 0.0, "check_interval_s": 0.01}
SCORE = {"query": "q?", "responses": ["a", "bbb"], "k": 2, "seed": 1}


@dataclass
class MortalGenerator(ScriptedGenerator):
    """A scripted engine that can be killed (in-flight calls fail at once) and whose starts can fail."""

    fail_starts: int = 0
    starts: int = 0
    hang: bool = False
    hanging: int = 0
    _death: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise BackendUnavailableError("engine failed to start: no memory")
        self.down = False
        self._death = asyncio.Event()

    def kill(self) -> None:
        self.down = True
        self._death.set()

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        if self.hang and not self.down:
            self.hanging += 1
            await self._death.wait()
        return await super().generate(prompt, sampling, request_id)


@dataclass
class MortalMetaRM(ScriptedMetaRM):
    down: bool = False
    starts: int = 0

    async def start(self) -> None:
        self.starts += 1
        self.down = False

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        if self.down:
            raise MetaRMUnavailableError("Meta RM engine is dead")
        return await super().score(items)

    async def check_ready(self) -> None:
        if self.down:
            raise MetaRMUnavailableError("Meta RM engine is dead")


async def until(sup: Supervisor, state: EngineState, restarts: int = 0, timeout_s: float = 5.0) -> None:
    """Bounded poll on the supervisor's state (and restart count)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while sup.state is not state or sup.restarts < restarts:
        assert loop.time() < deadline, f"{sup.name} stayed {sup.state} ({sup.reason}), wanted {state}"
        await asyncio.sleep(0.005)


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Any]:
    stack: list[Any] = []

    async def make(gen: Any, meta_rm: Any = None, **supervision: Any) -> httpx.AsyncClient:
        settings = Settings().with_overrides({f"supervision.{k}": v for k, v in {**FAST, **supervision}.items()})
        app = create_app(settings, generator=gen, meta_rm=meta_rm)
        ctx = app.router.lifespan_context(app)
        await ctx.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        stack.append((ctx, client))
        return client

    yield make
    for ctx, client in stack:
        await client.aclose()
        await ctx.__aexit__(None, None, None)


def supervised(gen: MortalGenerator, **kw: Any) -> SupervisedGenerator:
    return SupervisedGenerator(gen, SupervisionSettings(**{**FAST, **kw}))


async def test_a_dead_engine_heals_and_judging_resumes(serve: Any) -> None:
    gen = MortalGenerator()
    sup_gen = supervised(gen, backoff_initial_s=0.2, backoff_max_s=0.2)
    client = await serve(sup_gen)
    assert (await client.post("/score", json=SCORE)).status_code == 200
    gen.kill()
    await until(sup_gen.supervisor, EngineState.RESTARTING)
    r = await client.post("/score", json=SCORE)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ready = await client.get("/ready")
    assert ready.status_code == 503 and "restarting" in ready.json()["error"]["message"]
    assert (await client.get("/health")).status_code == 200  # healing: do not replace the process yet
    await until(sup_gen.supervisor, EngineState.READY)
    assert gen.starts == 2 and sup_gen.supervisor.restarts == 1
    assert (await client.post("/score", json=SCORE)).status_code == 200
    assert (await client.get("/ready")).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'grm_engine_restarts_total{engine="grm"} 1.0' in text
    assert 'grm_engine_state{engine="grm",state="ready"} 1.0' in text


@pytest.mark.parametrize(("max_restarts", "fail_starts"), [(0, 0), (2, 2), (3, 99)])
async def test_exhausted_restarts_make_health_fail(serve: Any, max_restarts: int, fail_starts: int) -> None:
    gen = MortalGenerator()
    sup_gen = supervised(gen, max_restarts=max_restarts)
    client = await serve(sup_gen)
    gen.fail_starts = fail_starts
    gen.kill()
    await until(sup_gen.supervisor, EngineState.FAILED)
    assert gen.starts == 1 + max_restarts and sup_gen.supervisor.restarts == 0
    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    assert "grm engine failed" in health.json()["reason"]
    assert (await client.post("/score", json=SCORE)).status_code == 503
    assert 'grm_engine_state{engine="grm",state="failed"} 1.0' in (await client.get("/metrics")).text


async def test_a_restart_that_fails_once_then_succeeds_heals(serve: Any) -> None:
    gen = MortalGenerator()
    sup_gen = supervised(gen, max_restarts=3)
    client = await serve(sup_gen)
    gen.fail_starts = 2
    gen.kill()
    await until(sup_gen.supervisor, EngineState.READY, restarts=1)
    assert gen.starts == 4 and sup_gen.supervisor.restarts == 1
    assert (await client.post("/score", json=SCORE)).status_code == 200


async def test_in_flight_requests_fail_with_503_when_the_engine_dies(serve: Any) -> None:
    gen = MortalGenerator(hang=True)
    sup_gen = supervised(gen, backoff_initial_s=0.5, backoff_max_s=0.5)
    client = await serve(sup_gen)
    pending = asyncio.create_task(client.post("/score", json=SCORE))
    for _ in range(1000):  # bounded poll: the request reached the engine
        if gen.hanging or pending.done():
            break
        await asyncio.sleep(0.005)
    assert gen.hanging and not pending.done()
    gen.kill()
    r = await asyncio.wait_for(pending, 5)
    assert r.status_code == 503 and "retry-after" in r.headers
    assert r.json()["error"]["type"]


async def test_the_restart_budget_spans_the_life_of_the_process(serve: Any) -> None:
    gen = MortalGenerator()
    sup_gen = supervised(gen, max_restarts=2)
    client = await serve(sup_gen)
    for restarts in (1, 2):
        gen.kill()
        await until(sup_gen.supervisor, EngineState.READY, restarts=restarts)
    assert (await client.post("/score", json=SCORE)).status_code == 200
    gen.kill()  # a third death: the budget is spent, the process must be replaced
    await until(sup_gen.supervisor, EngineState.FAILED)
    assert (await client.get("/health")).status_code == 503 and gen.starts == 3


async def test_an_engine_that_never_started_is_unhealthy(serve: Any) -> None:
    gen = MortalGenerator(fail_starts=1)
    client = await serve(supervised(gen))
    health = await client.get("/health")
    assert health.status_code == 503 and "failed to start" in health.json()["reason"]
    assert (await client.get("/ready")).status_code == 503


async def test_the_meta_rm_engine_heals_too(serve: Any) -> None:
    rm = MortalMetaRM()
    sup_rm = SupervisedMetaRM(rm, SupervisionSettings(**FAST))
    client = await serve(ScriptedGenerator(), meta_rm=sup_rm)
    rm.down = True
    await until(sup_rm.supervisor, EngineState.READY, restarts=1)
    assert rm.starts == 2 and sup_rm.supervisor.restarts == 1
    assert (await client.get("/ready")).status_code == 200
    assert 'grm_engine_restarts_total{engine="meta_rm"} 1.0' in (await client.get("/metrics")).text


async def test_remote_engines_are_not_supervised_and_health_stays_up(serve: Any) -> None:
    gen = MortalGenerator()
    client = await serve(gen)  # not wrapped: a remote/foreign engine
    gen.kill()
    assert (await client.get("/ready")).status_code == 503
    assert (await client.get("/health")).status_code == 200


def test_supervise_wraps_exactly_the_restartable_generators() -> None:
    """What a backend declares (`Generator.restartable`) decides supervision: no isinstance on a backend class."""
    from server.core.engines import supervise
    from server.core.settings import Settings

    owned = ScriptedGenerator(restartable=True, retried=2)
    wrapped, rm = supervise(Settings(), owned, None)
    assert isinstance(wrapped, SupervisedGenerator) and wrapped.inner is owned and rm is None
    assert not wrapped.restartable and wrapped.retried == 2  # supervised once; the retry count shows through
    remote = ScriptedGenerator(restartable=False)
    assert supervise(Settings(), remote, None)[0] is remote


class SlowEngine:
    """Stands in for `AsyncLLM`: built by a blocking constructor, stopped by a blocking shutdown, killable."""

    def __init__(self, build_s: float) -> None:
        time.sleep(build_s)  # what AsyncLLM.from_engine_args does while its engine process loads the model
        self.errored = False
        self.shut = False

    def shutdown(self) -> None:
        time.sleep(1.0)  # joining the dead engine process
        self.shut = True


def test_a_blocking_engine_rebuild_keeps_health_and_ready_answering(
    embedded_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process engine's constructor blocks for 3 s (AsyncLLM loading a model) and its shutdown for 1 s;
    while the supervisor tears the dead one down and builds a new one, /health and /ready keep answering
    within 1 s (a Kubernetes liveness probe's timeout) over real HTTP: the build runs off the event loop."""
    from vllm.v1.engine.async_llm import AsyncLLM

    from server.core.generators.vllm_local import VLLMGenerator

    built: list[SlowEngine] = []

    def from_engine_args(args: Any, *rest: Any, **kw: Any) -> SlowEngine:
        built.append(SlowEngine(3.0))
        return built[-1]

    monkeypatch.setattr(AsyncLLM, "from_engine_args", staticmethod(from_engine_args))
    settings = Settings().with_overrides({f"supervision.{k}": v for k, v in FAST.items()})
    gen = VLLMGenerator(settings.generator, str(embedded_model), str(settings.cache_dir))
    with serve_in_thread(create_app(settings, generator=gen)) as url:
        assert httpx.get(url + "/ready", timeout=5).status_code == 200 and len(built) == 1
        with Prober(url + "/health") as health, Prober(url + "/ready") as ready:
            time.sleep(0.3)
            built[0].errored = True  # the engine process died
            deadline = time.monotonic() + 60
            while not (len(built) == 2 and ready.statuses[-1:] == [200]):
                assert time.monotonic() < deadline, f"no rebuild: {len(built)} built, /ready {ready.statuses[-5:]}"
                time.sleep(0.05)
    assert built[0].shut  # the dead engine was shut down before the rebuild
    assert 503 in ready.statuses, ready.statuses  # the heal was seen...
    assert len(health.latencies) >= 20  # ...over 4+ s of polling every 0.1 s
    assert set(health.statuses) == {200}, health.statuses
    assert max(health.latencies) < 1.0 and max(ready.latencies) < 1.0, (health.latencies, ready.latencies)
