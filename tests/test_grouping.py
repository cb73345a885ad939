"""Joint judging of per-sample reward traffic: the Joiner alone (logic, cancellation, property) and through the app."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core.engines import build_prompt_builder
from server.core.errors import InvalidRequestError
from server.core.generators.base import Generation, SamplingConfig
from server.core.grouping import Joiner
from server.core.judging import JudgeService, Plan
from server.core.prompts import Message, StructuredOutput
from server.core.settings import Settings
from server.core.types import JudgeRequest
from tests.fakes import ScriptedGenerator, shown_responses
from voting import pick_best


class Recorder:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []

    def joined(self, size: int, waits: Sequence[float]) -> None:
        self.sizes.append(size)
        self.waits.extend(waits)


def make_joiner(
    gen: ScriptedGenerator,
    cap: int = 4,
    window_s: float = 0.02,
    max_wait_s: float = 0.2,
    group_size: int | None = None,
    **ov: Any,
) -> tuple[Joiner, Recorder]:
    st_ = Settings().with_overrides({"judging.retries": 0, **ov})
    service = JudgeService(gen, build_prompt_builder(st_), st_)
    rec = Recorder()
    joiner = Joiner(service, cap=cap, window_s=window_s, max_wait_s=max_wait_s, group_size=group_size, observer=rec)
    return joiner, rec


def req(prompt: str, *responses: str, k: int = 1, seed: int | None = 1) -> JudgeRequest:
    return JudgeRequest(messages=(Message("user", prompt),), responses=responses, k=k, seed=seed)


def judged_groups(gen: ScriptedGenerator) -> list[list[str]]:
    return [shown_responses(prompt) for prompt, _, _ in gen.calls]


async def test_concurrent_rollouts_of_one_prompt_share_one_judgment() -> None:
    gen = ScriptedGenerator()
    joiner, rec = make_joiner(gen, cap=8)
    texts = ["a", "bb", "ccc", "dddd"]
    results = await asyncio.gather(*(joiner.judge(req("P", t)) for t in texts))
    assert [r.scores for r in results] == [(1.0,), (2.0,), (3.0,), (4.0,)]  # each caller its own reward
    assert len(gen.calls) == 1 and sorted(judged_groups(gen)[0]) == texts
    assert rec.sizes == [4] and len(rec.waits) == 4 and all(w >= 0 for w in rec.waits)
    assert joiner.open_buckets == 0


async def test_cap_splits_and_prompts_and_knobs_do_not_mix() -> None:
    gen = ScriptedGenerator()
    joiner, rec = make_joiner(gen, cap=2)
    calls = [req("P", "a"), req("P", "bb"), req("P", "ccc"), req("Q", "dddd"), req("P", "eeeee", seed=2)]
    results = await asyncio.gather(*(joiner.judge(r) for r in calls))
    assert [r.scores[0] for r in results] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert sorted(rec.sizes) == [1, 1, 1, 2]
    assert sorted(map(sorted, judged_groups(gen))) == [["a", "bb"], ["ccc"], ["dddd"], ["eeeee"]]


async def test_max_wait_bounds_a_steady_trickle() -> None:
    gen = ScriptedGenerator()
    joiner, rec = make_joiner(gen, cap=64, window_s=0.05, max_wait_s=0.1)

    async def trickle(i: int) -> float:
        await asyncio.sleep(0.03 * i)
        result = await joiner.judge(req("P", "x" * (i % 9 + 1)))
        return float(result.scores[0])

    scores = await asyncio.gather(*(trickle(i) for i in range(10)))
    assert scores == [float(i % 9 + 1) for i in range(10)]
    assert len(rec.sizes) >= 2 and max(rec.waits) < 0.1 + 0.1  # window kept resetting; max wait flushed


async def test_a_joint_request_stays_within_the_limits_of_its_size() -> None:
    gen = ScriptedGenerator()
    joiner, rec = make_joiner(gen, cap=8)
    calls = [JudgeRequest(messages=(Message("user", "P"),), responses=(t,), k=1, max_tokens=110) for t in "ab"]
    results = await asyncio.gather(*(joiner.judge(r) for r in calls))  # 110 tokens fit 1 response, not 2
    assert [r.scores for r in results] == [(1.0,), (1.0,)] and rec.sizes == [1, 1]


async def test_a_bad_caller_fails_alone() -> None:
    gen = ScriptedGenerator()
    joiner, _ = make_joiner(gen, **{"limits.max_response_chars": 3})
    outcomes: tuple[Any, ...] = await asyncio.gather(
        joiner.judge(req("P", "aa")), joiner.judge(req("P", "toolong")), return_exceptions=True
    )
    good, bad = outcomes
    assert not isinstance(good, BaseException) and good.scores == (2.0,)
    assert isinstance(bad, InvalidRequestError)


@dataclass
class GatedGenerator(ScriptedGenerator):
    """A scripted engine whose every call waits for `release`; `calls` lists the calls that reached it."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        self.calls.append((prompt, sampling, request_id))
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        texts = tuple(self.judge(prompt, i) for i in range(sampling.n))
        return Generation(texts, prompt_tokens=1, completion_tokens=1, finish_reasons=("stop",) * len(texts))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until `condition` holds (a bounded number of turns, no wall-clock sleep)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never reached: {what}")


