"""The generator Protocol: one engine call = one prompt sampled n times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    n: int
    temperature: float
    max_tokens: int
    seed: int | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@runtime_checkable
class Generator(Protocol):
    """A GRM engine. `prompt` is the user-turn text; the engine applies the model's chat template."""

    @property
    def model_name(self) -> str: ...

    async def start(self) -> None:
        """Load or connect; raise ConfigurationError / BackendUnavailableError on failure."""

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        """Sample `sampling.n` judgments; cancelling the call aborts the engine request."""
        ...

    async def check_ready(self) -> None:
        """Raise BackendUnavailableError with the reason if the engine cannot serve now."""

    async def close(self) -> None: ...
