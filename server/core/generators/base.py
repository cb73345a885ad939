"""The generator Protocol: one engine call = one prompt sampled n times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from voting import derive_seed


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    n: int
    temperature: float
    max_tokens: int
    seed: int | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """`finish_reasons[i]`: why sample i ended (`stop`, `length`, ...; None when the engine does not say);
    `token_ids[i]`: its output tokens when the engine returns them (empty otherwise)."""

    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    finish_reasons: tuple[str | None, ...] = ()
    token_ids: tuple[tuple[int, ...], ...] = ()


def one_each(gens: Sequence[Generation]) -> Generation:
    """One Generation of the first sample of each one-sample call (continuations sent one per partial)."""
    return Generation(
        texts=tuple(g.texts[0] if g.texts else "" for g in gens),
        prompt_tokens=sum(g.prompt_tokens for g in gens),
        completion_tokens=sum(g.completion_tokens for g in gens),
        cached_tokens=sum(g.cached_tokens for g in gens),
        finish_reasons=tuple(g.finish_reasons[0] if g.finish_reasons else None for g in gens),
        token_ids=tuple(g.token_ids[0] for g in gens) if all(g.token_ids for g in gens) else (),
    )


def nth_seed(seed: int | None, i: int) -> int | None:
    """A distinct seed for the i-th of several one-sample requests made from one seeded call."""
    return None if seed is None else derive_seed(seed, "nth", i)


@dataclass(frozen=True, slots=True)
class Partial:
    """A judgment to continue: `text` is the assistant's text so far (ending in `Scores: \\boxed{`);
    `token_ids` are the sample's own output tokens, of which the prefix that decodes into `text` is reused."""

    text: str
    token_ids: tuple[int, ...] = ()


class ContinuationUnsupportedError(Exception):
    """The backend cannot continue an assistant message; the caller resamples instead."""


@runtime_checkable
class Generator(Protocol):
    """A GRM engine: everything a backend provides (docs/backends.md, "Adding a backend"). `prompt` is the
    user-turn text; the engine applies the model's chat template."""

    @property
    def model_name(self) -> str: ...

    @property
    def restartable(self) -> bool:
        """True when this process owns the engine and the engine can die under it (an in-process vLLM
        EngineCore): the server supervises it and restarts it in place. False for a remote engine (someone
        else's process; /ready follows it) and for a generator that is already supervised."""
        ...

    @property
    def retried(self) -> int:
        """Engine calls sent again after the connection dropped (`grm_engine_retries_total`); 0 for a
        backend that never sends a call twice."""
        ...

    async def start(self) -> None:
        """Load or connect; raise ConfigurationError / BackendUnavailableError on failure."""

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        """Sample `sampling.n` judgments; cancelling the call aborts the engine request."""
        ...

    @property
    def chars_per_token(self) -> float | None:
        """The tokenizer's measured characters per token on judging prose; None when unknown."""
        ...

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        """Continue each partial judgment once (`sampling.n` is ignored); `texts[i]` is only the continuation
        of `partials[i]`. Raise ContinuationUnsupportedError when the backend cannot continue."""
        ...

    async def check_ready(self) -> None:
        """Raise BackendUnavailableError with the reason if the engine cannot serve now."""

    async def close(self) -> None: ...
