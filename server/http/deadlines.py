"""A caller's own deadline on the reward routes (`X-GRM-Deadline-S`): a trainer whose client gives up after a fixed
time (AReaL's `AsyncRewardWrapper`: 15 s, then a silent 0) asks for an answer before then, and gets the fallback
reward, flagged invalid, instead of nothing. No FastAPI here."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.core.errors import InvalidRequestError, RequestTimeoutError

__all__ = ["DEADLINE_HEADER", "VALID_HEADER", "call_deadline", "within_deadline"]

DEADLINE_HEADER = "X-GRM-Deadline-S"
"""Seconds the caller waits at most; the server answers the fallback reward (flagged) when they run out."""
VALID_HEADER = "X-GRM-Valid"
"""On `/reward` answers: 1 when the number is a judgment's, 0 when it is the fallback reward."""

T = TypeVar("T")


def call_deadline(value: str | None, cap_s: float) -> float | None:
    """The header's deadline in seconds (never beyond the server's own `limits.request_timeout_s`); None when
    absent. A value that is not a positive number is the caller's error."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequestError(
            f"{DEADLINE_HEADER} must be a positive number of seconds, got {value[:40]!r}", param=DEADLINE_HEADER
        )
    return min(seconds, cap_s)


async def within_deadline(
    work: Awaitable[T], deadline_s: float | None, fallback: Callable[[], T], *, strict: bool
) -> T:
    """`work`'s answer, or `fallback()` once `deadline_s` passed (the work is cancelled: its rollouts leave their
    joint group, whose other callers keep their judgment). `strict` answers 504 instead, as for the server's
    own deadline."""
    if deadline_s is None:
        return await work
    try:
        async with asyncio.timeout(deadline_s):
            return await work
    except TimeoutError:
        if strict:
            raise RequestTimeoutError(
                f"no judgment within the caller's {DEADLINE_HEADER} of {deadline_s:g} s", param=DEADLINE_HEADER
            ) from None
        return fallback()
