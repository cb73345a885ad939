"""The judging service over scripted engines: flow, validation, invalid judgments, retries, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from server.core.admission import Admission
from server.core.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidRequestError,
    NoValidJudgmentError,
    OverloadedError,
    RequestTimeoutError,
)
from server.core.prompts import Message, StructuredOutput
from server.core.types import JudgeRequest
from tests.conftest import make_service
from tests.fakes import ScriptedGenerator, ScriptedMetaRM, score_by_length, shown_responses, wait_until


def request(responses: tuple[str, ...] = ("a", "bbbbb", "ccc"), **kw: object) -> JudgeRequest:
    return JudgeRequest(messages=(Message("user", "Which is longest?"),), responses=responses, **kw)  # type: ignore[arg-type]


async def test_scores_map_back_to_the_callers_order() -> None:
    gen = ScriptedGenerator()
    result = await make_service(gen).judge(request(k=6, seed=3))
    assert result.rewards == (6, 30, 18)  # length-scored in every order, summed over 6 samples
    assert result.scores == (1.0, 5.0, 3.0)
    assert result.best == 1
    assert (result.k, result.valid, result.kept, result.k_meta) == (6, 6, 6, 0)
    # docs/design.md, "Performance targets": one engine call per distinct order (min(k, n) = 3), each with n = its share of k
    assert [c[1].n for c in gen.calls] == [2, 2, 2]
    assert len({tuple(shown_responses(c[0])) for c in gen.calls}) == 3
    assert result.usage.engine_calls == 3
    assert all(s.order and sorted(s.order) == [0, 1, 2] for s in result.samples)


async def test_same_seed_same_result_and_seed_reported() -> None:
    service = make_service(ScriptedGenerator())
    a, b = await service.judge(request(seed=11)), await service.judge(request(seed=11))
    assert (a.rewards, a.best, [s.order for s in a.samples]) == (b.rewards, b.best, [s.order for s in b.samples])
    c = await service.judge(request())
    assert 0 <= c.seed < 2**31


async def test_unparseable_judgments_are_flagged_and_left_out_not_zero() -> None:
    def judge(prompt: str, i: int) -> str:
        return "I refuse to box." if i % 2 else score_by_length(prompt, i)

    # structured output off: no completion, so the judgments without a box stay invalid
    off = request(("a", "bb"), k=4, seed=1, structured_output=StructuredOutput.OFF)
    result = await make_service(ScriptedGenerator(judge=judge)).judge(off)
    bad = [s for s in result.samples if s.scores is None]
    assert len(bad) == 2 and all(s.error and s.error.startswith("no_box") and not s.kept for s in bad)
    assert result.valid == 2 and result.kept == 2
    assert result.rewards == (
        2,
        4,
    )  # two voters; an invalid judgment counted as 0 would not change sums, but means would:
    assert result.scores == (1.0, 2.0)


async def test_zero_valid_judgments_is_an_error_after_retries() -> None:
    gen = ScriptedGenerator(judge=lambda p, i: "Scores: \\boxed{11, 3}")
    with pytest.raises(NoValidJudgmentError, match="out_of_range"):
        off = request(("a", "b"), k=2, seed=5, structured_output=StructuredOutput.OFF)
        await make_service(gen, **{"judging.retries": 2}).judge(off)
    assert len(gen.calls) == 2 * 3  # two orders, three attempts
    assert len({c[1].seed for c in gen.calls}) == 6  # each attempt resamples with new seeds


async def test_retry_recovers() -> None:
    state = {"calls": 0}

    def judge(prompt: str, i: int) -> str:
        state["calls"] += 1
        return "no box" if state["calls"] <= 2 else score_by_length(prompt, i)

    result = await make_service(ScriptedGenerator(judge=judge)).judge(request(("a", "bb"), k=2, seed=5))
    assert result.valid == 2 and result.usage.engine_calls == 4


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (JudgeRequest(messages=(), responses=("a",)), "messages"),
        (JudgeRequest(messages=(Message("user", "  "),), responses=("a",)), "query"),
        (JudgeRequest(messages=(Message("user", "q"), Message("assistant", "a")), responses=("a",)), "messages"),
        (request(()), "responses"),
        (request(tuple("x" * 40)), "responses"),
        (request(("x" * 40_000,)), "responses.0"),
        (request(k=0), "k"),
        (request(k=65), "k"),
        (request(k=4, k_meta=5), "k_meta"),
        (request(k=4, k_meta=2), "k_meta"),  # no Meta RM configured
        (request(temperature=3.0), "temperature"),
        (request(max_tokens=10), "max_tokens"),
        (request(max_tokens=100_000), "max_tokens"),
    ],
)
async def test_bad_requests_name_the_parameter(req: JudgeRequest, param: str) -> None:
    gen = ScriptedGenerator()
    with pytest.raises(InvalidRequestError) as info:
        await make_service(gen).judge(req)
    assert info.value.param == param and info.value.status == 400 and info.value.message
    assert gen.calls == []  # rejected before any engine work


async def test_timeout_aborts_engine_calls() -> None:
    gen = ScriptedGenerator(delay_s=5)
    service = make_service(gen, **{"limits.request_timeout_s": 0.2})
    with pytest.raises(RequestTimeoutError):
        await service.judge(request(k=3))
    assert gen.cancelled == 3


async def test_cancellation_propagates_to_engine_calls() -> None:
    gen = ScriptedGenerator(delay_s=5)
    task = asyncio.create_task(make_service(gen).judge(request(k=2)))
    await wait_until(lambda: len(gen.calls) == 2, 5, "both engine calls in flight")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gen.cancelled == 2


async def test_backend_failure_surfaces_as_backend_error() -> None:
    with pytest.raises(BackendUnavailableError):
        await make_service(ScriptedGenerator(down=True)).judge(request())


async def test_admission_queues_beyond_the_slots_and_refuses_beyond_the_queue() -> None:
    service = make_service(ScriptedGenerator(), **{"limits.max_concurrent_requests": 1, "limits.max_queued_items": 1})
    adm = service.admission
    async with adm.slot():
        waiting = asyncio.create_task(_hold(adm))
        await wait_until(lambda: adm.queued == 1, 5, "the second item queued")
        with pytest.raises(OverloadedError):  # one judged, one queued: a third does not fit
            async with adm.slot():
                pass
        assert (adm.in_flight, adm.queued) == (1, 1)
    await waiting  # the slot was handed over
    assert (adm.in_flight, adm.queued) == (0, 0)


async def _hold(adm: Admission) -> None:
    async with adm.slot():
        assert adm.in_flight == 1


async def test_meta_rm_keeps_the_top_k_meta() -> None:
    meta = ScriptedMetaRM()
    result = await make_service(ScriptedGenerator(), meta).judge(request(("a", "bb"), k=8, seed=2))
    assert result.k_meta == 4  # default k/2 with a Meta RM
    kept = [s for s in result.samples if s.kept]
    assert len(kept) == 4 == result.kept
    rated = {id(s): s.meta_reward for s in result.samples if s.meta_reward is not None}
    assert len(rated) == len(result.samples)  # every judgment was rated
    assert min(rated[id(s)] for s in kept) >= max(rated[id(s)] for s in result.samples if not s.kept)
    assert all(item.responses in {("a", "bb"), ("bb", "a")} for item in meta.seen)


async def test_k_meta_zero_equals_plain_voting() -> None:
    plain = await make_service(ScriptedGenerator()).judge(request(k=6, seed=9))
    with_rm = await make_service(ScriptedGenerator(), ScriptedMetaRM()).judge(request(k=6, k_meta=0, seed=9))
    assert (plain.rewards, plain.best, plain.kept) == (with_rm.rewards, with_rm.best, with_rm.kept)


async def test_meta_rm_failure_maps_to_the_server_error_tree() -> None:
    from meta_rm.errors import MetaRMUnavailableError

    def down(item: object) -> float:
        raise MetaRMUnavailableError("pooling server unreachable")

    with pytest.raises(BackendUnavailableError, match="Meta RM: pooling server unreachable"):
        await make_service(ScriptedGenerator(), ScriptedMetaRM(rate=down)).judge(request(("a", "bb"), k=4))


async def test_an_unexpected_engine_failure_is_a_502_with_its_cause_and_an_engine_error_stays_itself() -> None:
    def boom(prompt: str, index: int) -> str:
        raise RuntimeError("kernel fault")

    with pytest.raises(BackendError) as info:
        await make_service(ScriptedGenerator(judge=boom)).judge(request(k=2, seed=1))
    assert type(info.value) is BackendError and info.value.status == 502
    assert info.value.message == "the generator failed: RuntimeError: kernel fault"
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(BackendUnavailableError, match="down"):
        await make_service(ScriptedGenerator(down=True)).judge(request(k=2, seed=1))
