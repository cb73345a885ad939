"""A Python client of grm-server (sync and async over httpx): retries honouring Retry-After, batch splitting."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

__all__ = [
    "GROUP_KEY_HEADER",
    "GROUP_SIZE_HEADER",
    "AsyncGRMClient",
    "GRMClient",
    "GRMClientError",
    "GroupScore",
    "Reward",
    "Messages",
    "RetryPolicy",
    "content_text",
    "group_key",
    "to_messages",
    "unit",
]

GROUP_KEY_HEADER = "X-GRM-Group-Key"
"""Rollouts of one prompt carry the same value; a consistent-hashing balancer routes them to one replica."""
GROUP_SIZE_HEADER = "X-GRM-Group-Size"
"""The trainer's rollouts per prompt: the server judges a prompt's rollouts jointly once this many are in."""
DEADLINE_HEADER = "X-GRM-Deadline-S"
"""Seconds this call may wait; past them the server answers the fallback reward, flagged (copy of the server's)."""
VALID_HEADER = "X-GRM-Valid"
"""On /reward answers: "0" when the number is the fallback reward (copy of the server's)."""

Messages = list[dict[str, Any]]
T = TypeVar("T")
# An operation is written once as a generator: it yields requests and receives their responses; a sync and an
# async driver run it (so the two clients share every line of request building, splitting and parsing).
Op = Generator[httpx.Request, httpx.Response, T]

_RETRY_STATUS = frozenset({429, 502, 503, 504})


class GRMClientError(Exception):
    """The server refused the call (4xx), or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body


def unit(score: float) -> float:
    """A mean score 1..10 mapped to 0..1 (the server's `scores` of /get_reward). The client stays free of the
    server's packages, so this is a copy of `voting.unit_score`; a test pins the two equal."""
    return (score - 1.0) / 9.0


_TOOL_FIELDS = ("tool_calls", "function_call", "name", "tool_call_id")


def to_messages(prompt: str | Sequence[dict[str, Any]]) -> Messages:
    """A plain prompt or a conversation (OpenAI-style dicts; list contents flattened to their text parts; the
    tool fields of a turn, `tool_calls`, `function_call`, `name`, `tool_call_id`, passed on as they are)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    out = []
    for m in prompt:
        role = "system" if m["role"] == "developer" else str(m["role"])
        turn = {"role": role, "content": content_text(m.get("content"))}
        turn.update({name: m[name] for name in _TOOL_FIELDS if m.get(name) is not None})
        out.append(turn)
    return out


def content_text(content: Any) -> str:
    """The text of a message's `content` (a string, or its text content parts joined); a copy of
    `server.core.content.content_text`, kept here so that the client needs httpx alone (a test pins them equal)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return str(content)


def group_key(prompt: str | Sequence[dict[str, Any]]) -> str:
    """A stable key of a prompt: the value of GROUP_KEY_HEADER for its rollouts."""
    canonical = json.dumps(to_messages(prompt), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Tries per request; the delay doubles from `backoff_s` (with jitter) unless the server sends Retry-After."""

    tries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and (after := response.headers.get("retry-after")):
            try:
                return min(self.max_backoff_s, max(0.0, float(after)))
            except ValueError:
                pass
        return float(min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2))


@dataclass(frozen=True, slots=True)
class GroupScore:
    """One judged group: per response the mean score (1..10) and the voted sum; `error` when it was not judged."""

    scores: list[float] = field(default_factory=list)
    rewards: list[int] = field(default_factory=list)
    valid: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Reward:
    """One rollout's reward: the mean score 1..10, and whether a judgment gave it (False: the server's fallback)."""

    score: float
    valid: bool = True


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        batch_items: int = 64,
        max_responses: int = 32,
        knobs: dict[str, Any] | None = None,
        group_size: int | None = None,
    ) -> None:
        """`group_size`: the trainer's rollouts per prompt, sent with every `reward` call (GROUP_SIZE_HEADER) so
        that the server judges a prompt's rollouts together however far apart they finish."""
        if group_size is not None and group_size < 1:
            raise ValueError("group_size must be the rollouts per prompt (>= 1)")
        self.base_url = base_url.rstrip("/")
        self.group_size = group_size
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout_s)
        self.retry = retry or RetryPolicy()
        self.batch_items, self.max_responses = batch_items, max_responses
        self.knobs = {k: v for k, v in (knobs or {}).items() if v is not None}

    def _request(
        self, path: str, body: dict[str, Any], key: str | None = None, deadline_s: float | None = None
    ) -> httpx.Request:
        headers = {**self.headers, **({GROUP_KEY_HEADER: key} if key else {})}
        if deadline_s is not None:
            headers[DEADLINE_HEADER] = f"{deadline_s:g}"
        return httpx.Request("POST", f"{self.base_url}{path}", json={**self.knobs, **body}, headers=headers)

    def _score_groups(
        self, groups: Sequence[tuple[str | Sequence[dict[str, Any]], Sequence[str]]]
    ) -> Op[list[GroupScore]]:
        """Each (prompt, responses) group judged jointly via /score/batch; big groups and batches are split."""
        items: list[tuple[int, dict[str, Any]]] = []
        for g, (prompt, responses) in enumerate(groups):
            messages = to_messages(prompt)
            for start in range(0, len(responses), self.max_responses):
                chunk = list(responses[start : start + self.max_responses])
                items.append((g, {"messages": messages, "responses": chunk}))
        parts: list[list[GroupScore]] = [[] for _ in groups]
        for start in range(0, len(items), self.batch_items):
            batch = items[start : start + self.batch_items]
            key = group_key(groups[batch[0][0]][0])
            response = yield self._request("/score/batch", {"items": [body for _, body in batch]}, key)
            for (g, _), result in zip(batch, response.json()["results"], strict=True):
                parts[g].append(_group_score(result))
        return [_merge(p) for p in parts]

    def _reward(
        self, prompt: str | Sequence[dict[str, Any]], response: str, label: Any, deadline_s: float | None
    ) -> Op[Reward]:
        """One rollout via slime's /reward (joined server-side with the other rollouts of its prompt)."""
        body = {"prompt": prompt if isinstance(prompt, str) else to_messages(prompt), "response": response}
        request = self._request("/reward", {**body, "label": label}, group_key(prompt), deadline_s)
        if self.group_size is not None:
            request.headers[GROUP_SIZE_HEADER] = str(self.group_size)
        answer = yield request
        return Reward(float(answer.json()), answer.headers.get(VALID_HEADER, "1") != "0")

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body["error"]["message"]
            except (ValueError, KeyError, TypeError):
                body, message = response.text, response.text[:200]
            raise GRMClientError(f"{response.status_code}: {message}", response.status_code, body)
        return response


class GRMClient(_Base):
    """Blocking client; use as a context manager or call close(). `transport` goes to `httpx.Client` as is
    (e.g. `httpx.MockTransport` in tests, or a transport with its own retries, proxy or TLS set-up)."""

    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None, **kw: Any) -> None:
        super().__init__(base_url, **kw)
        self._http = httpx.Client(timeout=self.timeout, transport=transport)

    def _send(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retry.tries):
            try:
                response = self._http.send(request)
            except httpx.TransportError:
                if attempt + 1 == self.retry.tries:
                    raise
                time.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code not in _RETRY_STATUS or attempt + 1 == self.retry.tries:
                return self._check(response)
            time.sleep(self.retry.delay(attempt, response))
        raise AssertionError("unreachable")

    def _drive(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(self._send(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def score_groups(self, groups: Sequence[tuple[str | Sequence[dict[str, Any]], Sequence[str]]]) -> list[GroupScore]:
        return self._drive(self._score_groups(groups))

    def reward(self, prompt: str | Sequence[dict[str, Any]], response: str, label: Any = None) -> float:
        return self._drive(self._reward(prompt, response, label, None)).score

    def judge_reward(
        self,
        prompt: str | Sequence[dict[str, Any]],
        response: str,
        label: Any = None,
        *,
        deadline_s: float | None = None,
    ) -> Reward:
        """`reward` with its validity; `deadline_s`: the server answers the (flagged) fallback after that long."""
        return self._drive(self._reward(prompt, response, label, deadline_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GRMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGRMClient(_Base):
    """asyncio client; use as an async context manager or call aclose(). `transport` goes to
    `httpx.AsyncClient` as is (`httpx.MockTransport`, `httpx.ASGITransport(app=...)` for an app in-process)."""

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **kw: Any) -> None:
        super().__init__(base_url, **kw)
        self._http = httpx.AsyncClient(timeout=self.timeout, transport=transport)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retry.tries):
            try:
                response = await self._http.send(request)
            except httpx.TransportError:
                if attempt + 1 == self.retry.tries:
                    raise
                await asyncio.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code not in _RETRY_STATUS or attempt + 1 == self.retry.tries:
                return self._check(response)
            await asyncio.sleep(self.retry.delay(attempt, response))
        raise AssertionError("unreachable")

    async def _drive(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(await self._send(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def score_groups(
        self, groups: Sequence[tuple[str | Sequence[dict[str, Any]], Sequence[str]]]
    ) -> list[GroupScore]:
        return await self._drive(self._score_groups(groups))

    async def reward(self, prompt: str | Sequence[dict[str, Any]], response: str, label: Any = None) -> float:
        return (await self._drive(self._reward(prompt, response, label, None))).score

    async def judge_reward(
        self,
        prompt: str | Sequence[dict[str, Any]],
        response: str,
        label: Any = None,
        *,
        deadline_s: float | None = None,
    ) -> Reward:
        """`reward` with its validity; `deadline_s`: the server answers the (flagged) fallback after that long."""
        return await self._drive(self._reward(prompt, response, label, deadline_s))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGRMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _group_score(result: dict[str, Any]) -> GroupScore:
    if "error" in result:
        return GroupScore(error=str(result["error"].get("message")))
    return GroupScore(
        scores=[float(s) for s in result["scores"]],
        rewards=[int(r) for r in result["rewards"]],
        valid=int(result["valid"]),
        usage={k: int(v) for k, v in result.get("usage", {}).items()},
    )


def _merge(parts: Iterable[GroupScore]) -> GroupScore:
    parts = list(parts)
    errors = [p.error for p in parts if p.error]
    if errors:
        return GroupScore(error=errors[0])
    usage: dict[str, int] = {}
    for p in parts:
        for k, v in p.usage.items():
            usage[k] = usage.get(k, 0) + v
    return GroupScore(
        scores=[s for p in parts for s in p.scores],
        rewards=[r for p in parts for r in p.rewards],
        valid=min((p.valid for p in parts), default=0),
        usage=usage,
    )
