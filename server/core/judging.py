"""The judging service: query + responses -> k sampled judgments -> Meta RM selection -> voted rewards."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from meta_rm.protocol import MetaRM, MetaRMInput
from server.core.admission import Admission, AdmissionObserver
from server.core.completion import COMPLETION_SEED_PART, BoxCompleter, parse_generation
from server.core.content import TOOL_ROLES
from server.core.errors import (
    ConfigurationError,
    InvalidRequestError,
    NoValidJudgmentError,
    RequestTimeoutError,
    first_failure,
    meta_rm_errors,
)
from server.core.generators.base import Generation, Generator, SamplingConfig
from server.core.offload import INLINE_CHARS, off_loop, text_chars
from server.core.prompts import (
    PromptBuilder,
    StructuredOutput,
    TemplateName,
    default_max_tokens,
    render_conversation,
    resolve_structured_output,
)
from server.core.settings import Settings
from server.core.text import unicode_problem
from server.core.types import JudgeRequest, JudgeResult, Neutralizations, Sample, Usage
from voting import derive_seed, pick_best, plan_orders, select_top, vote
from voting.orders import ShownOrder
from voting.sanitize import scan

logger = logging.getLogger(__name__)


class JudgeObserver(Protocol):
    """Receives counts after each request (the server's Prometheus metrics implement it)."""

    def judged(self, result: JudgeResult) -> None: ...

    def invalid(self, count: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated request's effective parameters."""

    k: int
    k_meta: int
    temperature: float
    max_tokens: int
    seed: int
    structured_output: StructuredOutput = StructuredOutput.REGEX


def _check_text(text: str, param: str) -> None:
    """Text must be encodable as UTF-8: a lone surrogate (JSON `"\\ud800"`) never reaches an engine."""
    problem = unicode_problem(text)
    if problem is not None:
        raise InvalidRequestError(f"{param}: {problem}", param=param, code="invalid_unicode")


class Planner:
    """The one place a request's knobs get their defaults and bounds (the engine checks the context length).
    Built for one concrete template (the budget and the structured-output mode default by it); building it
    checks that the default budget fits `judging.max_max_tokens`, so a bad settings tree fails at start."""

    def __init__(self, settings: Settings, template: TemplateName, *, has_meta_rm: bool) -> None:
        if template is TemplateName.AUTO:
            raise ValueError("resolve 'auto' to a concrete template first (resolve_template)")
        jd = settings.judging
        self.settings, self.template, self.has_meta_rm = settings, template, has_meta_rm
        self.default_max_tokens = jd.max_tokens if jd.max_tokens is not None else default_max_tokens(template)
        if self.default_max_tokens > jd.max_max_tokens:
            source = "judging.max_tokens" if jd.max_tokens is not None else f"the {template.value} template's default"
            raise ConfigurationError(
                f"judging.max_max_tokens ({jd.max_max_tokens}) is below the default judgment budget"
                f" ({self.default_max_tokens}, {source}): every request without max_tokens would be refused;"
                " raise judging.max_max_tokens or set judging.max_tokens",
                param="judging.max_max_tokens",
            )

    def plan(self, req: JudgeRequest) -> Plan:
        """`req`'s effective parameters; an InvalidRequestError naming the field when one is out of bounds."""
        lim = self.settings.limits
        for i, m in enumerate(req.messages):
            _check_text(m.content, f"messages.{i}.content")
        for i, text in enumerate(req.responses):
            _check_text(text, f"responses.{i}")
        if not req.messages:
            raise InvalidRequestError("the conversation is empty: give `query` or `messages`", param="messages")
        if req.messages[-1].role != "user" and req.messages[-1].role not in TOOL_ROLES:
            raise InvalidRequestError(
                "the last message must be the user's query (or a tool's answer)", param="messages"
            )
        if not req.messages[-1].content.strip():
            raise InvalidRequestError("the query is empty", param="query")
        chars = sum(len(m.content) for m in req.messages)
        if chars > lim.max_query_chars:
            raise InvalidRequestError(
                f"the conversation has {chars} characters (limit {lim.max_query_chars})", param="messages"
            )
        if not req.responses:
            raise InvalidRequestError("give at least one response to judge", param="responses")
        if len(req.responses) > lim.max_responses:
            raise InvalidRequestError(f"{len(req.responses)} responses (limit {lim.max_responses})", param="responses")
        for i, text in enumerate(req.responses):
            if len(text) > lim.max_response_chars:
                raise InvalidRequestError(
                    f"response {i} has {len(text)} characters (limit {lim.max_response_chars})",
                    param=f"responses.{i}",
                )
        return self.knobs(req, responses=len(req.responses))

    def knobs(self, req: JudgeRequest, *, responses: int) -> Plan:
        """The knobs' defaults and bounds for a request of `responses` responses (its texts unchecked): with
        `responses=1` it checks knobs shared by many items (the smallest item allows the most)."""
        settings, template, jd = self.settings, self.template, self.settings.judging
        k = jd.k if req.k is None else req.k
        if not 1 <= k <= jd.max_k:
            raise InvalidRequestError(f"k must be in 1..{jd.max_k}, got {k}", param="k")
        k_meta = _k_meta(req.k_meta, k, settings, self.has_meta_rm)
        temperature = jd.temperature if req.temperature is None else req.temperature
        if not 0 <= temperature <= 2:
            raise InvalidRequestError(f"temperature must be in 0..2, got {temperature}", param="temperature")
        max_tokens = self.default_max_tokens if req.max_tokens is None else req.max_tokens
        mode = resolve_structured_output(req.structured_output or jd.structured_output, template)
        # The whole-judgment regex needs room for its sections; free sampling is completed at any budget.
        low = PromptBuilder.min_max_tokens(responses) if mode is StructuredOutput.REGEX else 16
        if not low <= max_tokens <= jd.max_max_tokens:
            raise InvalidRequestError(
                f"max_tokens must be in {low}..{jd.max_max_tokens} for {responses} response{'s' if responses != 1 else ''}"
                f" ({mode.value}), got {max_tokens}",
                param="max_tokens",
            )
        seed = random.randrange(2**31) if req.seed is None else req.seed
        if not 0 <= seed < 2**31:
            raise InvalidRequestError(f"seed must be in 0..{2**31 - 1}, got {seed}", param="seed")
        return Plan(k, k_meta, temperature, max_tokens, seed, mode)


def _k_meta(asked: int | None, k: int, settings: Settings, has_meta_rm: bool) -> int:
    if asked is None:
        asked = settings.judging.k_meta
        if not has_meta_rm:
            return 0
        return max(1, k // 2) if asked is None else min(asked, k)
    if not 0 <= asked <= k:
        raise InvalidRequestError(f"k_meta must be in 0..k ({k}), got {asked}", param="k_meta")
    if asked > 0 and not has_meta_rm:
        raise InvalidRequestError("k_meta > 0 needs a Meta RM; this server has none (use 0 or omit it)", param="k_meta")
    return asked


class JudgeService:
    """Runs one request end to end; no HTTP here. Cancelling `judge` aborts its engine requests."""

    def __init__(
        self,
        generator: Generator,
        prompts: PromptBuilder,
        settings: Settings,
        meta_rm: MetaRM | None = None,
        observer: JudgeObserver | None = None,
        admission_observer: AdmissionObserver | None = None,
    ) -> None:
        self.generator = generator
        self.meta_rm = meta_rm
        self.prompts = prompts
        self.settings = settings
        self.observer = observer
        self.planner = Planner(settings, prompts.template, has_meta_rm=meta_rm is not None)
        lim = settings.limits
        self.admission = Admission(
            lim.max_concurrent_requests, lim.max_queued_items, lim.queue_timeout_s, admission_observer
        )

    def plan(self, req: JudgeRequest) -> Plan:
        """`req`'s effective parameters (defaults and bounds); an InvalidRequestError when one is out of bounds."""
        return self.planner.plan(req)

    async def judge(self, req: JudgeRequest, plan: Plan | None = None) -> JudgeResult:
        """Judge `req`; `plan` is its plan when the caller already made it (`self.plan(req)`)."""
        if plan is None:
            plan = self.plan(req)
        try:
            async with asyncio.timeout(self.settings.limits.request_timeout_s):
                return await self._run(req, plan)
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"judging took longer than {self.settings.limits.request_timeout_s:g} s; its engine requests were aborted"
            ) from exc

    async def _run(self, req: JudgeRequest, plan: Plan) -> JudgeResult:
        n = len(req.responses)
        orders = plan_orders(n, plan.k, plan.seed, self.settings.judging.order_strategy)
        shown = tuple(o.order for o in orders)  # O(body) text work below: off the loop when big
        prompts, neutralized = await off_loop(render_request, self.prompts, req, shown, heavy=_heavy(req))
        regex = None
        if plan.structured_output is StructuredOutput.REGEX:
            regex = self.prompts.score_regex(n, plan.max_tokens, self.generator.chars_per_token or 1.0)
        usage, samples = Usage(), []
        for attempt in range(self.settings.judging.retries + 1):
            gens = await self._sample(req.request_id, orders, prompts, plan, regex, attempt)
            usage = usage + sum(
                (Usage(g.prompt_tokens, g.completion_tokens, g.cached_tokens, 1) for g in gens), Usage()
            )
            parsed = [parse_generation(o, gen, n) for o, gen in zip(orders, gens, strict=True)]
            if plan.structured_output is not StructuredOutput.OFF:
                completer = BoxCompleter(
                    self.generator,
                    n,
                    derive_seed(plan.seed, attempt, COMPLETION_SEED_PART),
                    SamplingConfig(1, plan.temperature, plan.max_tokens, None, regex),
                )
                parsed, extra = await completer.complete(f"{req.request_id}-{attempt}", orders, prompts, gens, parsed)
                usage = usage + extra
            samples = [s for order_samples in parsed for s in order_samples]
            invalid = sum(s.scores is None for s in samples)
            if self.observer is not None and invalid:
                self.observer.invalid(invalid)
            if invalid < len(samples):
                break
            logger.warning(
                "%s: no valid judgment in attempt %d of %d",
                req.request_id,
                attempt + 1,
                self.settings.judging.retries + 1,
            )
        else:
            reasons = sorted({s.error or "" for s in samples})
            raise NoValidJudgmentError(
                f"none of {len(samples)} judgments (x{self.settings.judging.retries + 1} attempts) had a parseable score box: {'; '.join(reasons)}"
            )
        samples = await self._select(req, samples, plan.k_meta)
        kept = [s.scores for s in samples if s.kept and s.scores is not None]
        voted = vote(kept, n)
        result = JudgeResult(
            request_id=req.request_id,
            model=self.generator.model_name,
            rewards=voted.rewards,
            scores=voted.means,
            best=pick_best(voted.rewards, plan.seed),
            k=plan.k,
            k_meta=plan.k_meta,
            valid=sum(s.scores is not None for s in samples),
            kept=len(kept),
            seed=plan.seed,
            usage=usage,
            samples=tuple(samples),
            neutralized=neutralized,
        )
        if self.observer is not None:
            self.observer.judged(result)
        return result

    async def _sample(
        self,
        request_id: str,
        orders: Sequence[ShownOrder],
        prompts: Sequence[str],
        plan: Plan,
        regex: str | None,
        attempt: int,
    ) -> list[Generation]:
        """One engine call per distinct order, all concurrent; one failure cancels the rest."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(
                        self.generator.generate(
                            prompt,
                            SamplingConfig(
                                o.count, plan.temperature, plan.max_tokens, derive_seed(plan.seed, attempt, j), regex
                            ),
                            f"{request_id}-{attempt}-{j}",
                        )
                    )
                    for j, (o, prompt) in enumerate(zip(orders, prompts, strict=True))
                ]
        except ExceptionGroup as group:
            raise first_failure(group, "the generator")  # noqa: B904 - the cause is set by first_failure
        return [t.result() for t in tasks]

    async def _select(self, req: JudgeRequest, samples: list[Sample], k_meta: int) -> list[Sample]:
        """Mark the voting judgments: every valid one, or the Meta RM's top k_meta of them."""
        valid = [i for i, s in enumerate(samples) if s.scores is not None]
        if k_meta == 0 or self.meta_rm is None:
            return [replace(s, kept=s.scores is not None) for s in samples]
        conversation = await off_loop(render_conversation, req.messages, heavy=_heavy(req))
        inputs = [
            MetaRMInput(conversation, tuple(req.responses[j] for j in samples[i].order), samples[i].text) for i in valid
        ]
        with meta_rm_errors():
            rewards = await self.meta_rm.score(inputs)
        chosen = {valid[i] for i in select_top(rewards, k_meta)}
        meta = dict(zip(valid, rewards, strict=True))
        return [replace(s, kept=i in chosen, meta_reward=meta.get(i)) for i, s in enumerate(samples)]


def render_request(
    prompts: PromptBuilder, req: JudgeRequest, orders: Sequence[Sequence[int]]
) -> tuple[list[str], Neutralizations]:
    """The judging prompt for each response order, and what the rendering neutralized (pure: runs anywhere)."""
    built = [prompts.build(req.messages, [req.responses[i] for i in order]) for order in orders]
    return built, count_neutralized(req)


def _heavy(req: JudgeRequest) -> bool:
    return text_chars([m.content for m in req.messages], req.responses) > INLINE_CHARS


def count_neutralized(req: JudgeRequest) -> Neutralizations:
    """What the prompt rendering rewrites in this request's texts (it calls the same `neutralize`)."""
    by_kind: dict[tuple[str, str], int] = {}
    per_text = []
    for source, texts in (("conversation", [m.content for m in req.messages]), ("response", req.responses)):
        counts = []
        for text in texts:
            found = scan(text)
            counts.append(found.total)
            for kind, n in found.counts.items():
                by_kind[source, kind.value] = by_kind.get((source, kind.value), 0) + n
        per_text.append(counts)
    conversation, responses = per_text
    return Neutralizations(
        tuple(responses), sum(conversation), tuple((src, kind, n) for (src, kind), n in sorted(by_kind.items()))
    )
