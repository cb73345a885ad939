"""Admission of judged items: at most `slots` judged at once, the rest wait in a bounded, fair queue.

An item is one judgment: a /score call, one item of /score/batch, one prompt group of /get_reward or
/v1/score, one joint judgment of joined reward traffic. A call is accepted whole (`Admission.call`, which
holds a place for each of its items until it finishes) and each item takes a slot before it is judged and
gives it back after. Policy:

- a call whose items can never all be held (more than `slots + max_queued`) is a 400 (`too_many_items`);
- a call that does not fit now (the unfinished items of accepted calls plus its own exceed
  `slots + max_queued`) is a 429 with Retry-After, before any of its items starts (`queue_full`);
- waiting items are served round-robin over calls in order of arrival: a free slot goes to the oldest call
  with a waiting item, which then goes to the back of the line. A small call arriving during a big batch
  is interleaved with it instead of waiting for the whole batch;
- an item not started by its call's deadline (`queue_timeout_s` after the call opened) fails with 429
  (`queue_timeout`); a cancelled item (client gone, a sibling failed) leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from typing import Protocol, TypeVar

from server.core.errors import InvalidRequestError, OverloadedError

T = TypeVar("T")


class AdmissionObserver(Protocol):
    """Receives the item counts after each change, and each refusal (the server's metrics implement it)."""

    def admission(self, in_flight: int, queued: int) -> None: ...

    def refused(self, reason: str) -> None: ...


class Lane:
    """One call's items: their place in the round-robin, their queue deadline (loop time), and how many of
    the call's admitted items are not finished yet (`reserved`: places held in slots + queue)."""

    __slots__ = ("deadline", "reserved", "waiters")

    def __init__(self, deadline: float, reserved: int) -> None:
        self.deadline = deadline
        self.reserved = reserved
        self.waiters: deque[asyncio.Future[None]] = deque()


class Admission:
    def __init__(
        self, slots: int, max_queued: int, queue_timeout_s: float, observer: AdmissionObserver | None = None
    ) -> None:
        self.slots, self.max_queued, self.queue_timeout_s = slots, max_queued, queue_timeout_s
        self.observer = observer
        self.in_flight = 0  # slots held
        self.queued = 0  # items waiting for a slot (only while every slot is held)
        self.admitted = 0  # items of accepted calls not finished yet (held, waiting, or about to wait)
        self._rotation: deque[Lane] = deque()  # lanes with waiting items, next served first

    @contextlib.contextmanager
    def call(self, items: int = 1, *, param: str | None = None) -> Iterator[Lane]:
        """Accept a call of `items` items or refuse it whole before any starts: 400 when they could never be
        held, 429 when they do not fit now. Their places are held until they finish or the block exits."""
        limit = self.slots + self.max_queued
        if items > limit:
            raise InvalidRequestError(
                f"{items} items to judge in one call exceed what the server holds at once ({self.slots} judged"
                f" + {self.max_queued} queued); split the call",
                param=param,
                code="too_many_items",
            )
        if self.admitted + items > limit:
            raise self._refuse(
                "queue_full",
                f"{self.in_flight} items judged and {self.admitted - self.in_flight} waiting; {items} more do not"
                f" fit (limit {self.slots} + {self.max_queued} queued); retry shortly",
            )
        lane = Lane(asyncio.get_running_loop().time() + self.queue_timeout_s, items)
        self.admitted += items
        try:
            yield lane
        finally:
            self.admitted -= lane.reserved  # items that never ran (cancelled, or judged jointly elsewhere)
            lane.reserved = 0

    @contextlib.asynccontextmanager
    async def slot(self, lane: Lane | None = None) -> AsyncIterator[None]:
        """Hold one slot for one item of `lane` while the block runs (a call of its own when None). An item of
        a lane with no places left (a joint judgment outliving its opener's call) still waits its turn."""
        if lane is None:
            with self.call() as own:
                async with self.slot(own):
                    yield
            return
        await self._acquire(lane)
        try:
            yield
        finally:
            if lane.reserved > 0:
                lane.reserved -= 1
                self.admitted -= 1
            self._release()

    async def _acquire(self, lane: Lane) -> None:
        if self.in_flight < self.slots:  # nobody waits while a slot is free
            self.in_flight += 1
            self._changed()
            return
        waiter = asyncio.get_running_loop().create_future()
        if not lane.waiters:
            self._rotation.append(lane)
        lane.waiters.append(waiter)
        self.queued += 1
        self._changed()
        try:
            async with asyncio.timeout_at(lane.deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():  # handed a slot as it left: pass the slot on
                self._release()
            else:
                self._forget(lane, waiter)
            if isinstance(exc, TimeoutError):
                raise self._refuse(
                    "queue_timeout", f"not started within {self.queue_timeout_s:g} s in the queue; retry later"
                ) from None
            raise

    def _release(self) -> None:
        """Hand the slot to the next lane's oldest waiter, or free it."""
        while self._rotation:
            lane = self._rotation.popleft()
            waiter = lane.waiters.popleft()
            if lane.waiters:
                self._rotation.append(lane)
            self.queued -= 1
            if not waiter.done():
                waiter.set_result(None)
                self._changed()
                return
        self.in_flight -= 1
        self._changed()

    def _forget(self, lane: Lane, waiter: asyncio.Future[None]) -> None:
        try:
            lane.waiters.remove(waiter)
        except ValueError:  # already taken off by _release
            return
        self.queued -= 1
        if not lane.waiters:
            with contextlib.suppress(ValueError):
                self._rotation.remove(lane)
        self._changed()

    def _refuse(self, reason: str, message: str) -> OverloadedError:
        if self.observer is not None:
            self.observer.refused(reason)
        return OverloadedError(message, code=reason)

    def _changed(self) -> None:
        if self.observer is not None:
            self.observer.admission(self.in_flight, self.queued)


async def all_or_none(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Await all concurrently; the first failure cancels the others (judging or queued) and is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_wrap(a)) for a in aws]
    except BaseExceptionGroup as failed:
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first  # noqa: B904 - its own cause and traceback are kept
    return [t.result() for t in tasks]


async def _wrap(aw: Awaitable[T]) -> T:
    return await aw
