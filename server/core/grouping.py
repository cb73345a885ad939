"""Joint judging of per-sample reward traffic: rollouts of one prompt arriving close together share one judgment."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from server.core.admission import Lane
from server.core.errors import InvalidRequestError
from server.core.judging import JudgeService, Plan
from server.core.types import JudgeRequest, JudgeResult
from voting import pick_best


def join_key(req: JudgeRequest) -> JudgeRequest:
    """What requests judged together must share: the request itself minus what joining changes (its
    responses and request id), so every knob, present or future, keeps callers apart."""
    return replace(req, responses=(), request_id="")


class JoinObserver(Protocol):
    """Receives one call per joint judgment (the server's Prometheus metrics implement it)."""

    def joined(self, size: int, waits: Sequence[float]) -> None: ...


def own_share(result: JudgeResult, positions: Sequence[int]) -> JudgeResult:
    """The joint result seen by one caller: its responses' rewards and scores, in its order."""
    rewards = tuple(result.rewards[p] for p in positions)
    scores = tuple(result.scores[p] for p in positions)
    marks = result.neutralized.responses
    neutralized = replace(result.neutralized, responses=tuple(marks[p] for p in positions) if marks else ())
    best = pick_best(rewards, result.seed)  # as the service picks it: ties broken by the seed
    return replace(result, rewards=rewards, scores=scores, best=best, neutralized=neutralized)


@dataclass(eq=False)
class _Entry:
    request: JudgeRequest
    arrived: float
    future: asyncio.Future[JudgeResult]


@dataclass(eq=False)
class _Bucket:
    key: JudgeRequest
    opened: float
    plan: Plan  # of the joint request of its entries (one that leaves only lowers what it needs)
    lane: Lane | None  # the admission lane of the caller that opened it
    entries: list[_Entry] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return sum(len(e.request.responses) for e in self.entries)


class Joiner:
    """Joins requests with the same conversation and knobs into one judgment of at most `cap` responses.

    A bucket is judged when it is full, when no request joined it for `window_s`, or `max_wait_s` after it
    opened. Each caller gets its own share. A caller that is cancelled leaves its bucket (before the judgment)
    or stops waiting (after); the judgment is aborted only when every caller of it has gone."""

    def __init__(
        self,
        service: JudgeService,
        *,
        cap: int,
        window_s: float,
        max_wait_s: float,
        observer: JoinObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.cap, self.window_s, self.max_wait_s = cap, window_s, max_wait_s
        self.observer = observer
        self._clock = clock
        self._open: dict[JudgeRequest, _Bucket] = {}
        self._running: set[asyncio.Task[None]] = set()

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    async def judge(self, req: JudgeRequest, lane: Lane | None = None) -> JudgeResult:
        """Judge `req`'s responses, jointly with other waiting requests for the same conversation and knobs.
        Each request is planned once: alone when it opens a bucket, else as the joint request it makes. A
        judgment waits for its slot in `lane` (its call's place in the admission queue; for a joint one, the
        lane of the caller that opened it)."""
        if len(req.responses) >= self.cap:
            plan = self.service.plan(req)  # a bad request fails alone
            async with self.service.admission.slot(lane):
                return await self.service.judge(req, plan)
        key = join_key(req)
        bucket = self._open.get(key)
        joint_plan = self._joint_plan(bucket, req) if bucket is not None else None
        if bucket is not None and joint_plan is None:
            self._flush(bucket)
            bucket = None
        now = self._clock()
        if bucket is None or joint_plan is None:
            bucket = self._open[key] = _Bucket(key, now, self.service.plan(req), lane)  # a bad request fails alone
        else:
            bucket.plan = joint_plan
        entry = _Entry(req, now, asyncio.get_running_loop().create_future())
        bucket.entries.append(entry)
        if bucket.size >= self.cap:
            self._flush(bucket)
        else:
            self._arm(bucket, now)
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._leave(bucket, entry)
            raise

    def _joint_plan(self, bucket: _Bucket, req: JudgeRequest) -> Plan | None:
        """The plan of `bucket` joined by `req`, or None when `req` cannot join: over the cap, or the joint
        request outside a limit (e.g. the max_tokens a judgment of that many responses needs)."""
        if bucket.size + len(req.responses) > self.cap:
            return None
        joint = tuple(r for e in bucket.entries for r in e.request.responses) + req.responses
        try:
            return self.service.plan(replace(req, responses=joint))
        except InvalidRequestError:
            return None

    def _arm(self, bucket: _Bucket, now: float) -> None:
        if bucket.timer is not None:
            bucket.timer.cancel()
        delay = max(0.0, min(self.window_s, bucket.opened + self.max_wait_s - now))
        bucket.timer = asyncio.get_running_loop().call_later(delay, self._flush, bucket)

    def _flush(self, bucket: _Bucket) -> None:
        if bucket.task is not None:
            return
        if bucket.timer is not None:
            bucket.timer.cancel()
        if self._open.get(bucket.key) is bucket:
            del self._open[bucket.key]
        if bucket.entries:
            bucket.task = asyncio.get_running_loop().create_task(self._run(bucket))
            self._running.add(bucket.task)
            bucket.task.add_done_callback(self._running.discard)

    async def _run(self, bucket: _Bucket) -> None:
        entries = list(bucket.entries)
        first = entries[0].request
        responses = tuple(r for e in entries for r in e.request.responses)
        joint = replace(first, responses=responses, request_id=f"{first.request_id}-joint{len(entries)}")
        if self.observer is not None:
            flushed = self._clock()
            self.observer.joined(len(responses), [flushed - e.arrived for e in entries])
        try:
            async with self.service.admission.slot(bucket.lane):  # one slot per joint judgment, not per caller
                result = await self.service.judge(joint, bucket.plan)
        except asyncio.CancelledError:
            for e in entries:
                e.future.cancel()
            raise
        except Exception as exc:  # every caller of the joint judgment sees its error
            for e in entries:
                if not e.future.done():
                    e.future.set_exception(exc)
            return
        offset = 0
        for e in entries:
            n = len(e.request.responses)
            if not e.future.done():
                e.future.set_result(own_share(result, range(offset, offset + n)))
            offset += n

    def _leave(self, bucket: _Bucket, entry: _Entry) -> None:
        if bucket.task is None:
            with contextlib.suppress(ValueError):
                bucket.entries.remove(entry)
            if not bucket.entries:
                if bucket.timer is not None:
                    bucket.timer.cancel()
                if self._open.get(bucket.key) is bucket:
                    del self._open[bucket.key]
        elif all(e.future.done() for e in bucket.entries) and not bucket.task.done():
            bucket.task.cancel()  # nobody waits any more: abort the engine requests
