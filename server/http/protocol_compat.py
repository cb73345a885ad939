"""Pydantic models of the compatible APIs: vLLM Score, OpenRLHF remote RM, OpenAI chat and models.
They tolerate unknown fields (clients send more than we use); our knobs ride in `extra_body`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")
    k: int | None = Field(None, description="judgments to sample (extra_body)")
    k_meta: int | None = Field(None, description="judgments kept by the Meta RM (extra_body)")
    seed: int | None = Field(None, ge=0, lt=2**31, description="seed (extra_body)")
    max_tokens: int | None = Field(None, description="token budget of one judgment")


class VLLMScoreRequest(_Lenient):
    """vLLM Score API: `text_1` is the query, the `text_2` candidates are judged together against it."""

    model: str | None = None
    text_1: str | list[str]
    text_2: str | list[str]

    @model_validator(mode="after")
    def _shapes(self) -> VLLMScoreRequest:
        t1 = [self.text_1] if isinstance(self.text_1, str) else self.text_1
        t2 = [self.text_2] if isinstance(self.text_2, str) else self.text_2
        if not t1 or not t2:
            raise ValueError("text_1 and text_2 must not be empty")
        if len(t1) not in (1, len(t2)):
            raise ValueError("text_1 must be one text or as many texts as text_2")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        t1 = [self.text_1] if isinstance(self.text_1, str) else self.text_1
        t2 = [self.text_2] if isinstance(self.text_2, str) else self.text_2
        if len(t1) == 1:
            t1 = t1 * len(t2)
        return list(zip(t1, t2, strict=True))


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class CompatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class VLLMScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: CompatUsage


class RewardRequest(_Lenient):
    """OpenRLHF remote reward model: `query[i]` is prompt + response; `prompts[i]` its prompt."""

    query: list[str]
    prompts: list[str] | None = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _shapes(self) -> RewardRequest:
        if not self.query:
            raise ValueError("query must not be empty")
        if self.prompts is not None and len(self.prompts) != len(self.query):
            raise ValueError("prompts must have one entry per query")
        return self


class RewardResponse(BaseModel):
    rewards: list[float] = Field(description="per rollout: mean score over the kept judgments (1..10)")
    scores: list[float] = Field(description="per rollout: the same reward mapped to 0..1")
    extra_logs: dict[str, list[float]]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type", "text") == "text")
        return self.content or ""


class ChatRewardRequest(_Lenient):
    """OpenAI chat completion used as a reward call: the final assistant turn is judged."""

    model: str | None = None
    messages: list[ChatMessageIn]
    temperature: float | None = None


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop"] = "stop"


class ChatRewardResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompatUsage
    reward: dict[str, Any] = Field(description="the full /score result for the judged turn")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "grm-server"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
