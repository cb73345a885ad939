"""The judging core on the real vLLM CPU engine (embedded SmolLM2-135M, regex-constrained score box)."""

from __future__ import annotations

import asyncio

import pytest

from server.core.errors import InvalidRequestError
from server.core.generators.base import SamplingConfig
from server.core.generators.vllm_local import VLLMGenerator
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, TemplateName
from server.core.types import JudgeRequest
from tests.conftest import make_service
from tests.fakes import wait_until

pytestmark = pytest.mark.engine

QUERY = (Message("user", "What is the capital of Japan?"),)
RESPONSES = ("The capital of Japan is Tokyo.", "The capital of Japan is Osaka.", "I like trains.")


def service(gen: VLLMGenerator, **overrides: object) -> JudgeService:
    return make_service(gen, **{"judging.max_tokens": 160, **overrides})


async def test_real_engine_judges_k_samples_with_valid_boxes(vllm_generator: VLLMGenerator) -> None:
    result = await service(vllm_generator).judge(JudgeRequest(QUERY, RESPONSES, k=6, seed=7))
    assert len(result.samples) == 6
    assert result.valid == 6  # the regex forces a parseable box for exactly 3 responses
    assert result.usage.engine_calls == 3  # min(k, n) distinct orders
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    for s in result.samples:
        assert s.scores is not None and len(s.scores) == 3 and all(1 <= x <= 10 for x in s.scores)
        # The regex guarantees the three sections; their content is the tiny model's (never asserted).
        assert "\\boxed{" in s.text and "Specific Criteria:" in s.text and "Analysis:" in s.text
    assert sum(result.rewards) == sum(sum(s.scores or ()) for s in result.samples)
    assert all(6 <= r <= 60 for r in result.rewards)
    assert result.model == "smollm2-135m-instruct"


async def test_same_seed_reproduces_the_judgments(vllm_generator: VLLMGenerator) -> None:
    svc = service(vllm_generator)
    a = await svc.judge(JudgeRequest(QUERY, RESPONSES[:2], k=4, seed=123))
    b = await svc.judge(JudgeRequest(QUERY, RESPONSES[:2], k=4, seed=123))
    # The seed fixes the response orders and the per-order sampling seeds. The texts are not asserted equal:
    # vLLM does not promise bitwise-equal logits between a prefix-cache miss (first call) and a hit (second
    # call), and on this CPU a late token once differed (seen in a clean CI run).
    assert [s.order for s in a.samples] == [s.order for s in b.samples]
    assert len(a.samples) == len(b.samples) == 4
    assert b.usage.cached_tokens > 0  # prefix caching reuses the identical prompts


async def test_n_samples_per_prompt_in_one_call(vllm_generator: VLLMGenerator) -> None:
    regex = PromptBuilder(TemplateName.GENERIC).score_regex(1, 128)
    prompt = PromptBuilder(TemplateName.GENERIC).build(QUERY, [RESPONSES[0]])
    gen = await vllm_generator.generate(
        prompt, SamplingConfig(n=5, temperature=0.8, max_tokens=128, seed=1, regex=regex), "n-test"
    )
    assert len(gen.texts) == 5  # FINAL_ONLY: all samples, not just the last streamed one
    assert len(set(gen.texts)) > 1  # distinct samples at temperature 0.8


async def test_cancel_aborts_and_engine_keeps_serving(vllm_generator: VLLMGenerator) -> None:
    prompt = PromptBuilder(TemplateName.GENERIC).build(QUERY, list(RESPONSES))
    task = asyncio.create_task(
        vllm_generator.generate(prompt, SamplingConfig(n=4, temperature=0.5, max_tokens=1024, seed=3), "cancel-me")
    )
    engine = vllm_generator._engine  # the request is in the engine, not still being tokenized
    await wait_until(lambda: engine.output_processor.get_num_unfinished_requests() > 0, 60, "the engine request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the engine holds no request any more (4 x 1024 tokens on the CPU would take far longer than 5 s)
    await wait_until(lambda: engine.output_processor.get_num_unfinished_requests() == 0, 5, "the abort")
    result = await service(vllm_generator).judge(JudgeRequest(QUERY, RESPONSES[:1], k=1, seed=1))
    assert result.valid == 1


async def test_timeout_gives_504_error_and_aborts(vllm_generator: VLLMGenerator) -> None:
    from server.core.errors import RequestTimeoutError

    engine = vllm_generator._engine
    svc = service(vllm_generator, **{"limits.request_timeout_s": 0.5, "judging.max_tokens": 1024})
    with pytest.raises(RequestTimeoutError):
        await svc.judge(JudgeRequest(QUERY, RESPONSES, k=3, seed=3))
    # every engine request of the judgment was aborted: none is left running its 1024 tokens
    await wait_until(lambda: engine.output_processor.get_num_unfinished_requests() == 0, 5, "the aborts")


async def test_prompt_longer_than_context_is_a_400(vllm_generator: VLLMGenerator) -> None:
    svc = service(vllm_generator, **{"limits.max_response_chars": 100_000})
    with pytest.raises(InvalidRequestError) as info:
        await svc.judge(JudgeRequest(QUERY, ("word " * 20_000,), k=1))
    assert info.value.code == "context_length_exceeded"
