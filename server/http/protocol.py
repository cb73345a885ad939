"""Pydantic models of the native API (`/score`, `/score/batch`); field descriptions are the OpenAPI docs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from server.core.content import turn_text
from server.core.prompts import Message, StructuredOutput
from server.core.text import unicode_problem
from server.core.types import JudgeRequest, JudgeResult, new_request_id

CONFIGURED = "x-configured-by"
"""Schema key: {keyword: setting path}; the app's OpenAPI fills in each keyword from the running settings."""


def valid_unicode(text: str) -> str:
    """JSON may spell a lone surrogate (`"\\ud800"`); no engine can encode it, so it is bad input."""
    problem = unicode_problem(text)
    if problem is not None:
        raise PydanticCustomError("invalid_unicode", problem)
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]
"""Every text field of every request model: a string that is valid Unicode."""

ResponseText = Annotated[
    Text, WithJsonSchema({"type": "string", CONFIGURED: {"maxLength": "limits.max_response_chars"}})
]


def json_integer(value: Any) -> Any:
    """An integer knob takes what JSON Schema calls an integer: a number with no fraction (`2` or `2.0`);
    `true` and `"2"` stay errors (pydantic's strict int then names the field)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, Field(strict=True), BeforeValidator(json_integer)]

# The knobs: JSON integers and numbers only (no `true`, no `"2"`). The schema states the bounds that
# `Planner.plan` (server/core/judging.py) enforces: fixed ones as they are, configured ones filled in from the settings.
KnobK = Annotated[JsonInt, WithJsonSchema({"type": "integer", "minimum": 1, CONFIGURED: {"maximum": "judging.max_k"}})]
KnobKMeta = Annotated[
    JsonInt, WithJsonSchema({"type": "integer", "minimum": 0, CONFIGURED: {"maximum": "judging.max_k"}})
]
KnobTemperature = Annotated[StrictFloat, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 2})]
KnobMaxTokens = Annotated[
    JsonInt, WithJsonSchema({"type": "integer", "minimum": 16, CONFIGURED: {"maximum": "judging.max_max_tokens"}})
]
KnobSeed = Annotated[JsonInt, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 2**31 - 1})]


class Knobs(BaseModel):
    """The judging knobs every request model shares (native fields, or `extra_body` on the compatible routes).
    Only types here: defaults and bounds are applied in one place, `server.core.judging.Planner`."""

    model_config = ConfigDict(extra="forbid")
    k: KnobK | None = Field(None, description="judgments to sample (default from settings, 1..judging.max_k)")
    k_meta: KnobKMeta | None = Field(
        None,
        description="judgments kept by the Meta RM, 0..k (> 0 needs a Meta RM); null = default (k/2 with a Meta RM), "
        "0 = plain voting",
    )
    temperature: KnobTemperature | None = Field(
        None, description="sampling temperature of the judgments, 0..2 (default 0.5)"
    )
    max_tokens: KnobMaxTokens | None = Field(
        None,
        description="token budget of one judgment, up to judging.max_max_tokens; at least 16, and with the regex "
        "structured output at least 96 + 8 per response",
    )
    seed: KnobSeed | None = Field(
        None, description="seed of orders, sampling and tie-breaks, 0..2^31-1; null = random (reported back)"
    )
    structured_output: StructuredOutput | None = Field(
        None,
        description="free+complete (free reasoning, a judgment without a box gets it by a short constrained "
        "continuation), regex (whole-judgment regex), off; null = the server's setting (by template)",
    )

    def judge_request(
        self, messages: Sequence[Message], responses: Sequence[str], request_id: str | None = None
    ) -> JudgeRequest:
        """The one conversion from any request model to the core request."""
        return JudgeRequest(
            messages=tuple(messages),
            responses=tuple(responses),
            k=self.k,
            k_meta=self.k_meta,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
            request_id=request_id or new_request_id(),
            structured_output=self.structured_output,
        )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "function", "ipython"] = Field(
        description="who spoke this turn; tool, function and ipython turns are a tool's answers"
    )
    content: Text | None = Field(None, description="the text of the turn (may be absent on a turn with tool_calls)")
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description='an assistant turn\'s tool calls, OpenAI-style [{"function": {"name", "arguments"}}]'
    )
    function_call: dict[str, Any] | None = Field(None, description="the legacy single tool call {name, arguments}")
    name: Text | None = Field(None, description="the tool that answered (tool and function turns)")
    tool_call_id: str | None = Field(None, description="the call a tool turn answers (not shown to the judge)")

    @model_validator(mode="after")
    def _has_text(self) -> ChatMessage:
        if self.content is None and not self.tool_calls and not self.function_call:
            raise ValueError("a turn needs `content` (or `tool_calls` on an assistant turn)")
        return self

    def message(self) -> Message:
        """The turn as the judge sees it: content, tool calls, the answering tool's name."""
        return Message(self.role, turn_text(self.model_dump(exclude_none=True)))


