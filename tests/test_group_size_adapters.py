"""Each adapter that can send the trainer's group size G (X-GRM-Group-Size) does, and the server joins on it: G
per-sample calls that arrive far apart (more than the join window) through the adapter against a real uvicorn
server on a scripted engine are one joint judgment, and the header wins over `rewards.group_size`."""

from __future__ import annotations

import asyncio
import re
import time
from argparse import Namespace
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from server.core.settings import Settings
from server.integrations import slime, verl
from server.integrations.areal import GRMRewardFn
from server.integrations.client import GROUP_SIZE_HEADER, AsyncGRMClient, unit
from tests.browser import ThreadServer
from tests.fakes import shown_responses

G = 4
TEXTS = ["a", "bb", "ccc", "dddd"]  # the scripted judge scores a response by its length: 1, 2, 3, 4
ARRIVALS = [0.0, 0.3, 0.7, 1.1]  # seconds: every gap is several join windows (0.05 s)
SETTINGS = {"judging.k": 1, "meta_rm.backend": "none", "rewards.join_max_wait_s": 30}
SERVERS = {
    "window": {},  # no rewards.group_size: without the header the window judges these one by one
    "setting8": {"rewards.group_size": 8},  # G = 8 from the setting would wait the 30 s max wait
}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[ThreadServer]:
    with ThreadServer(Settings().with_overrides({**SETTINGS, **SERVERS[request.param]})) as running:
        yield running


@dataclass
class Joined:
    judgments: list[list[str]]
    size_sum: float
    callers_sum: float
    elapsed_s: float


def joined(server: ThreadServer, elapsed_s: float) -> Joined:
    metrics = httpx.get(f"{server.url}/metrics").text

    def total(name: str) -> float:
        found = re.search(rf"^{name}_sum (\S+)$", metrics, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    judgments = [sorted(shown_responses(prompt)) for prompt, _, _ in server.generator.calls]
    return Joined(judgments, total("grm_reward_join_size"), total("grm_reward_join_callers"), elapsed_s)


def assert_one_group(result: Joined) -> None:
    assert result.judgments == [TEXTS], result.judgments  # one judgment of the whole group
    assert (result.size_sum, result.callers_sum) == (float(G), float(G))
    assert result.elapsed_s < 10  # judged when the G-th arrived, not at the 30 s max wait


async def spread(call: Callable[[int, str], Awaitable[float]]) -> tuple[list[float], float]:
    async def one(i: int, text: str) -> float:
        await asyncio.sleep(ARRIVALS[i])
        return await call(i, text)

    start = time.monotonic()
    async with asyncio.timeout(60):
        rewards = await asyncio.gather(*(one(i, t) for i, t in enumerate(TEXTS)))
    return list(rewards), time.monotonic() - start


def test_the_async_client_sends_its_group_size(server: ThreadServer) -> None:
    async def main() -> tuple[list[float], float]:
        async with AsyncGRMClient(server.url, knobs={"k": 1}, group_size=G) as client:
            return await spread(lambda i, text: client.reward("P", text))

    rewards, elapsed = asyncio.run(main())
    assert rewards == [float(len(t)) for t in TEXTS]
    assert_one_group(joined(server, elapsed))


def test_the_header_is_what_joins_them() -> None:
    """The same spread without a group size: the window judges them one by one (so the spread defeats it)."""
    with ThreadServer(Settings().with_overrides(SETTINGS)) as server:

        async def main() -> tuple[list[float], float]:
            async with AsyncGRMClient(server.url, knobs={"k": 1}) as client:
                return await spread(lambda i, text: client.reward("P", text))

        rewards, elapsed = asyncio.run(main())
        assert rewards == [float(len(t)) for t in TEXTS]
        assert sorted(joined(server, elapsed).judgments) == [[t] for t in TEXTS]


@dataclass
class Sample:
    """The fields of slime's `Sample` that a reward function reads (slime 624b824)."""

    prompt: str
    response: str
    label: str | None = None


@pytest.mark.parametrize("source", ["args", "env"])
def test_slime_sends_n_samples_per_prompt(server: ThreadServer, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRM_URL", "GRM_GROUP_SIZE", "GRM_KNOBS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRM_KNOBS", '{"k": 1}')
    args = Namespace(rm_url=server.url, n_samples_per_prompt=G if source == "args" else None)
    if source == "env":
        monkeypatch.setenv("GRM_GROUP_SIZE", str(G))

    async def main() -> tuple[list[float], float]:
        try:
            return await spread(lambda i, text: _slime_one(args, text))
        finally:
            await slime.close_clients()

    rewards, elapsed = asyncio.run(main())
    assert rewards == [float(len(t)) for t in TEXTS]
    assert_one_group(joined(server, elapsed))


async def _slime_one(args: Any, text: str) -> float:
    reward = await slime.grm_rm(args, Sample("P", text))
    assert isinstance(reward, float)
    return reward


def test_verl_compute_score_sends_group_size(server: ThreadServer) -> None:
    kwargs: dict[str, Any] = {"url": server.url, "k": 1, "group_size": G, "reward_router_address": None}

    async def one(i: int, text: str) -> float:
        result = await verl.compute_score("gsm8k", text, None, {"question": "P", "index": i}, **kwargs)
        return result["grm_score"]

    async def main() -> tuple[list[float], float]:
        try:
            return await spread(one)
        finally:
            await verl.close_clients()

    rewards, elapsed = asyncio.run(main())
    assert rewards == [float(len(t)) for t in TEXTS]
    assert_one_group(joined(server, elapsed))


def test_verl_compute_score_sync_sends_group_size(server: ThreadServer) -> None:
    """verl's `remote` reward manager calls the plain function from its worker processes: one thread each here."""

    def one(i: int) -> float:
        time.sleep(ARRIVALS[i])
        info = {"question": "P", "index": i}
        return verl.compute_score_sync("gsm8k", TEXTS[i], None, info, url=server.url, k=1, group_size=G)["grm_score"]

    start = time.monotonic()
    with ThreadPoolExecutor(G) as pool:
        rewards = list(pool.map(one, range(G)))
    assert rewards == [float(len(t)) for t in TEXTS]
    assert_one_group(joined(server, time.monotonic() - start))


def test_areal_reward_fn_sends_group_size(server: ThreadServer) -> None:
    """AReaL calls the (blocking) reward function from its workers: one thread per rollout here."""
    fn = GRMRewardFn(server.url, areal_timeout_s=20.0, k=1, group_size=G)

    def one(i: int) -> float:
        time.sleep(ARRIVALS[i])
        return fn("P", TEXTS[i], [1], [2], answer=None)

    start = time.monotonic()
    with ThreadPoolExecutor(G) as pool:
        rewards = list(pool.map(one, range(G)))
    assert rewards == [pytest.approx(unit(float(len(t)))) for t in TEXTS] and fn.fallbacks == 0
    assert_one_group(joined(server, time.monotonic() - start))


def test_the_header_name_is_the_servers() -> None:
    from server.http.routes import compat

    assert GROUP_SIZE_HEADER == compat.GROUP_SIZE_HEADER
