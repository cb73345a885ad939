"""AReaL adapter: a picklable `reward_fn` that answers before AReaL's `AsyncRewardWrapper` gives up.

AReaL runs `reward_fn(prompt, completions, prompt_ids, completion_ids, **data)` in a process pool under
`AsyncRewardWrapper(reward_fn, timeout_seconds=15, max_retries=3)`: a call that takes longer is retried, and after
the last try the reward is a silent 0. `GRMRewardFn` sends each call with a deadline below the wrapper's timeout
(`X-GRM-Deadline-S`), so a slow judgment comes back as the server's fallback reward, flagged, in time."""

from __future__ import annotations

import logging
from typing import Any

from server.core.rollouts import strip_special_tokens
from server.integrations.client import GRMClient, RetryPolicy, unit

__all__ = ["GRMRewardFn"]

logger = logging.getLogger(__name__)


class GRMRewardFn:
    """`AsyncRewardWrapper(GRMRewardFn("http://grm:8000", areal_timeout_s=60, k=8), timeout_seconds=60)`.

    `areal_timeout_s` must be the wrapper's `timeout_seconds`; the server is asked to answer within
    `areal_timeout_s - margin_s` (at least half of it). The reward is the mean score mapped to 0..1 (`scale="raw"`:
    1..10). `fallbacks` counts the calls this process answered with the fallback reward. Pickled to AReaL's
    workers without its client, which each worker opens on first use."""

    def __init__(
        self,
        url: str,
        *,
        areal_timeout_s: float = 15.0,
        margin_s: float = 2.0,
        scale: str = "unit",
        api_key: str | None = None,
        group_size: int | None = None,
        **knobs: Any,
    ) -> None:
        if scale not in ("unit", "raw"):
            raise ValueError("scale must be 'unit' or 'raw'")
        if areal_timeout_s <= 0:
            raise ValueError("areal_timeout_s must be AReaL's AsyncRewardWrapper timeout_seconds (> 0)")
        self.url, self.scale, self.api_key, self.knobs = url, scale, api_key, knobs
        self.group_size = group_size  # AReaL's n_samples: the server judges a prompt's rollouts together
        self.areal_timeout_s = areal_timeout_s
        self.deadline_s = max(areal_timeout_s / 2, areal_timeout_s - margin_s)
        self.fallbacks = 0
        self._client: GRMClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def __call__(
        self, prompt: Any, completions: Any, prompt_ids: Any = None, completion_ids: Any = None, **data: Any
    ) -> float:
        if self._client is None:
            # one try: a retry cannot finish inside AReaL's timeout; AReaL retries the call itself
            self._client = GRMClient(
                self.url,
                api_key=self.api_key,
                timeout_s=self.areal_timeout_s,
                retry=RetryPolicy(tries=1),
                knobs=self.knobs,
                group_size=self.group_size,
            )
        # AReaL decodes the completion with its special tokens (the EOS marker): not part of the judged response
        response = strip_special_tokens(str(completions))
        reward = self._client.judge_reward(prompt, response, data.get("answer"), deadline_s=self.deadline_s)
        if not reward.valid:
            self.fallbacks += 1
            logger.warning("grm-server answered the fallback reward (no judgment within %.1f s)", self.deadline_s)
        return unit(reward.score) if self.scale == "unit" else reward.score