class ScoreParams(Knobs):
    """Parameters shared by `/score` and `/score/batch`: the knobs plus what the response shows."""

    return_samples: StrictBool = Field(False, description="include every sampled judgment in the response")


class ScoreItem(BaseModel):
    """One query with its candidate responses."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # exactly one of `query` / `messages`, as `_one_conversation` checks
            "oneOf": [
                {"required": ["query"], "properties": {"query": {"type": "string"}}},
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
            ]
        },
    )
    messages: list[ChatMessage] | None = Field(
        None,
        description="the conversation, last turn = the user's query (exactly one of query or messages)",
        json_schema_extra={"minItems": 1},
    )
    query: Text | None = Field(
        None,
        description="the user's query, not blank (exactly one of query or messages)",
        json_schema_extra={"pattern": "\\S", CONFIGURED: {"maxLength": "limits.max_query_chars"}},
    )
    responses: list[ResponseText] = Field(
        description="candidate responses to judge, 1..limits.max_responses",
        json_schema_extra={"minItems": 1, CONFIGURED: {"maxItems": "limits.max_responses"}},
    )

    @model_validator(mode="after")
    def _one_conversation(self) -> ScoreItem:
        if (self.messages is None) == (self.query is None):
            raise ValueError("give exactly one of `query` or `messages`")
        return self

    def conversation(self) -> tuple[Message, ...]:
        if self.messages is not None:
            return tuple(m.message() for m in self.messages)
        return (Message("user", self.query or ""),)


class ScoreRequest(ScoreParams, ScoreItem):
    """`POST /score`: one item plus its parameters."""


class ScoreBatchRequest(ScoreParams):
    """`POST /score/batch`: items judged concurrently with shared parameters; each item is one admitted item
    (at most `limits.max_concurrent_requests` judged at once, the rest wait in the queue)."""

    items: list[Any] = Field(
        description="1..limits.max_batch_items, each a ScoreItem ({query | messages, responses}); a bad item gets "
        "its own error entry, a bad shared parameter fails the call",
        json_schema_extra={"minItems": 1, CONFIGURED: {"maxItems": "limits.max_batch_items"}},
    )


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
    finish_reason: str | None = Field(None, description="why sampling ended: stop, length, ... (null: unknown)")
    completed: bool = Field(
        False, description="its score box was written by a constrained continuation of this judgment"
    )


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
    neutralized: list[int] = Field(
        description="per response: look-alikes of prompt structure (block markers, role labels, headers, chat "
        "tokens) rewritten before judging; > 0 flags a response trying to forge the judging prompt"
    )
    neutralized_conversation: int = Field(description="the same count over every turn of the conversation")
    samples: list[SampleOut] | None = Field(
        None, exclude_if=lambda v: v is None, description="every sampled judgment (only with return_samples)"
    )

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
                    finish_reason=s.finish_reason,
                    completed=s.completed,
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
            neutralized=list(r.neutralized.responses),
            neutralized_conversation=r.neutralized.conversation,
            samples=samples,
        )


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The one error body of every route (and of a failed batch item)."""

    error: ErrorInfo


class ScoreBatchResponse(BaseModel):
    id: str
    object: Literal["score.batch"] = "score.batch"
    results: list[ScoreResponse | ErrorResponse] = Field(description="per item, in order: its result or its error")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: str
    meta_rm: str | None = Field(description="the Meta RM's name, or null for plain voting")