# Windows of a minute: buckets here are judged only when full (cap 2), never by a timer.
async def test_cancelled_caller_leaves_the_group_before_and_after_judging() -> None:
    gen = GatedGenerator()
    joiner, rec = make_joiner(gen, cap=2, window_s=60, max_wait_s=60)
    early = asyncio.create_task(joiner.judge(req("P", "zzzzzzzzz")))
    await until(lambda: joiner.open_buckets == 1, "the early caller waits in its bucket")
    early.cancel()  # before the group is judged: its response is not judged at all
    await asyncio.gather(early, return_exceptions=True)
    assert early.cancelled() and joiner.open_buckets == 0 and gen.calls == []
    stay = [asyncio.create_task(joiner.judge(req("P", t))) for t in ("a", "bb")]  # fills the bucket: judged
    await until(lambda: len(gen.calls) == 1, "the full bucket reaches the engine")
    late = [asyncio.create_task(joiner.judge(req("Q", t))) for t in ("q", "rr")]  # another bucket meanwhile
    await until(lambda: len(gen.calls) == 2, "the second bucket reaches the engine")
    stay[0].cancel()  # after: the others keep their judgment
    await asyncio.gather(stay[0], return_exceptions=True)
    gen.release.set()
    assert [r.scores for r in await asyncio.gather(stay[1], *late)] == [(2.0,), (1.0,), (2.0,)]
    assert stay[0].cancelled() and gen.cancelled == 0
    assert sorted(map(sorted, judged_groups(gen))) == [["a", "bb"], ["q", "rr"]] and rec.sizes == [2, 2]


async def test_judgment_is_aborted_when_every_caller_has_gone() -> None:
    gen = GatedGenerator()
    joiner, _ = make_joiner(gen, cap=2, window_s=60, max_wait_s=60)
    tasks = [asyncio.create_task(joiner.judge(req("P", t))) for t in ("a", "bb")]
    await until(lambda: len(gen.calls) == 1, "the joint judgment reaches the engine")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: gen.cancelled == 1, "the engine call is aborted")
    assert all(task.cancelled() for task in tasks) and joiner.open_buckets == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from("PQR"), st.lists(st.integers(1, 10), min_size=1, max_size=3)), max_size=12),
    st.integers(1, 4),
)
def test_every_caller_gets_its_own_scores_and_groups_respect_the_cap(
    calls: list[tuple[str, list[int]]], cap: int
) -> None:
    async def run() -> None:
        gen = ScriptedGenerator()
        joiner, rec = make_joiner(gen, cap=cap, window_s=0.001, max_wait_s=0.01)
        results = await asyncio.gather(*(joiner.judge(req(p, *("x" * n for n in lens))) for p, lens in calls))
        for (_, lens), result in zip(calls, results, strict=True):
            assert list(result.scores) == [float(n) for n in lens]
        assert sum(rec.sizes) <= sum(len(lens) for _, lens in calls if len(set(lens)) < cap)  # duplicates once
        assert all(size <= cap for size in rec.sizes)
        assert joiner.open_buckets == 0

    asyncio.run(run())


# through the app: OpenRLHF (one rollout per request, concurrently) and slime shapes


