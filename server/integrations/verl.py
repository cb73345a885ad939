"""verl adapter: an async `compute_score` for verl's reward loop; per-sample calls are joined by the server."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from server.integrations.client import AsyncGRMClient, unit

__all__ = ["close_clients", "compute_score"]

_PROMPT_KEYS = ("prompt", "question", "query", "problem")
_ClientKey = tuple[int, str, str | None, float, tuple[tuple[str, Any], ...], int | None]
_clients: dict[_ClientKey, AsyncGRMClient] = {}


def _client(
    url: str,
    api_key: str | None,
    timeout_s: float,
    knobs: dict[str, Any],
    transport: httpx.AsyncBaseTransport | None,
) -> AsyncGRMClient:
    """One client (one connection pool) per event loop, configuration and transport."""
    loop = id(asyncio.get_running_loop())
    key = (loop, url, api_key, timeout_s, tuple(sorted(knobs.items())), id(transport) if transport else None)
    if key not in _clients:
        _clients[key] = AsyncGRMClient(url, api_key=api_key, timeout_s=timeout_s, knobs=knobs, transport=transport)
    return _clients[key]


async def close_clients() -> None:
    """Close the clients `compute_score` opened on the running event loop (at the end of a run, or a test)."""
    loop = id(asyncio.get_running_loop())
    for key in [key for key in _clients if key[0] == loop]:
        await _clients.pop(key).aclose()


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    *,
    url: str | None = None,
    prompt_key: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 300.0,
    k: int | None = None,
    k_meta: int | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Reward of one rollout: `{"score": 0..1, "grm_score": 1..10}`.

    The prompt comes from `extra_info[prompt_key]` (default: the first of prompt/question/query/problem), a
    string or a chat message list. `url` (or GRM_URL) and the knobs come from verl's
    `custom_reward_function.reward_kwargs`; other keyword arguments verl passes are ignored. `transport` (from
    Python only) goes to the client's `httpx.AsyncClient` as is, e.g. `httpx.ASGITransport(app=app)`."""
    base = url or os.environ.get("GRM_URL")
    if not base:
        raise ValueError("set custom_reward_function.reward_kwargs.url (or GRM_URL) to the grm-server URL")
    info = extra_info or {}
    keys = (prompt_key,) if prompt_key else _PROMPT_KEYS
    prompt = next((info[key] for key in keys if info.get(key)), None)
    if prompt is None:
        raise ValueError(f"extra_info has none of {keys}: put the prompt there (verl data preprocessing)")
    knobs = {"k": k, "k_meta": k_meta, "max_tokens": max_tokens, "seed": seed}
    client = _client(base, api_key, timeout_s, {n: v for n, v in knobs.items() if v is not None}, transport)
    score = await client.reward(prompt, solution_str, ground_truth)
    return {"score": unit(score), "grm_score": score}
