"""Pydantic models of the native API (`/score`, `/score/batch`); field descriptions are the OpenAPI docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.core.prompts import Message
from server.core.types import JudgeRequest, JudgeResult, new_request_id


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"] = Field(description="who spoke this turn")
    content: str = Field(description="the text of the turn")


class ScoreParams(BaseModel):
    """Sampling parameters shared by `/score` and `/score/batch`."""

    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, description="judgments to sample (default from settings)")
    k_meta: int | None = Field(
        None, description="judgments kept by the Meta RM; null = default (k/2 with a Meta RM), 0 = plain voting"
    )
    temperature: float | None = Field(None, description="sampling temperature of the judgments (default 0.5)")
    max_tokens: int | None = Field(None, description="token budget of one judgment")
    seed: int | None = Field(
        None, ge=0, lt=2**31, description="seed of orders, sampling and tie-breaks; null = random (reported back)"
    )
    return_samples: bool = Field(False, description="include every sampled judgment in the response")


class ScoreItem(BaseModel):
    """One query with its candidate responses."""

    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] | None = Field(None, description="the conversation, last turn = the user's query")
    query: str | None = Field(None, description="the user's query (instead of messages)")
    responses: list[str] = Field(description="candidate responses to judge, 1..max")

    @model_validator(mode="after")
    def _one_conversation(self) -> ScoreItem:
        if (self.messages is None) == (self.query is None):
            raise ValueError("give exactly one of `query` or `messages`")
        return self

    def to_judge_request(self, params: ScoreParams, request_id: str | None = None) -> JudgeRequest:
        messages = (
            tuple(Message(m.role, m.content) for m in self.messages)
            if self.messages is not None
            else (Message("user", self.query or ""),)
        )
        return JudgeRequest(
            messages=messages,
            responses=tuple(self.responses),
            k=params.k,
            k_meta=params.k_meta,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            seed=params.seed,
            request_id=request_id or new_request_id(),
        )


class ScoreRequest(ScoreParams, ScoreItem):
    """`POST /score`: one item plus its parameters."""


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = Field(description="prompt tokens served from the prefix cache")
    engine_calls: int = Field(description="engine requests made (one per distinct response order and attempt)")


class SampleOut(BaseModel):
    scores: list[int] | None = Field(description="this judgment's scores in the caller's order; null if unparseable")
    order: list[int] = Field(description="order[pos] = caller index of the response shown at position pos")
    meta_reward: float | None = Field(description="the Meta RM's rating of this judgment")
    kept: bool = Field(description="whether this judgment voted")
    text: str
    principles: str
    critique: str
    error: str | None = Field(description="why the judgment could not be parsed")


class ScoreResponse(BaseModel):
    id: str
    object: Literal["score"] = "score"
    created: int
    model: str
    rewards: list[int] = Field(description="per response: sum of its scores over the kept judgments")
    scores: list[float] = Field(description="per response: mean score over the kept judgments, 1..10")
    best: int = Field(description="index of the highest reward (ties broken by the seed)")
    k: int
    k_meta: int
    valid: int = Field(description="judgments with a parseable score box")
    kept: int = Field(description="judgments that voted")
    seed: int
    usage: UsageOut
    samples: list[SampleOut] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body: every field, `samples` only when asked for."""
        return self.model_dump(mode="json", exclude={"samples"} if self.samples is None else None)

    @classmethod
    def from_result(cls, r: JudgeResult, *, with_samples: bool) -> ScoreResponse:
        samples = (
            [
                SampleOut(
                    scores=list(s.scores) if s.scores is not None else None,
                    order=list(s.order),
                    meta_reward=s.meta_reward,
                    kept=s.kept,
                    text=s.text,
                    principles=s.principles,
                    critique=s.critique,
                    error=s.error,
                )
                for s in r.samples
            ]
            if with_samples
            else None
        )
        u = r.usage
        return cls(
            id=r.request_id,
            created=r.created,
            model=r.model,
            rewards=list(r.rewards),
            scores=[round(x, 4) for x in r.scores],
            best=r.best,
            k=r.k,
            k_meta=r.k_meta,
            valid=r.valid,
            kept=r.kept,
            seed=r.seed,
            usage=UsageOut(
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                total_tokens=u.total_tokens,
                cached_tokens=u.cached_tokens,
                engine_calls=u.engine_calls,
            ),
            samples=samples,
        )
