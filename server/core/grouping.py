"""Joint judging of per-sample reward traffic: rollouts of one prompt share one judgment, joined by arrival window
or, with a group size G (the trainer's samples per prompt), until G rollouts are in."""

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


def distinct(responses: Sequence[str]) -> tuple[tuple[str, ...], list[int]]:
    """The distinct texts of `responses` (first-seen order) and, per response, its position among them: a
    duplicate rollout is judged once and gets the reward of its text."""
    index: dict[str, int] = {}
    positions = [index.setdefault(r, len(index)) for r in responses]
    return tuple(index), positions


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


_Key = tuple[JudgeRequest, int | None]  # the join key and the group size


@dataclass(eq=False)
class _Group:
    """The rollouts of one prompt under a group size G: judged when G are in, or `max_wait_s` after the first."""

    size: int
    arrived: int = 0  # rollouts counted toward G (duplicates and those judged alone included)
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Bucket:
    key: _Key
    opened: float
    plan: Plan  # of the joint request of its entries (one that leaves only lowers what it needs)
    lane: Lane | None  # the admission lane of the caller that opened it
    entries: list[_Entry] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None

    @property
    def responses(self) -> list[str]:
        return [r for e in self.entries for r in e.request.responses]

    @property
    def size(self) -> int:  # distinct responses: what the judgment holds
        return len(set(self.responses))


class Joiner:
    """Joins requests with the same conversation and knobs into one judgment of at most `cap` distinct responses
    (a duplicate response is judged once; each of its callers gets its reward).

    Without a group size, a bucket is judged when it is full, when no request joined it for `window_s`, or
    `max_wait_s` after it opened. With a group size G (per call, else `group_size`), the window does not apply:
    the prompt's rollouts are judged as soon as G are in, in buckets of at most `cap` (a full one is judged at
    once, nothing more can join it), or `group_max_wait_s` after the first arrived, with what arrived. Each caller
    gets its own share. A caller that is cancelled leaves its bucket (before the judgment) or stops waiting
    (after); the judgment is aborted only when every caller of it has gone."""

    def __init__(
        self,
        service: JudgeService,
        *,
        cap: int,
        window_s: float,
        max_wait_s: float,
        group_size: int | None = None,
        group_max_wait_s: float | None = None,
        observer: JoinObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.cap, self.window_s, self.max_wait_s = cap, window_s, max_wait_s
        self.group_size = group_size
        self.group_max_wait_s = max_wait_s if group_max_wait_s is None else group_max_wait_s
        self.observer = observer
        self._clock = clock
        self._open: dict[_Key, _Bucket] = {}
        self._groups: dict[_Key, _Group] = {}
        self._running: set[asyncio.Task[None]] = set()

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    @property
    def open_groups(self) -> int:
        return len(self._groups)

    async def judge(self, req: JudgeRequest, lane: Lane | None = None, group_size: int | None = None) -> JudgeResult:
        """Judge `req`'s responses, jointly with other waiting requests for the same conversation and knobs.
        `group_size` (the caller's G) wins over the joiner's. Each request is planned once: alone when it opens
        a bucket, else as the joint request it makes. A judgment waits for its slot in `lane` (its call's place
        in the admission queue; for a joint one, the lane of the caller that opened it)."""
        size = group_size if group_size is not None else self.group_size
        key: _Key = (join_key(req), size)
        texts, positions = distinct(req.responses)
        if len(texts) >= self.cap:
            own = replace(req, responses=texts)
            plan = self.service.plan(own)  # a bad request fails alone
            self._count(key, size, len(req.responses))  # it counts toward its group: the rest may be judged now
            async with self.service.admission.slot(lane):
                result = await self.service.judge(own, plan)
            return own_share(result, positions) if len(texts) < len(req.responses) else result
        bucket = self._open.get(key)
        joint_plan = self._joint_plan(bucket, req) if bucket is not None else None
        if bucket is not None and joint_plan is None:
            self._flush(bucket)
            bucket = None
        now = self._clock()
        if bucket is None or joint_plan is None:
            plan = self.service.plan(replace(req, responses=texts))  # a bad request fails alone
            bucket = self._open[key] = _Bucket(key, now, plan, lane)
        else:
            bucket.plan = joint_plan
        entry = _Entry(req, now, asyncio.get_running_loop().create_future())
        bucket.entries.append(entry)
        if bucket.size >= self.cap:
            self._flush(bucket)
        elif size is None:
            self._arm(bucket, now)
        self._count(key, size, len(req.responses))
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._leave(bucket, entry)
            raise

    def _count(self, key: _Key, size: int | None, rollouts: int) -> None:
        """Count `rollouts` toward the group of `key` (opening it, with its max-wait timer); once G are in,
        its open bucket is judged and the group closes (a later rollout opens the next)."""
        if size is None:
            return
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(size)
            group.timer = asyncio.get_running_loop().call_later(self.group_max_wait_s, self._close, key, group)
        group.arrived += rollouts
        if group.arrived >= group.size:
            self._close(key, group)

    def _close(self, key: _Key, group: _Group) -> None:
        if group.timer is not None:
            group.timer.cancel()
        if self._groups.get(key) is group:
            del self._groups[key]
        bucket = self._open.get(key)
        if bucket is not None:
            self._flush(bucket)

    def _joint_plan(self, bucket: _Bucket, req: JudgeRequest) -> Plan | None:
        """The plan of `bucket` joined by `req`, or None when `req` cannot join: over the cap, or the joint
        request outside a limit (e.g. the max_tokens a judgment of that many responses needs)."""
        joint, _ = distinct(bucket.responses + list(req.responses))
        if len(joint) > self.cap:
            return None
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
        responses, positions = distinct(bucket.responses)
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
                e.future.set_result(own_share(result, positions[offset : offset + n]))
            offset += n

    def _leave(self, bucket: _Bucket, entry: _Entry) -> None:
        if bucket.task is None:
            group = self._groups.get(bucket.key)
            if group is not None and entry in bucket.entries:
                group.arrived -= len(entry.request.responses)  # a retry of it counts again
            with contextlib.suppress(ValueError):
                bucket.entries.remove(entry)
            if not bucket.entries:
                if bucket.timer is not None:
                    bucket.timer.cancel()
                if self._open.get(bucket.key) is bucket:
                    del self._open[bucket.key]
        elif all(e.future.done() for e in bucket.entries) and not bucket.task.done():
            bucket.task.cancel()  # nobody waits any more: abort the engine requests
