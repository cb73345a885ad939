"""CPU-heavy work on caller text (neutralizing, rendering prompts, parsing big batches) off the event loop.

A 4 MB body costs tenths of a second of pure-Python text work; done on the loop it would stall every other
request and the liveness probe. Small work stays inline (a thread hop costs more than it saves); big work goes
to one small, bounded thread pool, so many big bodies at once queue there instead of piling up threads. A
caller cancelled (client gone, deadline) while its work waits in that queue drops the work; work already
running finishes and its result is discarded. Results are the same either way: the functions are pure.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

INLINE_CHARS = 65_536
"""Text work on at most this many characters runs inline (well under a millisecond)."""

WORKERS = 2
"""Threads for big text work. Pure-Python work holds the GIL, so more threads would not go faster; two let a
big body's work overlap another's C-level parts without starving the loop."""

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="grm-text")
        return _pool


async def off_loop(fn: Callable[[], T], *, heavy: bool) -> T:
    """`fn()`, in the text pool when `heavy`, else inline."""
    if not heavy:
        return fn()
    return await asyncio.get_running_loop().run_in_executor(_executor(), fn)


def text_chars(*groups: object) -> int:
    """Characters in the given strings and sequences of strings (what the text work is linear in)."""
    total = 0
    for group in groups:
        if isinstance(group, str):
            total += len(group)
        elif isinstance(group, list | tuple):
            total += sum(len(x) for x in group if isinstance(x, str))
    return total
