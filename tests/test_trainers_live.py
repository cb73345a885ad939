"""Real trainers' call shapes against a live grm-server: TRL's GRPOTrainer (embedded SmolLM2 policy, CPU),
OpenRLHF (one rollout per /get_reward request, concurrently, httpx) and verl (concurrent compute_score calls)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.integrations import verl
from server.integrations.trl import GRMReward
from tests.conftest import cache_dir

pytestmark = pytest.mark.live


def join_stats(url: str) -> tuple[float, float]:
    """(joint judgments, responses in them) so far, from the live server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "grm_reward_join_size"]
    values = {s.name: s.value for s in family.samples if s.name.endswith(("_count", "_sum"))}
    return values["grm_reward_join_size_count"], values["grm_reward_join_size_sum"]


def test_openrlhf_per_sample_requests_are_judged_jointly(live_url: str) -> None:
    prompt = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    rollouts = ["Red.", "Blue is a colour.", "Seven.", "Green."]
    before = join_stats(live_url)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=180) as client:  # OpenRLHF: one rollout per request, concurrently

            async def one(text: str) -> httpx.Response:
                body = {"query": [prompt + text], "prompts": [prompt], "labels": [None], "k": 2, "max_tokens": 160}
                return await client.post(f"{live_url}/get_reward", json=body)

            return await asyncio.gather(*(one(t) for t in rollouts))

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert all(len(b["rewards"]) == 1 and 1.0 <= b["rewards"][0] <= 10.0 for b in bodies)
    assert all(b["extra_logs"]["valid"] == [1.0] for b in bodies)
    count, size = (a - b for a, b in zip(join_stats(live_url), before, strict=True))
    assert size == len(rollouts) and count < len(rollouts)  # fewer judgments than rollouts: some were joined


def test_verl_concurrent_compute_score_calls_are_judged_jointly(live_url: str) -> None:
    before = join_stats(live_url)
    solutions = ["The answer is 4.", "2 + 2 = 4", "5", "It is four."]

    async def main() -> list[dict[str, float]]:
        calls = [
            verl.compute_score("arith", s, "4", {"question": "What is 2 + 2?"}, url=live_url, k=2, max_tokens=160)
            for s in solutions
        ]
        try:
            return await asyncio.gather(*calls)
        finally:
            await verl.close_clients()

    results = asyncio.run(main())
    assert all(0.0 <= r["score"] <= 1.0 and r["score"] == pytest.approx((r["grm_score"] - 1) / 9) for r in results)
    count, size = (a - b for a, b in zip(join_stats(live_url), before, strict=True))
    assert size == len(solutions) and count < len(solutions)


class Recording(GRMReward):
    """GRMReward that remembers what it returned, to compare with what the trainer logged."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.returned: list[list[float | None]] = []

    def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float | None]:
        out = super().__call__(prompts, completions, **columns)
        self.returned.append(out)
        return out


def test_trl_grpo_trainer_trains_on_grm_rewards(live_url: str, tmp_path: Any) -> None:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from server.core.embedded import prepare_embedded_model

    policy = str(prepare_embedded_model(cache_dir()))
    prompts = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "Say hi."}]]
    dataset = datasets.Dataset.from_dict({"prompt": prompts * 2})
    reward = Recording(live_url, k=1, max_tokens=128, seed=1)
    config = trl.GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-6,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[reward], args=config, train_dataset=dataset)
    trainer.train()
    logged = [h["rewards/grm/mean"] for h in trainer.state.log_history if "rewards/grm/mean" in h]
    assert len(reward.returned) == 1 and len(logged) == 1
    for values, mean in zip(reward.returned, logged, strict=True):
        assert len(values) == 2 and all(v is not None and 0.0 <= v <= 1.0 for v in values)
        assert mean == pytest.approx(sum(v for v in values if v is not None) / len(values), abs=1e-5)
    assert reward.last_usage["engine_calls"] >= 1  # the scores came from the server's judgments
    assert not any(math.isnan(m) for m in logged)
