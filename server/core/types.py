"""Internal request/result types of the judging service (no HTTP in them)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from server.core.prompts import Message, StructuredOutput


def new_request_id() -> str:
    return f"score-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """One query with its candidate responses; unset parameters take the configured defaults."""

    messages: tuple[Message, ...]
    responses: tuple[str, ...]
    k: int | None = None
    k_meta: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    request_id: str = field(default_factory=new_request_id)
    structured_output: StructuredOutput | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled judgment: `scores` in the caller's order (None when unparseable, with `error`);
    `finish_reason` of its sampling (`stop`, `length`, ...); `completed` when its score box was
    written by a constrained continuation (the judgment had no parseable box of its own)."""

    scores: tuple[int, ...] | None
    order: tuple[int, ...]
    text: str
    principles: str
    critique: str
    error: str | None
    meta_reward: float | None = None
    kept: bool = False
    finish_reason: str | None = None
    completed: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    engine_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.engine_calls + other.engine_calls,
        )


@dataclass(frozen=True, slots=True)
class Neutralizations:
    """Look-alikes of prompt structure rewritten in the caller's texts (voting.sanitize): per response in
    the caller's order, in the whole conversation, and (source, kind, count) for the metrics."""

    responses: tuple[int, ...] = ()
    conversation: int = 0
    by_kind: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class JudgeResult:
    request_id: str
    model: str
    rewards: tuple[int, ...]
    scores: tuple[float, ...]
    best: int
    k: int
    k_meta: int
    valid: int
    kept: int
    seed: int
    usage: Usage
    samples: tuple[Sample, ...]
    created: int = field(default_factory=lambda: int(time.time()))
    neutralized: Neutralizations = field(default_factory=Neutralizations)
