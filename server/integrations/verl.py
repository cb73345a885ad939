"""verl adapters (verl 0.9 / main at 1dda039): a reward-loop reward manager that reads the prompt from the batch,
and `compute_score` functions for datasets whose `extra_info` carries the prompt (async for verl's default `naive`
reward manager, sync for `reward_manager.name=remote`). Per-sample calls are joined by the server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import httpx

from server.integrations.client import AsyncGRMClient, GRMClient, Reward, unit

__all__ = ["GRMRewardManager", "close_clients", "compute_score", "compute_score_sync"]

_PROMPT_KEYS = ("prompt", "question", "query", "problem")
_KNOBS = ("k", "k_meta", "temperature", "max_tokens", "seed")
_ClientKey = tuple[int, str, str | None, float, tuple[tuple[str, Any], ...], int | None, int | None]
_clients: dict[_ClientKey, AsyncGRMClient] = {}
_sync_clients: dict[tuple[str, str | None, float, tuple[tuple[str, Any], ...], int | None], GRMClient] = {}

MANAGER_RECIPE = (
    "reward.reward_manager.source=importlib reward.reward_manager.name=GRMRewardManager "
    "reward.reward_manager.module.path=<path of server/integrations/verl.py> +reward.reward_kwargs.url=<grm-server URL>"
)


def _client(
    url: str,
    api_key: str | None,
    timeout_s: float,
    knobs: dict[str, Any],
    transport: httpx.AsyncBaseTransport | None,
    group_size: int | None = None,
) -> AsyncGRMClient:
    """One client (one connection pool) per event loop, configuration and transport."""
    loop = id(asyncio.get_running_loop())
    tport = id(transport) if transport else None
    key = (loop, url, api_key, timeout_s, tuple(sorted(knobs.items())), tport, group_size)
    if key not in _clients:
        _clients[key] = AsyncGRMClient(
            url, api_key=api_key, timeout_s=timeout_s, knobs=knobs, transport=transport, group_size=group_size
        )
    return _clients[key]


async def close_clients() -> None:
    """Close the clients `compute_score` and the manager opened on the running event loop (end of a run, a test)."""
    loop = id(asyncio.get_running_loop())
    for key in [key for key in _clients if key[0] == loop]:
        await _clients.pop(key).aclose()


def _url(url: str | None, where: str) -> str:
    base = url or os.environ.get("GRM_URL")
    if not base:
        raise ValueError(f"set {where} (or GRM_URL) to the grm-server URL, e.g. http://grm:8000")
    return base


def _prompt(extra_info: Mapping[str, Any] | None, prompt_key: str | None) -> Any:
    info = extra_info or {}
    keys = (prompt_key,) if prompt_key else _PROMPT_KEYS
    prompt = next((info[key] for key in keys if _given(info.get(key))), None)
    if prompt is None:
        raise ValueError(
            f"verl passes no prompt to compute_score and extra_info has none of {list(keys)} (it has "
            f"{sorted(info)}): use the reward manager that reads the prompt from the batch ({MANAGER_RECIPE}), or "
            "put the prompt in extra_info when preprocessing the data"
        )
    return list(prompt) if not isinstance(prompt, str) else prompt  # verl may hand a numpy array of messages


def _given(value: Any) -> bool:
    return value is not None and (not hasattr(value, "__len__") or len(value) > 0)


def _result(reward: Reward) -> dict[str, float]:
    return {"score": unit(reward.score), "grm_score": reward.score, "valid": 1.0 if reward.valid else 0.0}


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
    group_size: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Reward of one rollout: `{"score": 0..1, "grm_score": 1..10, "valid": 1 | 0}` (verl logs every key of the
    dict as a reward extra; `valid = 0` marks the server's fallback reward).

    The prompt comes from `extra_info[prompt_key]` (default: the first of prompt/question/query/problem), a
    string or a chat message list. `url` (or GRM_URL), the knobs and `group_size` (verl's
    `actor_rollout_ref.rollout.n`: the server judges a prompt's rollouts together once that many are in) come from verl's
    `reward.custom_reward_function.reward_kwargs`; other keyword arguments verl passes are ignored. `transport`
    (from Python only) goes to the client's `httpx.AsyncClient` as is, e.g. `httpx.ASGITransport(app=app)`."""
    base = _url(url, "+reward.custom_reward_function.reward_kwargs.url")
    prompt = _prompt(extra_info, prompt_key)
    knobs = {"k": k, "k_meta": k_meta, "max_tokens": max_tokens, "seed": seed}
    given = {n: v for n, v in knobs.items() if v is not None}
    client = _client(base, api_key, timeout_s, given, transport, group_size)
    return _result(await client.judge_reward(prompt, solution_str, ground_truth))


