"""TRL adapter: `GRPOTrainer(reward_funcs=[GRMReward(url)])`; each prompt's completions are judged jointly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.core.content import TOOL_ROLES, turn_text
from server.integrations.client import GRMClient, group_key, unit

__all__ = ["GRMReward"]


def _completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """A conversational completion as one response: its turns in order, with the assistant's tool calls and the
    tools' answers (TRL's tool-calling rollouts append both to the completion)."""
    if isinstance(completion, str):
        return completion
    parts = []
    for m in completion:
        text = turn_text(m)
        parts.append(f"Tool result: {text}" if m.get("role") in TOOL_ROLES else text)
    return "\n\n".join(p for p in parts if p.strip())


class GRMReward:
    """A TRL reward function backed by grm-server.

    Called as `f(prompts, completions, **columns)`; returns one reward per completion, in order: the mean GRM
    score mapped to 0..1 (`scale="unit"`) or 1..10 (`scale="raw"`), None where the prompt's group could not be
    judged (TRL ignores None). Plain and conversational prompts and completions are accepted. `params` are
    client options (api_key, timeout_s, retry, batch_items, max_responses, and `transport`: an
    `httpx.BaseTransport` passed to httpx.Client as is) and judging knobs (k, k_meta, temperature, max_tokens,
    seed)."""

    _CLIENT_OPTIONS = ("api_key", "timeout_s", "retry", "batch_items", "max_responses", "transport")

    def __init__(self, url: str, *, name: str = "grm", scale: str = "unit", **params: Any) -> None:
        if scale not in ("unit", "raw"):
            raise ValueError("scale must be 'unit' or 'raw'")
        options = {k: params.pop(k) for k in self._CLIENT_OPTIONS if k in params}
        self.client = GRMClient(url, knobs=params, **options)
        self.scale = scale
        self.__name__ = name
        self.last_usage: dict[str, int] = {}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        order: dict[str, int] = {}
        groups: list[tuple[Any, list[str]]] = []
        where: list[tuple[int, int]] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            g = order.setdefault(group_key(prompt), len(groups))
            if g == len(groups):
                groups.append((prompt, []))
            where.append((g, len(groups[g][1])))
            groups[g][1].append(_completion_text(completion))
        results = self.client.score_groups(groups)
        self.last_usage = {}
        for r in results:
            for k, v in r.usage.items():
                self.last_usage[k] = self.last_usage.get(k, 0) + v
        out: list[float | None] = []
        for g, pos in where:
            result = results[g]
            if not result.ok:
                out.append(None)
            else:
                score = result.scores[pos]
                out.append(unit(score) if self.scale == "unit" else score)
        return out
