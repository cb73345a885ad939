"""Engine supervision: notice a dead in-process engine, restart it with bounded retries and backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from meta_rm.errors import MetaRMError
from meta_rm.protocol import MetaRM, MetaRMInput
from server.core.errors import BackendUnavailableError, GRMError, from_meta_rm
from server.core.generators.base import Generation, Generator, Partial, SamplingConfig

if TYPE_CHECKING:
    from server.core.settings import SupervisionSettings

logger = logging.getLogger(__name__)


class EngineState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"  # restarts exhausted, or never started: the process cannot heal; /health says so
    CLOSED = "closed"


STATES = tuple(EngineState)
StateListener = Callable[[str, EngineState, bool], None]  # (engine, new state, restarted)


class Supervisor:
    """Owns the life of one engine (start/check/close callables); a watchdog task heals it in place."""

    def __init__(
        self,
        name: str,
        start: Callable[[], Awaitable[None]],
        check: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        settings: SupervisionSettings,
    ) -> None:
        self.name = name
        self._start, self._check, self._close = start, check, close
        self._settings = settings
        self.state = EngineState.STARTING
        self.reason: str | None = "engine is starting"
        self.restarts = 0  # successful restarts
        self.tries = 0  # restart tries, successful or not, over the life of the process
        self.retry_after = 1
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[StateListener] = []

    def listen(self, listener: StateListener) -> None:
        self._listeners.append(listener)
        listener(self.name, self.state, False)

    def _set(self, state: EngineState, reason: str | None, restarted: bool = False) -> None:
        self.state, self.reason = state, reason
        for listener in self._listeners:
            listener(self.name, state, restarted)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException as exc:
            self._set(EngineState.FAILED, f"engine failed to start: {exc}")
            raise
        self._set(EngineState.READY, None)
        self._task = asyncio.create_task(self._watch(), name=f"supervise-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set(EngineState.CLOSED, "engine closed")
        await self._close()

    def unavailable(self) -> BackendUnavailableError:
        """The error a request gets while the engine cannot serve; carries the Retry-After hint."""
        err = BackendUnavailableError(f"{self.name} engine {self.state.value}: {self.reason}")
        err.retry_after = self.retry_after
        return err

    def require_ready(self) -> None:
        if self.state is not EngineState.READY:
            raise self.unavailable()

    def suspect(self) -> None:
        """A request saw the engine fail as dead: check it now rather than at the next poll."""
        self._wake.set()

    async def _watch(self) -> None:
        interval = self._settings.check_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self._check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failed check of a started engine = it died
                if not await self._heal(str(exc) or type(exc).__name__):
                    return

    async def _heal(self, reason: str) -> bool:
        """Restart with exponential backoff; `max_restarts` bounds the tries over the life of the process,
        so an engine that keeps dying ends in FAILED and the orchestrator replaces the process."""
        s = self._settings
        logger.error("%s engine died (%s); %d restart tries left", self.name, reason, s.max_restarts - self.tries)
        backoff = 0
        while self.tries < s.max_restarts:
            self.tries += 1
            delay = min(s.backoff_initial_s * (2**backoff), s.backoff_max_s)
            backoff += 1
            self.retry_after = max(1, math.ceil(delay))
            self._set(EngineState.RESTARTING, f"engine died ({reason}); restart try {self.tries}/{s.max_restarts}")
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await self._close()
            try:
                await self._start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"restart failed: {exc}"
                logger.error("%s engine %s", self.name, reason)
                continue
            self.restarts += 1
            logger.warning("%s engine restarted (%d restarts so far)", self.name, self.restarts)
            self._set(EngineState.READY, None, restarted=True)
            return True
        self._set(EngineState.FAILED, f"engine died and all {s.max_restarts} restart tries are spent: {reason}")
        logger.critical("%s engine cannot be healed; /health now answers 503", self.name)
        return False


def _dead(exc: BaseException) -> bool:
    return isinstance(exc, BackendUnavailableError)


class SupervisedGenerator:
    """A Generator whose engine is restarted when it dies; requests meanwhile get 503 with Retry-After."""

    def __init__(self, inner: Generator, settings: SupervisionSettings) -> None:
        self.inner = inner
        self.supervisor = Supervisor("grm", inner.start, inner.check_ready, inner.close, settings)

    restartable = False  # supervised already

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def retried(self) -> int:
        return self.inner.retried

    async def start(self) -> None:
        await self.supervisor.start()

    @property
    def chars_per_token(self) -> float | None:
        return self.inner.chars_per_token

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        return await self._guard(self.inner.generate(prompt, sampling, request_id))

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        return await self._guard(self.inner.continue_judgments(prompt, partials, sampling, request_id))

    async def _guard(self, call: Coroutine[Any, Any, Generation]) -> Generation:
        """Run an engine call; an engine found dead turns into 503 with Retry-After and wakes the watchdog."""
        try:
            self.supervisor.require_ready()
        except GRMError:
            call.close()
            raise
        try:
            return await call
        except GRMError as exc:
            if not _dead(exc):
                raise
            self.supervisor.suspect()
            err = self.supervisor.unavailable()
            err.message = f"{exc.message} ({err.message})"
            raise err from exc

    async def check_ready(self) -> None:
        self.supervisor.require_ready()
        await self.inner.check_ready()

    async def close(self) -> None:
        await self.supervisor.close()


class SupervisedMetaRM:
    """A Meta RM whose in-process engine is restarted when it dies."""

    def __init__(self, inner: MetaRM, settings: SupervisionSettings) -> None:
        self.inner = inner
        self.supervisor = Supervisor("meta_rm", inner.start, self._check, inner.close, settings)

    async def _check(self) -> None:
        try:
            await self.inner.check_ready()
        except MetaRMError as exc:
            raise from_meta_rm(exc) from exc

    @property
    def name(self) -> str:
        return self.inner.name

    async def start(self) -> None:
        await self.supervisor.start()

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        self.supervisor.require_ready()
        try:
            return await self.inner.score(items)
        except MetaRMError as exc:
            if _dead(from_meta_rm(exc)):
                self.supervisor.suspect()
            raise

    async def check_ready(self) -> None:
        self.supervisor.require_ready()
        await self.inner.check_ready()

    async def close(self) -> None:
        await self.supervisor.close()
