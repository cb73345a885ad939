"""Hand-made engine stand-ins (fault injection, our own overhead); they satisfy the real Protocols."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meta_rm.protocol import MetaRMInput
from server.core.errors import BackendUnavailableError
from server.core.generators.base import ContinuationUnsupportedError, Generation, Partial, SamplingConfig

_RESPONSE = re.compile(r"\[The Begin of Response \d+\]\n(.*?)\n\[The End of Response \d+\]", re.DOTALL)


def shown_responses(prompt: str) -> list[str]:
    """The responses in the order a prompt shows them (after any worked example)."""
    return _RESPONSE.findall(prompt[prompt.rfind("#### Responses") :])


def score_by_length(prompt: str, index: int) -> str:
    """A deterministic 'judge': longer responses score higher (1..10)."""
    scores = [min(10, max(1, len(r))) for r in shown_responses(prompt)]
    return f"Specific Criteria: length.\nAnalysis: sample {index}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def box_by_length(prompt: str, partial: str) -> str:
    """Continues a partial judgment ending in `\\boxed{` with the `score_by_length` scores."""
    scores = [min(10, max(1, len(r))) for r in shown_responses(prompt)]
    return ", ".join(map(str, scores)) + "}"


@dataclass
class ScriptedGenerator:
    """Answers each call with `judge(prompt, sample_index)` and each continuation with
    `complete(prompt, partial_text)`; can delay, fail, be 'down', or refuse to continue."""

    judge: Callable[[str, int], str] = score_by_length
    complete: Callable[[str, str], str] = box_by_length
    can_continue: bool = True
    finish_reason: Callable[[str], str] = lambda text: "stop"
    continued: list[tuple[str, Partial, SamplingConfig]] = field(default_factory=list)
    delay_s: float = 0.0
    down: bool = False
    calls: list[tuple[str, SamplingConfig, str]] = field(default_factory=list)
    cancelled: int = 0
    name: str = "scripted"
    restartable: bool = False
    retried: int = 0

    @property
    def model_name(self) -> str:
        return self.name

    async def start(self) -> None:
        return None

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        if self.down:
            raise BackendUnavailableError("scripted backend is down")
        self.calls.append((prompt, sampling, request_id))
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        texts = tuple(self.judge(prompt, i) for i in range(sampling.n))
        return Generation(
            texts,
            prompt_tokens=len(prompt) // 4,
            completion_tokens=sum(len(t) // 4 for t in texts),
            finish_reasons=tuple(self.finish_reason(t) for t in texts),
        )

    @property
    def chars_per_token(self) -> float | None:
        return None

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        if not self.can_continue:
            raise ContinuationUnsupportedError("scripted backend cannot continue")
        self.continued.extend((prompt, p, sampling) for p in partials)
        texts = tuple(self.complete(prompt, p.text) for p in partials)
        return Generation(
            texts,
            prompt_tokens=len(prompt) // 4,
            completion_tokens=len(texts) * 3,
            finish_reasons=("stop",) * len(texts),
        )

    async def check_ready(self) -> None:
        if self.down:
            raise BackendUnavailableError("scripted backend is down")

    async def close(self) -> None:
        return None


@dataclass
class ScriptedMetaRM:
    """Rates a judgment by a function of its text (default: the number after 'sample')."""

    rate: Callable[[MetaRMInput], float] = lambda item: float(re.search(r"sample (\d+)", item.judgment).group(1))  # type: ignore[union-attr]
    seen: list[MetaRMInput] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "scripted-meta-rm"

    async def start(self) -> None:
        return None

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        self.seen.extend(items)
        return [self.rate(item) for item in items]

    async def check_ready(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    """Wait on state, not time: poll `condition` every 10 ms, failing the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)
