"""Box completion: a judgment without a parseable box is cut back to a clean point and its score box is
written by a short constrained continuation of that same judgment (or, where the backend cannot continue,
the judgment is resampled)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from server.core.errors import InvalidRequestError, first_failure
from server.core.generators.base import (
    ContinuationUnsupportedError,
    Generation,
    Generator,
    Partial,
    SamplingConfig,
)
from server.core.prompts import box_scores_regex
from server.core.types import Sample, Usage
from voting import derive_seed, map_to_caller, parse_scores, split_judgment
from voting.orders import ShownOrder
from voting.parse import BOX_OPEN, SCORES_OPEN

logger = logging.getLogger(__name__)

_CLEAN_END = re.compile(r"[.!?。！？](?=\s|$)|\n")


def completion_prefix(text: str) -> str:
    """The judgment's text up to its last clean point, then `Scores: \\boxed{`, ready to be continued
    (when the kept text already ends in a valid box of its own, the caller keeps it as it is).

    A started (broken or miscounted) score box is dropped with its line; otherwise the text is cut after
    its last full sentence or line, so a judgment stopped mid-word by max_tokens ends cleanly."""
    cut = text
    box = cut.rfind(BOX_OPEN[:-1])  # a started box, with or without its brace
    if box >= 0:
        cut = cut[: cut.rfind("\n", 0, box) + 1]
    ends = [m.end() for m in _CLEAN_END.finditer(cut)]
    if ends:
        cut = cut[: ends[-1]]
    cut = cut.rstrip()
    return f"{cut}\n{SCORES_OPEN}" if cut else SCORES_OPEN


def completion_max_tokens(n_responses: int) -> int:
    """Enough tokens for n scores, their separators and the closing brace, whatever the tokenizer."""
    return 4 * n_responses + 8


def parse_text(
    shown: ShownOrder, text: str, n: int, finish_reason: str | None = None, *, completed: bool = False
) -> Sample:
    """One judgment's text -> a Sample with scores mapped back to the caller's order."""
    parsed = parse_scores(text, n)
    principles, critique = split_judgment(text)
    scores = map_to_caller(parsed.scores, shown.order) if parsed.scores is not None else None
    error = None if parsed.error is None else f"{parsed.error.value}: {parsed.detail}"
    return Sample(
        scores, shown.order, text, principles, critique, error, finish_reason=finish_reason, completed=completed
    )


def parse_generation(shown: ShownOrder, gen: Generation, n: int) -> list[Sample]:
    reasons = gen.finish_reasons or (None,) * len(gen.texts)
    return [parse_text(shown, text, n, reason) for text, reason in zip(gen.texts, reasons, strict=True)]


COMPLETION_SEED_PART = -1
"""The `derive_seed(request seed, attempt, part)` part of an attempt's completions; its shown orders are 0.."""


@dataclass(frozen=True, slots=True)
class BoxCompleter:
    """Completes every unparseable judgment of one attempt; `resample` is how the attempt sampled (its
    temperature, budget and regex), used for the continuations' temperature and to sample afresh where the
    backend cannot continue."""

    generator: Generator
    n: int
    seed: int
    resample: SamplingConfig

    async def complete(
        self,
        request_id: str,
        orders: Sequence[ShownOrder],
        prompts: Sequence[str],
        gens: Sequence[Generation],
        parsed: Sequence[list[Sample]],
    ) -> tuple[list[list[Sample]], Usage]:
        """The samples with completions in place of the judgments that had no parseable box, and the
        tokens the continuations cost."""
        todo = [j for j, samples in enumerate(parsed) if any(s.scores is None for s in samples)]
        out = [list(samples) for samples in parsed]
        if not todo:
            return out, Usage()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._one_order(f"{request_id}-c{j}", orders[j], prompts[j], gens[j], out[j], j))
                    for j in todo
                ]
        except BaseExceptionGroup as group:
            raise first_failure(group, "completing judgments")  # noqa: B904 - the cause is set by first_failure
        usage = Usage()
        for j, task in zip(todo, tasks, strict=True):
            out[j], extra = task.result()
            usage = usage + extra
        return out, usage

    async def _one_order(
        self, request_id: str, shown: ShownOrder, prompt: str, gen: Generation, samples: list[Sample], j: int
    ) -> tuple[list[Sample], Usage]:
        out = list(samples)
        for i, s in enumerate(samples):  # a box of its own before a broken last one: cutting back is enough
            if s.scores is None:
                kept = completion_prefix(s.text)[: -len(SCORES_OPEN)].rstrip()
                if kept and parse_scores(kept, self.n).scores is not None:
                    out[i] = parse_text(shown, kept, self.n, s.finish_reason, completed=True)
        missing = [i for i, s in enumerate(out) if s.scores is None]
        if not missing:
            return out, Usage()
        partials = [
            Partial(completion_prefix(samples[i].text), gen.token_ids[i] if gen.token_ids else ()) for i in missing
        ]
        sampling = SamplingConfig(
            1,
            self.resample.temperature,
            completion_max_tokens(self.n),
            derive_seed(self.seed, "complete", j),
            box_scores_regex(self.n),
        )
        try:
            cont = await self.generator.continue_judgments(prompt, partials, sampling, request_id)
        except ContinuationUnsupportedError as exc:
            logger.info("%s: cannot continue judgments (%s); resampling %d", request_id, exc, len(missing))
            return await self._resample(request_id, shown, prompt, out, missing, j)
        except InvalidRequestError as exc:  # e.g. the context is full: the judgments stay invalid
            logger.warning("%s: completing %d judgments refused: %s", request_id, len(missing), exc.message)
            return out, Usage()
        for i, partial, text in zip(missing, partials, cont.texts, strict=True):
            out[i] = parse_text(shown, partial.text + text, self.n, samples[i].finish_reason, completed=True)
        return out, Usage(cont.prompt_tokens, cont.completion_tokens, cont.cached_tokens, len(missing))

    async def _resample(
        self, request_id: str, shown: ShownOrder, prompt: str, samples: list[Sample], missing: list[int], j: int
    ) -> tuple[list[Sample], Usage]:
        sampling = SamplingConfig(
            len(missing),
            self.resample.temperature,
            self.resample.max_tokens,
            derive_seed(self.seed, "resample", j),
            self.resample.regex,
        )
        gen = await self.generator.generate(prompt, sampling, f"{request_id}-r")
        out = list(samples)
        for i, fresh in zip(missing, parse_generation(shown, gen, self.n), strict=True):
            out[i] = fresh
        return out, Usage(gen.prompt_tokens, gen.completion_tokens, gen.cached_tokens, 1)
