"""Retries re-attach: an identical call gets the judgment already under way (or just finished) instead of a new one.

Trainers' HTTP clients give up after a fixed time and send the same call again (OpenRLHF: 180 s, 5 tries 1 s
apart; slime: 120 s, 10 tries). Each call here is named by a key (its route, the caller's API key identity and its
body); a call whose key is running attaches to that run, and one that arrives within `ttl_s` after the run
finished gets its result. A run whose callers all left (disconnected) goes on for `grace_s`, in which an identical
call may attach, and is then aborted. A caller cancelled any other way (its deadline, the server's own cancellation)
that was the run's last caller aborts it at once, and waits for its cleanup. Failed runs are not kept: a retry
after an error starts anew. At most `max_entries` runs and `max_entries` finished results are held; beyond, a call
is judged on its own. No FastAPI here.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

__all__ = ["Attachment", "ReattachObserver", "Reattacher", "call_key"]

T = TypeVar("T")


class ReattachObserver(Protocol):
    def reattached(self, state: str) -> None:
        """A call got a judgment it did not start: `state` is "in_flight" or "finished"."""

    def abandoned(self) -> None:
        """A run whose callers all left was aborted after the grace period."""


def call_key(*parts: str) -> str:
    """The key of a call from its parts (route, caller identity, canonical body); parts cannot run into each other."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@dataclass
class _Run:
    task: asyncio.Task[Any]
    callers: int = 0
    timer: asyncio.TimerHandle | None = None


class Attachment(Generic[T]):
    """One caller's share of a run: await `result()`; call `leave()` before cancelling it when the caller went
    away (its run then waits the grace period for a retry instead of being aborted)."""

    def __init__(self, owner: Reattacher, key: str, work: Callable[[], Awaitable[T]]) -> None:
        self._owner, self.key, self._work = owner, key, work
        self.left = False

    def leave(self) -> None:
        self.left = True

    async def result(self) -> T:
        return cast(T, await self._owner._run(self))

    def work(self) -> Awaitable[T]:
        return self._work()


class Reattacher:
    """Runs keyed calls once and shares their results (see the module doc)."""

    def __init__(
        self,
        *,
        ttl_s: float,
        grace_s: float,
        max_entries: int,
        observer: ReattachObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.grace_s, self.max_entries = ttl_s, grace_s, max_entries
        self.observer = observer
        self._clock = clock
        self._running: dict[str, _Run] = {}
        self._done: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # key -> (expiry, result), oldest first

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def kept(self) -> int:
        self._sweep()
        return len(self._done)

    def attach(self, key: str, work: Callable[[], Awaitable[T]]) -> Attachment[T]:
        """A caller's attachment for `key`; `work` starts the run when none is running or kept."""
        return Attachment(self, key, work)

    async def close(self) -> None:
        """Abort every run (server shutdown) and drop the kept results."""
        runs = list(self._running.values())
        self._running.clear()
        self._done.clear()
        for run in runs:
            if run.timer is not None:
                run.timer.cancel()
            run.task.cancel()
        if runs:
            await asyncio.wait({r.task for r in runs})

    async def _run(self, attachment: Attachment[Any]) -> Any:
        key = attachment.key
        self._sweep()
        if key in self._done:
            self._observe("finished")
            return self._done[key][1]
        run = self._running.get(key)
        if run is not None:
            self._observe("in_flight")
        elif len(self._running) >= self.max_entries:
            return await attachment.work()  # the bound is reached: judged on its own, not shared
        else:
            run = _Run(asyncio.ensure_future(attachment.work()))
            self._running[key] = run
            run.task.add_done_callback(functools.partial(self._finished, key, run))
        run.callers += 1
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        try:
            return await asyncio.shield(run.task)
        finally:
            run.callers -= 1
            if run.callers == 0 and not run.task.done():
                if attachment.left and self.grace_s > 0:
                    run.timer = asyncio.get_running_loop().call_later(self.grace_s, self._abandon, key, run)
                else:
                    self._abort(key, run)
                    await asyncio.wait({run.task})  # the run's cleanup (slots, engine aborts) ends first

    def _abort(self, key: str, run: _Run) -> None:
        if self._running.get(key) is run:
            del self._running[key]  # a call arriving now starts anew instead of joining a cancelled run
        run.task.cancel()

    def _abandon(self, key: str, run: _Run) -> None:
        run.timer = None
        if run.callers == 0 and not run.task.done():
            self._abort(key, run)
            if self.observer is not None:
                self.observer.abandoned()

    def _finished(self, key: str, run: _Run, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is run:
            del self._running[key]
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if task.cancelled() or task.exception() is not None or self.ttl_s <= 0:
            return  # a failure is not kept (and its exception counts as retrieved)
        self._done[key] = (self._clock() + self.ttl_s, task.result())
        self._done.move_to_end(key)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)

    def _sweep(self) -> None:
        now = self._clock()
        while self._done:
            key, (expiry, _) = next(iter(self._done.items()))
            if expiry > now:
                return
            del self._done[key]

    def _observe(self, state: str) -> None:
        if self.observer is not None:
            self.observer.reattached(state)
