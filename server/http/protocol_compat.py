"""Pydantic models of the compatible APIs: vLLM Score, OpenRLHF remote RM, OpenAI chat and models.
They tolerate unknown fields (clients send more than we use); our knobs ride in `extra_body`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator, model_validator

from server.core.content import turn_text
from server.core.prompts import Message
from server.http.protocol import Knobs, ScoreResponse, Text, valid_unicode


class _Lenient(Knobs):
    """The shared knobs (sent in `extra_body`); unknown fields are tolerated."""

    model_config = ConfigDict(extra="allow")


_NOT_BLANK = {"type": "string", "pattern": "\\S"}
_QUERIES = {"anyOf": [_NOT_BLANK, {"type": "array", "items": _NOT_BLANK, "minItems": 1}]}

# vLLM's Score API has named its two sides three ways over its versions; all mean (query side, candidate side).
_SCORE_ALIASES = (("queries", "documents"), ("data_1", "data_2"))


class VLLMScoreRequest(_Lenient):
    """vLLM Score API: `text_1` is the query, the `text_2` candidates are judged together against it.
    `queries`/`documents` and `data_1`/`data_2` are accepted as the same two fields."""

    model: str | None = None
    text_1: Annotated[str | list[str], WithJsonSchema(_QUERIES)] = Field(
        description="the query (not blank), or one query per text_2 entry"
    )
    text_2: str | list[str] = Field(description="the candidates", json_schema_extra={"minItems": 1})

    @field_validator("text_1", "text_2")
    @classmethod
    def _valid_texts(cls, value: str | list[str]) -> str | list[str]:
        for text in [value] if isinstance(value, str) else value:
            valid_unicode(text)
        return value

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "text_1" in data or "text_2" in data:
            return data
        for first, second in _SCORE_ALIASES:
            if first in data or second in data:
                data = dict(data)
                data["text_1"] = data.pop(first, None)
                data["text_2"] = data.pop(second, None)
                return data
        return data

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
    neutralized: int = Field(0, description="look-alikes of prompt structure rewritten in this candidate")


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

    query: list[Text]
    prompts: list[Text] | None = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _shapes(self) -> RewardRequest:
        if self.prompts is not None and len(self.prompts) != len(self.query):
            raise ValueError("prompts must have one entry per query")
        return self


class RewardResponse(BaseModel):
    rewards: list[float] = Field(description="per rollout: mean score over the kept judgments (1..10)")
    scores: list[float] = Field(description="per rollout: the same reward mapped to 0..1")
    extra_logs: dict[str, list[float]] = Field(
        description="per rollout: voted_sum, valid_judgments, and valid (0 = fallback reward, prompt group not judged)"
    )

    @classmethod
    def fallback(cls, n: int, reward: float) -> RewardResponse:
        """Every rollout given the fallback `reward`, flagged `valid = 0` (no judgment in time)."""
        logs = ("voted_sum", "valid_judgments", "valid", "neutralized", "neutralized_prompt")
        return cls(
            rewards=[reward] * n,
            scores=[(reward - 1.0) / 9.0] * n,
            extra_logs={name: [0.0] * n for name in logs},
        )


class SlimeRewardRequest(_Lenient):
    """slime's remote reward: one rollout per call; the answer body is the reward (a JSON number)."""

    prompt: Text | list[ChatMessageIn]
    response: Text
    label: Any = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool", "function", "ipython"]
    content: Text | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _parts_are_text(cls, value: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(value, list):
            for part in value:
                if isinstance(part.get("text"), str):
                    valid_unicode(part["text"])
        return value

    def text(self) -> str:
        """Its content, its tool calls (assistant turns), the answering tool's name (tool turns)."""
        return turn_text(self.model_dump(exclude_none=True))

    def message(self) -> Message:
        """The turn as the judge sees it (a `developer` turn is the system turn of older chat formats)."""
        return Message("system" if self.role == "developer" else self.role, self.text())


class ChatRewardRequest(_Lenient):
    """OpenAI chat completion used as a reward call: the final assistant turn is judged."""

    model: str | None = None
    messages: list[ChatMessageIn] = Field(
        description="the conversation; the final assistant turn is judged, after a user turn",
        json_schema_extra={"minItems": 2},
    )
    stream: StrictBool | None = Field(None, description="must be false or absent: a reward is one JSON answer")

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(
                "streaming is not supported: the reward comes back as one JSON response; send stream=false"
            )
        return value


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
    reward: ScoreResponse = Field(description="the full /score result for the judged turn")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "grm-server"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