@pytest.mark.parametrize("join", [True, False])
async def test_per_sample_get_reward_calls_are_judged_jointly(app_factory: Any, join: bool) -> None:
    gen = ScriptedGenerator()
    client, _ = await app_factory({"rewards.join": join}, generator=gen)
    rollouts = ["a", "bb", "ccc", "dddd"]

    async def one(text: str) -> httpx.Response:
        r: httpx.Response = await client.post(
            "/get_reward", json={"query": ["P:" + text], "prompts": ["P:"], "labels": [None], "k": 1}
        )
        return r

    responses = await asyncio.gather(*(one(t) for t in rollouts))
    assert [r.json()["rewards"] for r in responses] == [[1.0], [2.0], [3.0], [4.0]]
    assert len(gen.calls) == (1 if join else 4)
    metrics = (await client.get("/metrics")).text
    assert ("grm_reward_join_size_sum 4.0" in metrics) is join


async def test_per_sample_slime_calls_join_but_score_calls_keep_their_grouping(app_factory: Any) -> None:
    gen = ScriptedGenerator()
    client, _ = await app_factory(generator=gen)
    slime = await asyncio.gather(
        *(client.post("/reward", json={"prompt": "P", "response": t, "label": None, "k": 1}) for t in ("a", "bb"))
    )
    assert [r.json() for r in slime] == [1.0, 2.0] and len(gen.calls) == 1
    scored = await asyncio.gather(
        *(client.post("/score", json={"query": "P", "responses": [t], "k": 1}) for t in ("a", "bb"))
    )
    assert all(r.status_code == 200 for r in scored) and len(gen.calls) == 3


async def test_per_sample_rollouts_beyond_the_in_flight_limit_are_not_refused(app_factory: Any) -> None:
    """OpenRLHF sends every rollout alone and at once: waiting rollouts take no admission slot, each joint
    judgment takes one, so 12 concurrent rollouts of 3 prompts pass a limit of 4 (without joining: 429s)."""
    gen = ScriptedGenerator()
    client, _ = await app_factory({"limits.max_concurrent_requests": 4, "rewards.join_cap": 4}, generator=gen)
    rollouts = [(f"P{p}:", "x" * (r + 1)) for p in range(3) for r in range(4)]
    responses = await asyncio.gather(
        *(client.post("/get_reward", json={"query": [p + t], "prompts": [p], "k": 1}) for p, t in rollouts)
    )
    assert [r.status_code for r in responses] == [200] * 12
    assert [r.json()["rewards"] for r in responses] == [[float(len(t))] for _, t in rollouts]
    assert len(gen.calls) == 3


def test_join_metrics_exist_from_the_start_and_survive_engine_state_changes() -> None:
    from server.core.supervisor import EngineState
    from server.http.metrics import Metrics

    metrics = Metrics()
    metrics.joined(3, [0.01, 0.02])
    for state in (EngineState.STARTING, EngineState.READY, EngineState.CLOSED):  # each call once registered them
        metrics.engine_state("grm", state, restarted=False)
    metrics.joined(2, [0.03])
    text = metrics.render().decode()
    assert "grm_reward_join_size_sum 5.0" in text and "grm_reward_join_callers_count 2.0" in text
    assert "grm_reward_join_wait_seconds_count 3.0" in text


async def test_each_share_breaks_ties_by_the_seed_as_the_service_does() -> None:
    gen = ScriptedGenerator()
    joiner, _ = make_joiner(gen, cap=8)
    shares = await asyncio.gather(joiner.judge(req("P", "aa", "bb", seed=5)), joiner.judge(req("P", "ccc", seed=5)))
    assert len(gen.calls) == 1 and shares[0].rewards == (2, 2)  # a tie within the first caller's share
    alone = await make_joiner(ScriptedGenerator(), cap=2)[0].judge(req("P", "aa", "bb", seed=5))  # judged alone
    assert shares[0].best == alone.best == pick_best((2, 2), 5) == 1


async def test_callers_with_other_structured_output_are_not_joined(app_factory: Any) -> None:
    """One caller asks `structured_output: off`, one the default (regex on the generic template): two engine
    calls, each under its own mode (joined, both would be judged without the regex)."""
    gen = ScriptedGenerator()
    client, _ = await app_factory({}, generator=gen)
    bodies = [
        {"query": ["P:a"], "prompts": ["P:"], "k": 1, "seed": 1, "structured_output": "off"},
        {"query": ["P:bb"], "prompts": ["P:"], "k": 1, "seed": 1},
    ]
    answers = await asyncio.gather(*(client.post("/get_reward", json=b) for b in bodies))
    assert [r.status_code for r in answers] == [200, 200]
    by_response = {shown_responses(prompt)[0]: sampling.regex for prompt, sampling, _ in gen.calls}
    assert len(gen.calls) == 2 and by_response["a"] is None and by_response["bb"] is not None