def compute_score_sync(
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
    group_size: int | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """`compute_score` as a plain function, for `reward.reward_manager.name=remote` (verl runs it in Ray worker
    processes and refuses async functions there); one blocking client per process and configuration."""
    base = _url(url, "+reward.custom_reward_function.reward_kwargs.url")
    prompt = _prompt(extra_info, prompt_key)
    knobs = {
        n: v for n, v in {"k": k, "k_meta": k_meta, "max_tokens": max_tokens, "seed": seed}.items() if v is not None
    }
    key = (base, api_key, timeout_s, tuple(sorted(knobs.items())), group_size)
    if key not in _sync_clients:
        _sync_clients[key] = GRMClient(
            base, api_key=api_key, timeout_s=timeout_s, knobs=knobs, group_size=int(group_size) if group_size else None
        )
    return _result(_sync_clients[key].judge_reward(prompt, solution_str, ground_truth))


class GRMRewardManager:
    """A verl reward-loop reward manager backed by grm-server; it has the prompt, which `compute_score` lacks.

    Selected with `reward.reward_manager.source=importlib`, `reward.reward_manager.name=GRMRewardManager` and
    `reward.reward_manager.module.path=<this file>`; configured by `+reward.reward_kwargs.url` (or GRM_URL) and
    `+reward.reward_kwargs.{k,k_meta,temperature,max_tokens,seed,timeout_s,api_key,group_size}`. verl builds it with
    `(config, tokenizer, compute_score, reward_router_address=..., reward_model_tokenizer=...)` in each reward
    worker and awaits `run_single(data)` per sample, as for its own `naive` manager. The prompt is the batch's
    `raw_prompt` chat (verl's `data.return_raw_chat`, on by default), else the decoded prompt tokens. A missing
    URL fails here, once, when verl starts the worker."""

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, **kwargs: Any) -> None:
        reward = config["reward"]
        options = dict(reward.get("reward_kwargs") or {})
        self.url = _url(options.get("url"), "+reward.reward_kwargs.url")
        self.api_key = options.get("api_key")
        self.timeout_s = float(options.get("timeout_s", 300.0))
        self.knobs = {name: options[name] for name in _KNOBS if options.get(name) is not None}
        # opt-in, not read from actor_rollout_ref.rollout.n: validation samples n = 1 and would wait the max wait
        self.group_size = int(options["group_size"]) if options.get("group_size") else None
        self.tokenizer = tokenizer

    async def run_single(self, data: Any) -> dict[str, Any]:
        """One sample of verl's batch -> `{"reward_score": 0..1, "reward_extra_info": {grm_score, valid}}`."""
        item = data[-1:][0]  # for multi-sequence outputs verl rewards the last sequence
        batch, extra = item.batch, item.non_tensor_batch
        prompt_ids, response_ids, mask = batch["prompts"], batch["responses"], batch["attention_mask"]
        prompt_length, response_length = prompt_ids.shape[-1], response_ids.shape[-1]
        valid_response = response_ids[: int(mask[-response_length:].sum())]
        response = await asyncio.to_thread(self.tokenizer.decode, valid_response, skip_special_tokens=True)
        raw = extra.get("raw_prompt")
        if raw is not None and len(raw):
            prompt: Any = [dict(m) for m in raw]
        else:  # prompts are left-padded
            valid_prompt = prompt_ids[prompt_length - int(mask[:prompt_length].sum()) :]
            prompt = await asyncio.to_thread(self.tokenizer.decode, valid_prompt, skip_special_tokens=True)
        label = (extra.get("reward_model") or {}).get("ground_truth")
        client = _client(self.url, self.api_key, self.timeout_s, self.knobs, None, self.group_size)
        result = _result(await client.judge_reward(prompt, response, label))
        return {"reward_score": result["score"], "reward_extra_info": result}
