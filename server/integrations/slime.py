"""slime adapter: `--custom-rm-path server.integrations.slime.grm_rm` takes both of slime's call shapes.

slime calls a custom reward function as `await f(args, sample)` per sample, and, under `--group-rm`, as
`await f(args, samples)` with the prompt's whole group (slime.rollout.rm_hub, `async_rm` / `batched_async_rm`).
One sample goes to `/reward` (the server joins it with the other rollouts of its prompt); a group goes to
`/score/batch` as one joint judgment per prompt. Rewards are mean scores 1..10, as slime's `remote_rm` gets them;
a group that could not be judged gets the fallback reward."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from server.integrations.client import AsyncGRMClient, group_key

__all__ = ["close_clients", "grm_rm"]

logger = logging.getLogger(__name__)
_clients: dict[tuple[int, str, str, int | None], AsyncGRMClient] = {}


def _settings(args: Any) -> tuple[str, dict[str, Any]]:
    url = os.environ.get("GRM_URL") or getattr(args, "rm_url", None)
    if not url:
        raise ValueError("set --rm-url (or GRM_URL) to the grm-server URL, e.g. http://grm:8000")
    knobs = json.loads(os.environ.get("GRM_KNOBS", "{}"))  # e.g. GRM_KNOBS='{"k": 8, "max_tokens": 1024}'
    if not isinstance(knobs, dict):
        raise ValueError('GRM_KNOBS must be a JSON object, e.g. {"k": 8}')
    return str(url).rstrip("/"), knobs


def _group_size(args: Any) -> int | None:
    """The rollouts per prompt: GRM_GROUP_SIZE, else slime's `--n-samples-per-prompt`."""
    value = os.environ.get("GRM_GROUP_SIZE") or getattr(args, "n_samples_per_prompt", None)
    return int(value) if isinstance(value, int | str) and value else None


def _client(url: str, knobs: dict[str, Any], group_size: int | None = None) -> AsyncGRMClient:
    key = (id(asyncio.get_running_loop()), url, json.dumps(knobs, sort_keys=True), group_size)
    if key not in _clients:
        timeout_s = float(os.environ.get("GRM_TIMEOUT_S", "600"))
        _clients[key] = AsyncGRMClient(
            url, timeout_s=timeout_s, knobs=knobs, api_key=os.environ.get("GRM_API_KEY"), group_size=group_size
        )
    return _clients[key]


async def close_clients() -> None:
    """Close the clients opened on the running event loop (at the end of a run, or a test)."""
    loop = id(asyncio.get_running_loop())
    for key in [key for key in _clients if key[0] == loop]:
        await _clients.pop(key).aclose()


async def grm_rm(args: Any, sample: Any, **kwargs: Any) -> float | list[float]:
    """slime's custom reward: one `Sample` -> its reward; a list of samples (`--group-rm`) -> one reward each,
    in order. Reads `sample.prompt` (a string or chat messages, tool turns included), `sample.response` and
    `sample.label`; the URL from `--rm-url` (or GRM_URL), judging knobs from GRM_KNOBS (JSON), the group size
    (rollouts per prompt, sent so the server judges them together) from GRM_GROUP_SIZE or `--n-samples-per-prompt`."""
    url, knobs = _settings(args)
    client = _client(url, knobs, _group_size(args) if not isinstance(sample, Sequence) else None)
    if not isinstance(sample, Sequence):
        return await client.reward(sample.prompt, sample.response, sample.label)
    samples = list(sample)
    order: dict[str, int] = {}
    groups: list[tuple[Any, list[str]]] = []
    where: list[tuple[int, int]] = []
    for s in samples:
        g = order.setdefault(group_key(s.prompt), len(groups))
        if g == len(groups):
            groups.append((s.prompt, []))
        where.append((g, len(groups[g][1])))
        groups[g][1].append(s.response)
    results = await client.score_groups(groups)
    fallback = float(os.environ.get("GRM_FALLBACK", "5.5"))
    for result in results:
        if not result.ok:
            logger.warning("grm-server could not judge a group (fallback reward %s): %s", fallback, result.error)
    return [results[g].scores[pos] if results[g].ok else fallback for g, pos in where]