KNOB_VALUES: dict[str, Any] = {
    "messages": (Message("user", "other"),),
    "k": 2,
    "k_meta": 0,
    "temperature": 0.7,
    "max_tokens": 300,
    "seed": 2,
    "structured_output": StructuredOutput.OFF,
}


@pytest.mark.parametrize("knob", [f.name for f in fields(JudgeRequest) if f.name not in ("responses", "request_id")])
async def test_every_knob_keeps_callers_apart(knob: str) -> None:
    """The join key is the request minus what joining changes: a knob added later cannot be forgotten."""
    assert knob in KNOB_VALUES, f"give {knob} a value that differs from the default"
    gen = ScriptedGenerator()
    joiner, rec = make_joiner(gen, cap=8)
    results = await asyncio.gather(
        joiner.judge(req("P", "a")), joiner.judge(dataclasses.replace(req("P", "bb"), **{knob: KNOB_VALUES[knob]}))
    )
    assert [r.scores for r in results] == [(1.0,), (2.0,)]
    assert sorted(rec.sizes) == [1, 1] and len(gen.calls) == 2


async def test_each_request_is_planned_once_on_the_joint_path(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = ScriptedGenerator()
    joiner, _ = make_joiner(gen, cap=8)
    planned: list[int] = []
    plan = joiner.service.plan

    def counting(request: JudgeRequest) -> Plan:
        planned.append(len(request.responses))
        return plan(request)

    monkeypatch.setattr(joiner.service, "plan", counting)
    await asyncio.gather(*(joiner.judge(req("P", t)) for t in ("a", "bb", "ccc")))
    assert planned == [1, 2, 3] and len(gen.calls) == 1  # alone, then as the joint request it makes


# joining by group size G (rewards.group_size or the X-GRM-Group-Size header): rollouts finishing seconds apart


async def test_rollouts_seconds_apart_are_judged_as_one_group_with_g_set(app_factory: Any) -> None:
    """0.3-0.5 s between rollouts: the window (0.05 s) alone judges them one by one; G = 4 joins them."""
    gen = ScriptedGenerator()
    client, _ = await app_factory({"rewards.group_size": 4}, generator=gen)
    gaps = [0.0, 0.3, 0.5, 0.4]

    async def one(i: int, text: str) -> httpx.Response:
        await asyncio.sleep(sum(gaps[: i + 1]))
        r: httpx.Response = await client.post("/get_reward", json={"query": ["P:" + text], "prompts": ["P:"], "k": 1})
        return r

    responses = await asyncio.gather(*(one(i, t) for i, t in enumerate(["a", "bb", "ccc", "dddd"])))
    assert [r.json()["rewards"] for r in responses] == [[1.0], [2.0], [3.0], [4.0]]
    assert len(gen.calls) == 1 and sorted(judged_groups(gen)[0]) == ["a", "bb", "ccc", "dddd"]


async def test_a_partial_group_is_judged_at_the_max_wait(app_factory: Any) -> None:
    gen = ScriptedGenerator()
    client, _ = await app_factory({"rewards.group_size": 4, "rewards.join_max_wait_s": 0.4}, generator=gen)
    loop = asyncio.get_running_loop()
    start = loop.time()
    responses = await asyncio.gather(
        *(client.post("/reward", json={"prompt": "P", "response": t, "k": 1}) for t in ("a", "bb"))
    )
    waited = loop.time() - start
    assert [r.json() for r in responses] == [1.0, 2.0] and len(gen.calls) == 1
    assert 0.4 <= waited < 10  # judged at the max wait with the 2 that arrived, not before


async def test_a_group_beyond_the_cap_is_split_and_its_last_part_judged_when_g_are_in() -> None:
    gen = ScriptedGenerator()
    joiner, rec = make_joiner(gen, cap=2, window_s=0.01, max_wait_s=60, group_size=5)

    async def rollout(i: int) -> float:
        await asyncio.sleep(0.05 * i)  # five times the window apart: the window alone would judge 1 by 1
        return float((await joiner.judge(req("P", "x" * (i + 1)))).scores[0])

    async with asyncio.timeout(10):  # the last part is judged when the 5th is in, not at the 60 s max wait
        scores = await asyncio.gather(*(rollout(i) for i in range(5)))
    assert scores == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert rec.sizes == [2, 2, 1] and joiner.open_buckets == joiner.open_groups == 0


async def test_the_group_size_header_wins_over_the_setting(app_factory: Any) -> None:
    gen = ScriptedGenerator()
    client, _ = await app_factory({"rewards.group_size": 8, "rewards.join_max_wait_s": 60}, generator=gen)

    async def one(delay: float, text: str) -> httpx.Response:
        await asyncio.sleep(delay)
        body = {"prompt": "P", "response": text, "k": 1}
        r: httpx.Response = await client.post("/reward", json=body, headers={"X-GRM-Group-Size": "2"})
        return r

    async with asyncio.timeout(20):  # G = 8 from the setting would wait the 60 s max wait
        responses = await asyncio.gather(one(0, "a"), one(0.3, "bb"))
    assert [r.json() for r in responses] == [1.0, 2.0] and len(gen.calls) == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "abc", "1.5", "4097", "99999999", "1e3", ""])
