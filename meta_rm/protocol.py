"""The Meta RM Protocol: rate each sampled judgment with one float (higher = more likely correct)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class MetaRMInput:
    """One judgment to rate; `responses` are in the order the judgment saw them."""

    conversation: str
    responses: tuple[str, ...]
    judgment: str


@runtime_checkable
class MetaRM(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        """One meta reward per item, same order; runs blocking model code off the event loop."""
        ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...
