"""CPU-heavy work on caller text (neutralizing and rendering prompts) off the event loop, in worker processes.

A 4 MB body costs tenths of a second of pure-Python and regex work. On the loop it stalls every request and the
liveness probe; in a thread it still does, because one regex scan over a whole text holds the GIL from start to
end. So big text work goes to a small, bounded pool of worker processes (spawned, never forked: the server holds
engine threads); small work stays inline (a hop costs more than it saves). Many big bodies at once queue for the
pool instead of piling up workers. A caller cancelled (client gone, deadline) while its work still waits in that
queue drops the work; work already running finishes and its result is discarded. The functions sent are pure,
so the results are the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

INLINE_CHARS = 65_536
"""Text work on at most this many characters runs inline (well under a millisecond)."""

WORKERS = 2
"""Worker processes for big text work (each one busy for at most a few tenths of a second per 4 MB body)."""

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _noop() -> None:
    return None


def _start_pool() -> ProcessPoolExecutor:
    """The pool with every worker started (starting a process blocks its caller: done in a thread, once)."""
    global _pool
    with _lock:
        if _pool is None:
            pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"))
            for started in [pool.submit(_noop) for _ in range(WORKERS)]:
                started.result()
            _pool = pool
        return _pool


def _drop(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


async def off_loop(fn: Callable[..., T], *args: object, heavy: bool) -> T:
    """`fn(*args)` (a module-level function of picklable arguments): in a worker process when `heavy`, else
    inline. A pool broken by a lost worker (killed, out of memory) is replaced; that call runs in a thread."""
    if not heavy:
        return fn(*args)
    loop = asyncio.get_running_loop()
    pool = _pool if _pool is not None else await asyncio.to_thread(_start_pool)
    try:
        return await loop.run_in_executor(pool, fn, *args)
    except BrokenProcessPool:
        logger.warning("the text worker pool broke (a worker died); starting a new one")
        _drop(pool)
        return await asyncio.to_thread(fn, *args)


def text_chars(*groups: object) -> int:
    """Characters in the given strings and sequences of strings (what the text work is linear in)."""
    total = 0
    for group in groups:
        if isinstance(group, str):
            total += len(group)
        elif isinstance(group, list | tuple):
            total += sum(len(x) for x in group if isinstance(x, str))
    return total