async def test_a_bad_group_size_header_is_a_400(app_factory: Any, value: str) -> None:
    from tests.conftest import assert_error

    client, _ = await app_factory(generator=ScriptedGenerator())
    for path, body in [
        ("/reward", {"prompt": "P", "response": "a"}),
        ("/get_reward", {"query": ["P:a"], "prompts": ["P:"]}),
    ]:
        r = await client.post(path, json=body, headers={"X-GRM-Group-Size": value})
        err = assert_error(r, 400, param="X-GRM-Group-Size", kind="invalid_request_error")
        assert "X-GRM-Group-Size" in err["message"]


async def test_duplicate_rollouts_are_judged_once_and_each_caller_gets_the_reward(app_factory: Any) -> None:
    gen = ScriptedGenerator()
    client, _ = await app_factory({"rewards.group_size": 4}, generator=gen)
    texts = ["a", "bb", "a", "bb"]
    responses = await asyncio.gather(
        *(client.post("/get_reward", json={"query": ["P:" + t], "prompts": ["P:"], "k": 1}) for t in texts)
    )
    assert [r.json()["rewards"] for r in responses] == [[1.0], [2.0], [1.0], [2.0]]
    assert len(gen.calls) == 1 and sorted(judged_groups(gen)[0]) == ["a", "bb"]


@pytest.mark.parametrize("cap", [2, 3])  # judged alone (2 texts reach the cap) or through a bucket
async def test_duplicates_within_one_call_are_judged_once(cap: int) -> None:
    gen = ScriptedGenerator()
    joiner, _ = make_joiner(gen, cap=cap)
    result = await joiner.judge(req("P", "a", "bb", "a", "bb", "a"))  # 5 rollouts, 2 texts
    assert result.scores == (1.0, 2.0, 1.0, 2.0, 1.0) and [sorted(g) for g in judged_groups(gen)] == [["a", "bb"]]
    assert result.best == pick_best(result.rewards, result.seed)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("PQ"), st.integers(1, 6)), min_size=1, max_size=14),
    st.integers(1, 4),
)
def test_with_g_set_every_prompt_is_judged_once_all_are_in_within_the_cap(
    rollouts: list[tuple[str, int]], cap: int
) -> None:
    """G = each prompt's rollout count: every prompt is judged in ceil(distinct / cap) judgments, never by
    the (hour-long) max wait, and each caller gets the score of its own text."""

    async def run() -> None:
        gen = ScriptedGenerator()
        joiner, rec = make_joiner(gen, cap=cap, window_s=0.0, max_wait_s=3600)
        count = {p: sum(1 for q, _ in rollouts if q == p) for p, _ in rollouts}

        async def one(i: int, prompt: str, n: int) -> float:
            await asyncio.sleep(0.001 * i)
            return float((await joiner.judge(req(prompt, "x" * n), group_size=count[prompt])).scores[0])

        async with asyncio.timeout(30):
            scores = await asyncio.gather(*(one(i, p, n) for i, (p, n) in enumerate(rollouts)))
        assert scores == [float(n) for _, n in rollouts]
        assert all(size <= cap for size in rec.sizes)
        distinct = {p: len({n for q, n in rollouts if q == p}) for p in count}
        assert len(rec.sizes) <= sum(-(-c // cap) for c in count.values())  # every part but the last is full
        assert cap == 1 or sum(rec.sizes) >= sum(distinct.values())  # at cap 1 each is judged alone
        assert joiner.open_buckets == joiner.open_groups == 0

    asyncio.run(run())
