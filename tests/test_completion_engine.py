"""Box completion on real engines: the in-process vLLM CPU engine (prompt + output token ids) and a real
vLLM OpenAI server (`continue_final_message`), with budgets too small for the model to finish."""

from __future__ import annotations

import re

import pytest

from server.core.completion import completion_prefix
from server.core.generators.base import Partial, SamplingConfig
from server.core.generators.openai_remote import OpenAIGenerator
from server.core.generators.vllm_local import VLLMGenerator
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, StructuredOutput, TemplateName, box_scores_regex
from server.core.settings import Settings
from server.core.types import JudgeRequest, JudgeResult
from voting import map_to_caller, parse_scores
from voting.parse import SCORES_OPEN

QUERY = (Message("user", "What is the capital of Japan?"),)
RESPONSES = ("The capital of Japan is Tokyo.", "The capital of Japan is Osaka, I think.")


def assert_all_vote(result: JudgeResult, k: int, *, some_cut: bool = True) -> None:
    assert result.valid == result.kept == k  # every judgment voted
    for s in result.samples:
        assert s.finish_reason in ("stop", "length")
        assert s.completed or s.finish_reason == "stop"  # a judgment cut by max_tokens got its box completed
        parsed = parse_scores(s.text, 2).scores
        assert parsed is not None and s.scores == map_to_caller(parsed, s.order)  # caller's order
    assert any(s.completed for s in result.samples) or not some_cut


@pytest.mark.engine
@pytest.mark.parametrize(
    ("mode", "k", "max_tokens"), [(StructuredOutput.FREE_COMPLETE, 4, 16), (StructuredOutput.REGEX, 2, 112)]
)
async def test_real_engine_completes_judgments_cut_by_a_small_budget(
    vllm_generator: VLLMGenerator, mode: StructuredOutput, k: int, max_tokens: int
) -> None:
    svc = JudgeService(
        vllm_generator, PromptBuilder(TemplateName.GENERIC), Settings().with_overrides({"judging.retries": 0})
    )
    req = JudgeRequest(QUERY, RESPONSES, k=k, seed=3, max_tokens=max_tokens, structured_output=mode)
    result = await svc.judge(req)
    assert_all_vote(result, k, some_cut=mode is StructuredOutput.FREE_COMPLETE)  # 16 tokens never finish
    assert vllm_generator.chars_per_token is not None and 2.0 < vllm_generator.chars_per_token < 8.0


@pytest.mark.engine
async def test_real_engine_continues_from_the_samples_own_token_ids(vllm_generator: VLLMGenerator) -> None:
    prompt = PromptBuilder(TemplateName.GENERIC).build(QUERY, RESPONSES)
    first = await vllm_generator.generate(prompt, SamplingConfig(2, 0.7, 20, seed=5), "cut")
    assert first.finish_reasons == ("length", "length") and all(len(t) == 20 for t in first.token_ids)
    partials = [Partial(completion_prefix(t), ids) for t, ids in zip(first.texts, first.token_ids, strict=True)]
    cont = await vllm_generator.continue_judgments(
        prompt, partials, SamplingConfig(1, 0.7, 16, seed=6, regex=box_scores_regex(2)), "cont"
    )
    assert len(cont.texts) == 2 and cont.finish_reasons == ("stop", "stop")
    assert all(re.fullmatch(box_scores_regex(2), t) for t in cont.texts)
    # the continuation's prompt is the judging prompt plus the kept judgment: longer than the prompt alone
    assert cont.prompt_tokens > 2 * first.prompt_tokens
    assert all(p.text.endswith(SCORES_OPEN) for p in partials)


@pytest.mark.remote
async def test_openai_backend_completes_through_continue_final_message(remote_url: str) -> None:
    settings = Settings().with_overrides(
        {"generator.backend": "openai", "generator.base_url": remote_url, "judging.retries": 0}
    )
    gen = OpenAIGenerator(settings.generator)
    await gen.start()
    try:
        svc = JudgeService(gen, PromptBuilder(TemplateName.GENERIC), settings)
        req = JudgeRequest(
            QUERY, RESPONSES, k=2, seed=9, max_tokens=16, structured_output=StructuredOutput.FREE_COMPLETE
        )
        result = await svc.judge(req)
    finally:
        await gen.close()
    assert_all_vote(result, 2)
    completed = sum(s.completed for s in result.samples)
    assert result.usage.engine_calls == 2 + completed  # two orders, then one continuation per completed judgment
