"""Serving classes: validate -> convert to JudgeRequests -> run -> build the response. No FastAPI here."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from server.core.admission import all_or_none
from server.core.errors import (
    BackendUnavailableError,
    GRMError,
    InvalidRequestError,
    NotFoundError,
    NoValidJudgmentError,
    invalid_from_errors,
    meta_rm_errors,
)
from server.core.grouping import Joiner, JoinObserver
from server.core.judging import JudgeService
from server.core.prompts import Message
from server.core.reattach import Reattacher, ReattachObserver
from server.core.rollouts import split_query
from server.core.settings import Settings
from server.core.supervisor import EngineState, Supervisor
from server.core.types import JudgeRequest, JudgeResult
from server.http.protocol import (
    ErrorResponse,
    Knobs,
    ReadyResponse,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)
from server.http.protocol_compat import (
    ChatChoice,
    ChatChoiceMessage,
    ChatRewardRequest,
    ChatRewardResponse,
    CompatUsage,
    ModelCard,
    ModelList,
    RewardRequest,
    RewardResponse,
    ScoreData,
    SlimeRewardRequest,
    VLLMScoreRequest,
    VLLMScoreResponse,
)
from voting import unit_score

logger = logging.getLogger(__name__)

_CALL_KNOBS = frozenset({"k", "k_meta", "temperature", "max_tokens", "seed"})


@dataclass
class Runtime:
    """What the lifespan produced: a running service, or the reason there is none."""

    service: JudgeService | None = None
    error: str | None = "engines are loading"
    start_failed: bool = False  # the engines never started: the process cannot serve, /health says so
    supervisors: list[Supervisor] = field(default_factory=list)

    def health(self) -> str | None:
        """None while the process can serve (or heal); else why a supervisor should replace it."""
        if self.start_failed:
            return f"engines failed to start: {self.error}"
        for sup in self.supervisors:
            if sup.state is EngineState.FAILED:
                return f"{sup.name} engine failed: {sup.reason}"
        return None

    def require(self) -> JudgeService:
        if self.service is None:
            raise BackendUnavailableError(f"not ready: {self.error}")
        return self.service


class Serving:
    """One instance per app; every public method is one API surface."""

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        join_observer: JoinObserver | None = None,
        reattach_observer: ReattachObserver | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.join_observer = join_observer
        self._joiner: Joiner | None = None
        rw = settings.rewards
        self.reattacher = Reattacher(  # retries of the reward routes re-attach (the routes name each call)
            ttl_s=rw.reattach_ttl_s,
            grace_s=rw.abandon_grace_s,
            max_entries=rw.reattach_max_entries,
            observer=reattach_observer,
        )

    def joiner(self, service: JudgeService) -> Joiner:
        """The joint-judging front of the running service (rebuilt when the service changes)."""
        if self._joiner is None or self._joiner.service is not service:
            rw = self.settings.rewards
            self._joiner = Joiner(
                service,
                cap=self.settings.rewards.join_cap,
                window_s=rw.join_window_s,
                max_wait_s=rw.window_max_wait_s(),
                group_size=rw.group_size,
                group_max_wait_s=rw.group_max_wait_s(),
                observer=self.join_observer,
            )
        return self._joiner

    @property
    def model_name(self) -> str:
        service = self.runtime.service
        return service.generator.model_name if service is not None else "unavailable"

    def _check_model(self, model: str | None) -> None:
        if model and model != self.model_name:
            raise NotFoundError(
                f"model {model!r} is not served here (serving {self.model_name!r})",
                param="model",
                code="model_not_found",
            )

    async def score(self, req: ScoreRequest, request_id: str) -> ScoreResponse:
        service = self.runtime.require()
        async with service.admission.slot():
            result = await service.judge(req.judge_request(req.conversation(), req.responses, request_id))
        return ScoreResponse.from_result(result, with_samples=req.return_samples)

    async def score_batch(self, req: ScoreBatchRequest, request_id: str) -> ScoreBatchResponse:
        """Each item is validated and judged on its own; a bad item or a failed judgment gets an error entry, the
        rest go on. Each valid item is one admitted item: beyond the free slots they wait in the queue (a call
        that does not fit there is refused whole, and an item that waits past the deadline fails the call)."""
        service = self.runtime.require()
        items, limit = req.items, self.settings.limits.max_batch_items
        if not items:
            raise InvalidRequestError("items must hold at least one item", param="items")
        if len(items) > limit:
            raise InvalidRequestError(f"{len(items)} items (limit {limit})", param="items")
        # The shared knobs fail the whole call, not every item: checked as for the smallest item.
        service.planner.knobs(req.judge_request((), ()), responses=1)
        parsed: list[JudgeRequest | ErrorResponse] = []
        for i, raw in enumerate(items):
            try:
                item = ScoreItem.model_validate(raw)
            except ValidationError as exc:
                parsed.append(ErrorResponse.model_validate(invalid_from_errors(exc.errors(), f"items.{i}: ").to_body()))
                continue
            parsed.append(req.judge_request(item.conversation(), item.responses, f"{request_id}-{i}"))

        with service.admission.call(sum(isinstance(e, JudgeRequest) for e in parsed), param="items") as lane:

            async def one(entry: JudgeRequest | ErrorResponse) -> ScoreResponse | ErrorResponse:
                if isinstance(entry, ErrorResponse):
                    return entry
                async with service.admission.slot(lane):  # a queue timeout here fails the call
                    try:
                        result = await service.judge(entry)
                    except GRMError as exc:
                        return ErrorResponse.model_validate(exc.to_body())
                return ScoreResponse.from_result(result, with_samples=req.return_samples)

            results = await all_or_none(one(e) for e in parsed)
        return ScoreBatchResponse(id=request_id, results=results)

    async def _judge_groups(
        self, groups: Sequence[_Group], knobs: Knobs, request_id: str, param: str
    ) -> list[JudgeResult]:
        """Judge several (conversation, responses) groups concurrently, each one admitted item (queued beyond
        the free slots); any failure fails the call and cancels its other groups."""
        service = self.runtime.require()
        requests = [knobs.judge_request(g.messages, g.texts, f"{request_id}-{j}") for j, g in enumerate(groups)]
        with service.admission.call(len(requests), param=param) as lane:

            async def one(r: JudgeRequest) -> JudgeResult:
                async with service.admission.slot(lane):
                    return await service.judge(r)

            return await all_or_none(one(r) for r in requests)

    async def vllm_score(self, req: VLLMScoreRequest, request_id: str) -> VLLMScoreResponse:
        """vLLM Score API: candidates sharing a `text_1` are judged together; score = mean mapped to 0..1."""
        self._check_model(req.model)
        groups: dict[str, _Group] = {}
        for index, (query, candidate) in enumerate(req.pairs()):
            group = groups.setdefault(query, _Group((Message("user", query),)))
            group.add(index, candidate)
        results = await self._judge_groups(list(groups.values()), req, request_id, "text_1")
        data = [
            ScoreData(index=index, score=unit_score(result.scores[pos]), neutralized=result.neutralized.responses[pos])
            for group, result in zip(groups.values(), results, strict=True)
            for pos, index in enumerate(group.indices)
        ]
        return VLLMScoreResponse(
            id=request_id,
            created=int(time.time()),
            model=self.model_name,
            data=sorted(data, key=lambda d: d.index),
            usage=_usage(results),
        )

    async def get_reward(self, req: RewardRequest, request_id: str, group_size: int | None = None) -> RewardResponse:
        """OpenRLHF remote RM: rollouts sharing a prompt are judged together (at most `rewards.join_cap`).
        A group that cannot be judged gets `rewards.fallback` and `valid=0` unless `rewards.strict`.
        `group_size`: the caller's rollouts per prompt (wins over `rewards.group_size`)."""
        cap = self.settings.rewards.join_cap
        prompts = req.prompts if req.prompts is not None else [""] * len(req.query)
        by_prompt: dict[str, list[_Group]] = {}
        for index, (full, prompt) in enumerate(zip(req.query, prompts, strict=True)):
            if not prompt:
                raise InvalidRequestError(
                    "prompts are required to split each query into prompt and response", param="prompts"
                )
            response = split_query(full, prompt)  # OpenRLHF cuts long prompts from the left
            if response is None:
                raise InvalidRequestError(
                    f"query[{index}] shares no text with prompts[{index}]: it should be that prompt (or its end, "
                    "when cut from the left) followed by the response",
                    param=f"query.{index}",
                )
            chunks = by_prompt.setdefault(prompt, [])
            if not chunks or len(chunks[-1].indices) >= cap:
                chunks.append(_Group((Message("user", prompt),)))
            chunks[-1].add(index, response)
        groups = [g for chunks in by_prompt.values() for g in chunks]
        outcomes = await self._judge_groups_or_fallback(groups, req, request_id, "query", group_size)
        n = len(req.query)
        fallback = self.settings.rewards.fallback
        rewards, sums, valid_judgments, valid = [fallback] * n, [0.0] * n, [0.0] * n, [0.0] * n
        neutralized, neutralized_prompt = [0.0] * n, [0.0] * n
        for group, result in zip(groups, outcomes, strict=True):
            if result is None:
                continue
            for pos, index in enumerate(group.indices):
                rewards[index] = result.scores[pos]
                sums[index] = float(result.rewards[pos])
                valid_judgments[index] = float(result.valid)
                valid[index] = 1.0
                neutralized[index] = float(result.neutralized.responses[pos]) if result.neutralized.responses else 0.0
                neutralized_prompt[index] = float(result.neutralized.conversation)
        return RewardResponse(
            rewards=rewards,
            scores=[unit_score(r) for r in rewards],
            extra_logs={
                "voted_sum": sums,
                "valid_judgments": valid_judgments,
                "valid": valid,
                "neutralized": neutralized,
                "neutralized_prompt": neutralized_prompt,
            },
        )

    async def slime_reward(self, req: SlimeRewardRequest, request_id: str) -> float:
        """slime remote RM: one rollout; the answer is its reward (mean score 1..10, or the fallback)."""
        return (await self.slime_reward_judged(req, request_id))[0]

    async def slime_reward_judged(
        self, req: SlimeRewardRequest, request_id: str, group_size: int | None = None
    ) -> tuple[float, bool]:
        """slime_reward's reward and whether a judgment gave it (False: the fallback)."""
        if isinstance(req.prompt, str):
            conversation: tuple[Message, ...] = (Message("user", req.prompt),)
        else:
            conversation = tuple(m.message() for m in req.prompt)
        group = _Group(conversation)
        group.add(0, req.response)
        (result,) = await self._judge_groups_or_fallback([group], req, request_id, "response", group_size)
        return (self.settings.rewards.fallback, False) if result is None else (result.scores[0], True)

    async def _judge_groups_or_fallback(
        self, groups: Sequence[_Group], knobs: Knobs, request_id: str, param: str, group_size: int | None = None
    ) -> list[JudgeResult | None]:
        """Judge reward groups, jointly with concurrent calls for the same prompt when `rewards.join` (by group
        size when `group_size` or `rewards.group_size` is set, else by window).
        A group that cannot be judged (bad input, no valid judgment) is None unless `rewards.strict`;
        engine outages still fail the call so the trainer retries."""
        service = self.runtime.require()
        service.planner.knobs(knobs.judge_request((), ()), responses=1)  # a bad shared knob fails the call once
        joiner = self.joiner(service) if self.settings.rewards.join else None
        strict = self.settings.rewards.strict
        requests = [knobs.judge_request(g.messages, g.texts, f"{request_id}-{j}") for j, g in enumerate(groups)]
        with service.admission.call(len(requests), param=param) as lane:

            async def judge(req: JudgeRequest) -> JudgeResult:
                if joiner is not None:  # the joiner admits each joint judgment: waiting rollouts take no slot
                    return await joiner.judge(req, lane, group_size)
                async with service.admission.slot(lane):
                    return await service.judge(req)

            async def one(req: JudgeRequest) -> JudgeResult | None:
                try:
                    return await judge(req)
                except (InvalidRequestError, NoValidJudgmentError) as exc:
                    if strict or exc.param in _CALL_KNOBS:  # a bad knob is the caller's error, not the group's
                        raise
                    logger.warning("%s: fallback reward for %d rollouts: %s", req.request_id, len(req.responses), exc)
                    return None

            return await all_or_none(one(r) for r in requests)

    async def chat_reward(self, req: ChatRewardRequest, request_id: str) -> ChatRewardResponse:
        """OpenAI-compatible reward call: judge the final assistant turn against the conversation before it."""
        self._check_model(req.model)
        if len(req.messages) < 2 or req.messages[-1].role != "assistant":
            raise InvalidRequestError(
                "messages must end with the assistant turn to judge, after a user turn", param="messages"
            )
        groups = [_Group(tuple(m.message() for m in req.messages[:-1]))]
        groups[0].add(0, req.messages[-1].text())
        (result,) = await self._judge_groups(groups, req, request_id, "messages")
        return ChatRewardResponse(
            id=f"chatcmpl-{request_id}",
            created=result.created,
            model=self.model_name,
            choices=[ChatChoice(message=ChatChoiceMessage(content=f"reward:{result.scores[0]:.4f}"))],
            usage=_usage([result]),
            reward=ScoreResponse.from_result(result, with_samples=False),
        )

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_name, created=int(time.time()))])

    async def ready(self) -> ReadyResponse:
        """Raise BackendUnavailableError with the reason unless every engine can serve now."""
        service = self.runtime.require()
        for sup in self.runtime.supervisors:
            sup.require_ready()
        await service.generator.check_ready()
        if service.meta_rm is not None:
            with meta_rm_errors():
                await service.meta_rm.check_ready()
        return ReadyResponse(model=self.model_name, meta_rm=service.meta_rm.name if service.meta_rm else None)


@dataclass
class _Group:
    messages: tuple[Message, ...]
    indices: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def add(self, index: int, text: str) -> None:
        self.indices.append(index)
        self.texts.append(text)


def _usage(results: Sequence[JudgeResult]) -> CompatUsage:
    prompt = sum(r.usage.prompt_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    return CompatUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
