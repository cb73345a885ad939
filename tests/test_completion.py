"""Box completion and structured-output modes over scripted engines; the regexes never admit an empty section."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.completion import completion_prefix
from server.core.errors import ConfigurationError, NoValidJudgmentError
from server.core.judging import JudgeService, Planner
from server.core.prompts import (
    PromptBuilder,
    StructuredOutput,
    TemplateName,
    box_scores_regex,
    default_max_tokens,
    measure_chars_per_token,
)
from server.core.settings import Settings
from server.http.metrics import Metrics
from tests.fakes import ScriptedGenerator, shown_responses
from tests.test_judging_service import request
from voting import parse_scores
from voting.parse import SCORES_OPEN

RESPONSES = ("a", "bbbbbbb", "ccc")  # score_by_length: 1, 7, 3 in the caller's order
SENTENCE = "Response {i} is weighed against each criterion in turn, with its strengths and its gaps stated plainly. "


def long_reasoning(prompt: str, index: int) -> str:
    """Principles and critique of ~6,000 characters, as released checkpoints write them, without a box."""
    n = len(shown_responses(prompt))
    principles = "Specific Criteria: " + " ".join(f"Criterion {c} (weight {c}%): stated at length." for c in range(40))
    analysis = "Analysis: " + "".join(SENTENCE.format(i=1 + j % n) for j in range(45))
    return f"{principles}\n{analysis}"


def long_judgment(prompt: str, index: int) -> str:
    scores = [min(10, max(1, len(r))) for r in shown_responses(prompt)]
    return long_reasoning(prompt, index) + f"\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def grm_service(gen: ScriptedGenerator, **overrides: Any) -> JudgeService:
    return JudgeService(gen, PromptBuilder(TemplateName.DEEPSEEK_GRM), Settings().with_overrides(overrides))


async def test_long_judgments_come_back_whole_under_the_defaults() -> None:
    gen = ScriptedGenerator(judge=long_judgment)
    result = await grm_service(gen).judge(request(RESPONSES, k=3, seed=2))
    assert all(c[1].regex is None and c[1].max_tokens == 2048 for c in gen.calls)  # free, the template's budget
    assert result.valid == 3 and not gen.continued
    for s, (prompt, _, _) in zip(result.samples, gen.calls, strict=True):
        assert s.text == long_judgment(prompt, 0) and len(s.text) > 5000
        assert len(s.principles) > 1500 and len(s.critique) > 4000
        assert not s.completed and s.finish_reason == "stop"


@pytest.mark.parametrize("cut", [0, 1, 37, 2001])
async def test_judgments_cut_before_their_box_are_completed_in_the_callers_order(cut: int) -> None:
    def judge(prompt: str, i: int) -> str:
        text = long_reasoning(prompt, i)
        return text[: len(text) - cut] if cut else text  # max_tokens hit mid-word (or a whole paragraph short)

    gen = ScriptedGenerator(judge=judge, finish_reason=lambda t: "length")
    result = await grm_service(gen).judge(request(RESPONSES, k=6, seed=4))
    assert result.valid == result.kept == 6 and all(s.completed for s in result.samples)
    assert all(s.scores == (1, 7, 3) for s in result.samples)  # every rotation mapped back to the caller's order
    assert result.rewards == (6, 42, 18) and result.best == 1
    assert all(s.finish_reason == "length" for s in result.samples)
    for prompt, partial, sampling in gen.continued:
        original = judge(prompt, 0)
        assert partial.text.endswith("\n" + SCORES_OPEN) and original.startswith(partial.text[: -len(SCORES_OPEN) - 1])
        assert partial.text[-len(SCORES_OPEN) - 2] in ".:"  # cut back to a clean point, never mid-word
        assert sampling.regex == box_scores_regex(3) and sampling.max_tokens <= 32 and sampling.n == 1
    assert result.usage.engine_calls == 3 + 6  # 3 orders, then one continuation per cut judgment
    assert all(len(s.principles) > 1000 for s in result.samples)


async def test_a_broken_box_is_replaced_and_valid_judgments_are_left_alone() -> None:
    def judge(prompt: str, i: int) -> str:
        return long_judgment(prompt, i) if i == 0 else long_reasoning(prompt, i) + "\nScores: \\boxed{4, 11"

    gen = ScriptedGenerator(judge=judge)
    result = await grm_service(gen).judge(request(RESPONSES, k=6, seed=1))
    assert result.valid == 6 and sum(s.completed for s in result.samples) == 3
    assert all("\\boxed{4, 11" not in p.text for _, p, _ in gen.continued)
    assert all(s.text.count("\\boxed{") == 1 for s in result.samples)


async def test_a_backend_that_cannot_continue_resamples() -> None:
    state = {"calls": 0}

    def judge(prompt: str, i: int) -> str:
        state["calls"] += 1
        return long_reasoning(prompt, i) if state["calls"] <= 3 else long_judgment(prompt, i)

    gen = ScriptedGenerator(judge=judge, can_continue=False)
    result = await grm_service(gen).judge(request(RESPONSES, k=3, seed=1))
    assert result.valid == 3 and not any(s.completed for s in result.samples)
    assert len(gen.calls) == 6 and [c[1].n for c in gen.calls[3:]] == [1, 1, 1]
    assert all(s.scores == (1, 7, 3) for s in result.samples)


@pytest.mark.parametrize(
    ("template", "asked", "regex", "completes"),
    [
        (TemplateName.DEEPSEEK_GRM, None, False, True),
        (TemplateName.DEEPSEEK_GRM, StructuredOutput.REGEX, True, True),
        (TemplateName.DEEPSEEK_GRM, StructuredOutput.OFF, False, False),
        (TemplateName.GENERIC, None, True, True),
        (TemplateName.GENERIC, StructuredOutput.FREE_COMPLETE, False, True),
    ],
)
async def test_modes_by_template_and_per_request(
    template: TemplateName, asked: StructuredOutput | None, regex: bool, completes: bool
) -> None:
    gen = ScriptedGenerator(judge=lambda p, i: "Specific Criteria: x.\nAnalysis: y.")
    svc = JudgeService(gen, PromptBuilder(template), Settings().with_overrides({"judging.retries": 0}))
    req = request(("a", "bb"), k=2, seed=1, structured_output=asked)
    if completes:
        result = await svc.judge(req)
        assert result.valid == 2 and all(s.completed for s in result.samples)
    else:
        with pytest.raises(Exception, match="no_box"):
            await svc.judge(req)
    assert all((c[1].regex is not None) == regex for c in gen.calls)
    assert all(c[1].max_tokens == default_max_tokens(template) for c in gen.calls)


def test_settings_mode_and_budgets() -> None:
    assert Settings().judging.structured_output is StructuredOutput.AUTO
    assert Settings().with_overrides({"judging.structured_output": "off"}).judging.structured_output == "off"
    with pytest.raises(ValueError, match="structured_output"):
        Settings().with_overrides({"judging.structured_output": False})  # no boolean shim (0.x: nothing to migrate)
    assert default_max_tokens(TemplateName.DEEPSEEK_GRM) == 2048 and default_max_tokens(TemplateName.GENERIC) == 512
    with pytest.raises(ValueError, match="concrete"):
        default_max_tokens(TemplateName.AUTO)  # `auto` is resolved once, from the model name


@pytest.mark.parametrize(
    ("overrides", "template", "fails"),
    [
        ({"judging.max_max_tokens": 1024}, TemplateName.DEEPSEEK_GRM, True),  # its default budget is 2048
        ({"judging.max_max_tokens": 1024}, TemplateName.GENERIC, False),  # 512
        ({"judging.max_max_tokens": 1024, "judging.max_tokens": 1024}, TemplateName.DEEPSEEK_GRM, False),
        ({"judging.max_max_tokens": 1024, "judging.max_tokens": 2000}, TemplateName.GENERIC, True),
    ],
)
def test_the_default_budget_is_checked_against_the_resolved_template(
    overrides: dict[str, Any], template: TemplateName, fails: bool
) -> None:
    settings = Settings().with_overrides(overrides)  # the tree alone cannot know the template `auto` means
    if fails:
        with pytest.raises(ConfigurationError) as info:
            Planner(settings, template, has_meta_rm=False)
        assert info.value.param == "judging.max_max_tokens"
    else:
        planner = Planner(settings, template, has_meta_rm=False)
        assert planner.plan(request(("a",))).max_tokens <= 1024


def test_completion_metric_counts_completed_judgments() -> None:
    metrics = Metrics()
    from server.core.types import JudgeResult, Sample, Usage

    samples = tuple(
        Sample((5,), (0,), "t", "", "", None, completed=c, finish_reason="length" if c else "stop")
        for c in (True, True, False)
    )
    metrics.judged(JudgeResult("r", "m", (15,), (5.0,), 0, 3, 0, 3, 3, 1, Usage(), samples))
    assert 'grm_judgments_completed_total{result="valid"} 2.0' in metrics.render().decode()


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("", SCORES_OPEN),
        ("Specific Criteria: a.\nAnalysis: b is go", "Specific Criteria: a.\n" + SCORES_OPEN),
        (
            "Specific Criteria: a.\nAnalysis: b is good. c is wor",
            "Specific Criteria: a.\nAnalysis: b is good.\n" + SCORES_OPEN,
        ),
        (
            "Specific Criteria: a.\nAnalysis: b.\nScores: \\boxed{3, ",
            "Specific Criteria: a.\nAnalysis: b.\n" + SCORES_OPEN,
        ),
        ("Analysis: b.\nScores: \\boxed{3, 4, 5}", "Analysis: b.\n" + SCORES_OPEN),  # wrong count: box redone
        ("no clean point at all", "no clean point at all\n" + SCORES_OPEN),
        ("Analysis: 3.5 points.  \n\n", "Analysis: 3.5 points.\n" + SCORES_OPEN),
    ],
)
def test_completion_prefix_cuts_at_clean_points(text: str, prefix: str) -> None:
    assert completion_prefix(text) == prefix


@given(
    st.lists(st.sampled_from(["a", " ", ".", "\n", "\\boxed{", "3, ", "}", "Scores: ", "é"]), max_size=40).map("".join)
)
def test_completion_prefix_keeps_a_prefix_of_the_text_and_opens_one_box(text: str) -> None:
    prefix = completion_prefix(text)
    kept = prefix[: -len(SCORES_OPEN)].rstrip("\n")
    assert prefix.endswith(SCORES_OPEN) and text.startswith(kept)
    assert parse_scores(prefix + "4, 9}", 2).scores == (4, 9)  # the opened box is the one that counts


@pytest.mark.parametrize("template", [TemplateName.GENERIC, TemplateName.DEEPSEEK_GRM])
@pytest.mark.parametrize(
    "section",
    ["", " ", "  ", "\n", " \n", "\t", " x"],
)
def test_no_regex_admits_an_empty_or_blank_first_character(template: TemplateName, section: str) -> None:
    regex = re.compile(PromptBuilder(template).score_regex(2, 512, 4.0))
    good = "Specific Criteria: clear.\nAnalysis: fine.\nScores: \\boxed{3, 7}"
    assert regex.fullmatch(good)
    assert not regex.fullmatch(f"Specific Criteria: {section}\nAnalysis: fine.\nScores: \\boxed{{3, 7}}")
    assert not regex.fullmatch(f"Specific Criteria: clear.\nAnalysis: {section}\nScores: \\boxed{{3, 7}}")


@settings(max_examples=200)
@given(
    st.sampled_from([TemplateName.GENERIC, TemplateName.DEEPSEEK_GRM]),
    st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2003", max_size=6),
    st.text(max_size=40),
    st.integers(1, 4),
)
def test_blank_sections_never_match(template: TemplateName, blank: str, other: str, n: int) -> None:
    regex = re.compile(PromptBuilder(template).score_regex(n, 1024, 3.5))
    box = "Scores: \\boxed{" + ", ".join(["5"] * n) + "}"
    assert not regex.fullmatch(f"Specific Criteria: {blank}\nAnalysis: {other}\n{box}")
    assert not regex.fullmatch(f"Specific Criteria: {other}\nAnalysis: {blank}\n{box}")


@pytest.mark.parametrize("chars_per_token", [1.0, 2.5, 4.2])
def test_regex_bounds_grow_with_the_measured_characters_per_token(chars_per_token: float) -> None:
    regex = PromptBuilder(TemplateName.GENERIC).score_regex(2, 1000, chars_per_token)
    bounds = [int(b) for b in re.findall(r"\{0,(\d+)\}", regex)]
    base = [int(b) for b in re.findall(r"\{0,(\d+)\}", PromptBuilder(TemplateName.GENERIC).score_regex(2, 1000))]
    assert sum(bounds) + 2 <= 1000 * chars_per_token  # never more characters than the budget could hold
    assert sum(bounds) >= 0.7 * chars_per_token * sum(base)


def test_characters_per_token_are_measured_on_the_template() -> None:
    words = measure_chars_per_token(lambda text: len(text.split()), TemplateName.DEEPSEEK_GRM)
    chars = measure_chars_per_token(len, TemplateName.DEEPSEEK_GRM)
    assert chars == 1.0 and 4.0 < words < 9.0


async def test_a_box_of_its_own_before_a_broken_one_is_kept_without_an_engine_call() -> None:
    def judge(prompt: str, i: int) -> str:  # regex mode cut short after an inline box: "...\nScores: \boxed{"
        own = ", ".join(str(min(10, len(r))) for r in shown_responses(prompt))
        return f"Specific Criteria: a.\nAnalysis: b. Scores: \\boxed{{{own}}}\nScores: \\boxed{{"

    gen = ScriptedGenerator(judge=judge, finish_reason=lambda t: "length")
    result = await grm_service(gen).judge(request(RESPONSES, k=3, seed=1))
    assert result.valid == 3 and all(s.completed for s in result.samples) and not gen.continued
    assert all(s.scores == (1, 7, 3) and s.text.endswith("}") for s in result.samples)
    assert result.usage.engine_calls == 3


@pytest.mark.parametrize("can_continue", [True, False])
async def test_completion_seeds_follow_the_request_seed(can_continue: bool) -> None:
    """Continuations (or resamples, where the backend cannot continue) are seeded from the request's seed
    through voting.derive_seed: the same seed asks the same, another seed asks otherwise, each order its own."""

    async def seeds(seed: int) -> list[int | None]:
        gen = ScriptedGenerator(judge=long_reasoning, can_continue=can_continue)
        with contextlib.suppress(NoValidJudgmentError):  # resampled judgments have no box either
            await grm_service(gen, **{"judging.retries": 0}).judge(request(RESPONSES, k=3, seed=seed))
        asked = [c[2].seed for c in gen.continued] if can_continue else [c[1].seed for c in gen.calls[3:]]
        assert len(asked) == 3
        return asked

    first = await seeds(5)
    assert first == await seeds(5) and first != await seeds(6)
    assert len(set(first)) == 3  # one per order (the engine splits a call's seed per partial on its own)
