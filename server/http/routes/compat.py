"""Compatible routes: vLLM Score API, OpenRLHF /get_reward, slime /reward, OpenAI chat completions and models."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from server.core.errors import InvalidRequestError
from server.http.deadlines import DEADLINE_HEADER, VALID_HEADER, call_deadline, within_deadline
from server.http.protocol_compat import (
    ChatRewardRequest,
    ChatRewardResponse,
    ModelList,
    RewardRequest,
    RewardResponse,
    SlimeRewardRequest,
    VLLMScoreRequest,
    VLLMScoreResponse,
)
from server.http.routes.deps import (
    ERROR_RESPONSES,
    KeyedRoute,
    RequestIdDep,
    ServingDep,
    reattached,
    until_disconnect,
)
from server.http.serving import Serving

router = APIRouter(route_class=KeyedRoute, tags=["compatible"], responses=ERROR_RESPONSES)


@router.post("/v1/score", summary="vLLM Score API shape")
async def vllm_score(
    body: VLLMScoreRequest, request: Request, serving: ServingDep, rid: RequestIdDep
) -> VLLMScoreResponse:
    return await until_disconnect(request, serving.vllm_score(body, rid))


def _deadline(request: Request, serving: Serving) -> float | None:
    return call_deadline(request.headers.get(DEADLINE_HEADER), serving.settings.limits.request_timeout_s)


GROUP_SIZE_HEADER = "X-GRM-Group-Size"
"""The caller's rollouts per prompt (G): its prompt's rollouts are judged once G are in (wins over rewards.group_size)."""
MAX_GROUP_SIZE = 4096


def _group_size(request: Request) -> int | None:
    value = request.headers.get(GROUP_SIZE_HEADER)
    if value is None:
        return None
    text = value.strip()
    size = int(text) if text.isascii() and text.isdigit() and len(text) < 8 else 0
    if not 1 <= size <= MAX_GROUP_SIZE:
        raise InvalidRequestError(
            f"{GROUP_SIZE_HEADER} must be a whole number of rollouts per prompt, 1..{MAX_GROUP_SIZE}, "
            f"got {value[:40]!r}",
            param=GROUP_SIZE_HEADER,
        )
    return size


@router.post("/get_reward", summary="OpenRLHF remote reward model shape")
async def get_reward(body: RewardRequest, request: Request, serving: ServingDep, rid: RequestIdDep) -> RewardResponse:
    rewards, deadline, size = serving.settings.rewards, _deadline(request, serving), _group_size(request)
    return await within_deadline(
        reattached(request, serving, body, lambda: serving.get_reward(body, rid, size)),
        deadline,
        lambda: RewardResponse.fallback(len(body.query), rewards.fallback),
        strict=rewards.strict,
    )


@router.post("/reward", summary="slime remote reward model shape: the answer is a JSON number")
async def slime_reward(
    body: SlimeRewardRequest, request: Request, response: Response, serving: ServingDep, rid: RequestIdDep
) -> float:
    rewards, deadline, size = serving.settings.rewards, _deadline(request, serving), _group_size(request)
    score, valid = await within_deadline(
        reattached(request, serving, body, lambda: serving.slime_reward_judged(body, rid, size)),
        deadline,
        lambda: (rewards.fallback, False),
        strict=rewards.strict,
    )
    response.headers[VALID_HEADER] = "1" if valid else "0"
    return score


@router.post("/v1/chat/completions", summary="Reward of the final assistant turn, OpenAI chat shape (no streaming)")
async def chat_completions(
    body: ChatRewardRequest, request: Request, serving: ServingDep, rid: RequestIdDep
) -> ChatRewardResponse:
    return await reattached(request, serving, body, lambda: serving.chat_reward(body, rid))


@router.get("/v1/models", summary="The served GRM")
async def models(serving: ServingDep) -> ModelList:
    return serving.models()
