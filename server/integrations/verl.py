"""verl adapter: an async `compute_score` for verl's reward loop; per-sample calls are joined by the server."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from server.integrations.client import AsyncGRMClient, unit

__all__ = ["compute_score"]

_PROMPT_KEYS = ("prompt", "question", "query", "problem")
_clients: dict[tuple[int, str, str | None, float, tuple[tuple[str, Any], ...]], AsyncGRMClient] = {}


def _client(url: str, api_key: str | None, timeout_s: float, knobs: dict[str, Any]) -> AsyncGRMClient:
    """One client (one connection pool) per event loop and configuration."""
    key = (id(asyncio.get_running_loop()), url, api_key, timeout_s, tuple(sorted(knobs.items())))
    if key not in _clients:
        _clients[key] = AsyncGRMClient(url, api_key=api_key, timeout_s=timeout_s, knobs=knobs)
    return _clients[key]


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
    **kwargs: Any,
) -> dict[str, float]:
    """Reward of one rollout: `{"score": 0..1, "grm_score": 1..10}`.

    The prompt comes from `extra_info[prompt_key]` (default: the first of prompt/question/query/problem), a
    string or a chat message list. `url` (or GRM_URL) and the knobs come from verl's
    `custom_reward_function.reward_kwargs`; other keyword arguments verl passes are ignored."""
    base = url or os.environ.get("GRM_URL")
    if not base:
        raise ValueError("set custom_reward_function.reward_kwargs.url (or GRM_URL) to the grm-server URL")
    info = extra_info or {}
    keys = (prompt_key,) if prompt_key else _PROMPT_KEYS
    prompt = next((info[key] for key in keys if info.get(key)), None)
    if prompt is None:
        raise ValueError(f"extra_info has none of {keys}: put the prompt there (verl data preprocessing)")
    knobs = {"k": k, "k_meta": k_meta, "max_tokens": max_tokens, "seed": seed}
    client = _client(base, api_key, timeout_s, {n: v for n, v in knobs.items() if v is not None})
    score = await client.reward(prompt, solution_str, ground_truth)
    return {"score": unit(score), "grm_score": score}
