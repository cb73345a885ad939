"""Each trainer's own reward-calling code against a real uvicorn server on a scripted engine: OpenRLHF 0.11.2's HTTP
client, AReaL 1.0.4's AsyncRewardWrapper, verl 0.9.1's config and reward-function resolution (from their wheels,
tests/trainer_code.py); slime (not on PyPI: its call shapes as read at 624b824)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from argparse import Namespace
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from server.core.settings import Settings
from server.integrations import slime
from server.integrations import verl as grm_verl
from server.integrations.areal import GRMRewardFn
from server.integrations.client import unit
from server.integrations.trl import GRMReward
from tests.browser import ThreadServer
from tests.conftest import ROOT, cache_dir
from tests.fakes import shown_responses
from tests.trainer_code import VERSIONS, installed, load, source

CHATML = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
)
TOOL_CHAT: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 2 * 3?"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "mul", "arguments": {"a": 2, "b": 3}}}]},
    {"role": "tool", "name": "mul", "content": "6"},
    {"role": "user", "content": "And so?"},
]


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    with ThreadServer(Settings().with_overrides({"judging.k": 2, "meta_rm.backend": "none"})) as running:
        yield running


def judged_prompts(server: ThreadServer) -> set[str]:
    return {call[0] for call in server.generator.calls}


def test_openrlhf_own_client_gets_cut_prompts_judged_jointly(server: ThreadServer) -> None:
    agent = load("openrlhf.utils.agent")
    cli = source("openrlhf", "cli/train_ppo_ray.py")
    assert '"--reward.remote_url"' in cli  # the flag docs/integrations.md names
    code = source("openrlhf", "utils/agent.py")
    assert "ClientTimeout(total=180)" in code and "try_max_times=5" in code  # the timeouts the docs size for
    executor = agent.SingleTurnAgentExecutor(f"{server.url}/get_reward")
    rollouts = ["Red.", "Blue is one.", "Seven.", "Green!"]
    # OpenRLHF keeps the prompt's last tokens when it is too long, and decodes with the special tokens left in
    queries = [CHATML[30:] + r + "<|im_end|>" for r in rollouts]

    async def main() -> list[Any]:
        calls = [executor._fetch_rewards_via_http([q], [CHATML], [None]) for q in queries]  # one rollout a call
        return list(await asyncio.gather(*calls))

    infos = [result[0] for result in asyncio.run(main())]
    assert [info["rewards"] for info in infos] == [[4.0], [10.0], [6.0], [6.0]]  # scored by response length
    assert all(info["extra_logs"]["valid"] == [1.0] for info in infos)
    shown = sorted(r for prompt in judged_prompts(server) for r in shown_responses(prompt))
    assert shown == sorted(rollouts * 2)  # k = 2 judgments of each; no special token left in a response
    assert len(judged_prompts(server)) < 2 * len(rollouts)  # joined: fewer judgment prompts than per-rollout ones


def test_trl_prompts_and_completions_with_tool_turns_are_judged(server: ThreadServer) -> None:
    """TRL's message shapes (trl f2cd577): dict `arguments` in tool calls, `{"role": "tool", "name", "content"}`
    answers, and tool-calling completions that append the calls and the answers. Before, the whole group was None."""
    call = {"type": "function", "function": {"name": "multiply", "arguments": {"a": 2, "b": 3}}}
    prompt = [
        {"role": "user", "content": "What is 2 * 3?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "multiply", "content": "6"},
    ]
    completions = [
        [{"role": "assistant", "content": "6."}],
        [{"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "name": "multiply", "content": "6"},
         {"role": "assistant", "content": "It is 6."}],
    ]  # fmt: skip
    rewards = GRMReward(server.url, k=1, scale="raw")([prompt, prompt], completions)
    assert rewards[0] == 2.0 and rewards[1] == 10.0  # scored by length: the second is shown whole
    (judged,) = judged_prompts(server)
    assert 'Tool call: multiply({"a": 2, "b": 3})' in judged and "Tool: [multiply] 6" in judged
    assert "Tool result: [multiply] 6" in judged  # the tool's answer inside the second completion


@dataclass
class Sample:
    """The fields of slime's `slime.utils.types.Sample` that a reward function reads (slime 624b824)."""

    prompt: str | list[dict[str, Any]]
    response: str
    label: str | None = None


def test_slime_custom_rm_takes_a_sample_and_a_group(server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """`async_rm` calls `f(args, sample)`; under --group-rm `batched_async_rm` calls `f(args, samples)`."""
    monkeypatch.delenv("GRM_URL", raising=False)
    args = Namespace(rm_url=server.url, group_rm=True)

    async def main() -> tuple[Any, Any]:
        try:
            one = await slime.grm_rm(args, Sample(TOOL_CHAT, "abc", "6"))
            group = await slime.grm_rm(args, [Sample(TOOL_CHAT, "a"), Sample("Q?", "bb"), Sample(TOOL_CHAT, "ccc")])
            return one, group
        finally:
            await slime.close_clients()

    one, group = asyncio.run(main())
    assert one == 3.0 and group == [1.0, 2.0, 3.0]
    assert sum(1 for p in judged_prompts(server) if "Tool: [mul] 6" in p and "Tool call: mul(" in p) >= 2
    with pytest.raises(ValueError, match="--rm-url"):
        asyncio.run(slime.grm_rm(Namespace(rm_url=None), Sample("q", "r")))


def test_areal_wrapper_gets_the_flagged_fallback_before_its_own_timeout(server: ThreadServer) -> None:
    """AReaL turns a timeout into a silent 0 after its retries; the adapter's deadline makes the server answer
    the fallback first."""
    reward_api = load("areal.api.reward_api", stubs={"areal.utils.logging": {"getLogger": logging.getLogger}})
    fn = GRMRewardFn(server.url, areal_timeout_s=4.0, margin_s=2.0, k=1)
    wrapper = reward_api.AsyncRewardWrapper(fn, timeout_seconds=4.0, max_workers=1, max_retries=0)
    server.generator.delay_s = 30.0  # a judgment far slower than AReaL waits
    assert asyncio.run(wrapper("Say hi.", "Hello<|im_end|>", [1], [2], answer=None)) == pytest.approx(unit(5.5))
    server.generator.delay_s = 0.0
    assert asyncio.run(wrapper("Say hi.", "Hello<|im_end|>", [1], [2], answer=None)) == pytest.approx(unit(5.0))
    assert fn.deadline_s == 2.0 and GRMRewardFn("u", areal_timeout_s=15).deadline_s == 13.0


# verl


def documented_overrides(url: str) -> list[list[str]]:
    """The `key=value` overrides of each `python -m verl.trainer.main_ppo` command in docs/integrations.md."""
    text = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(python -m verl\.trainer\.main_ppo.*?)```", text, re.DOTALL)
    return [[t.replace("http://grm:8000", url) for t in b.split() if "=" in t] for b in blocks]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(installed("verl") / "trainer" / "config"), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def verl_reward() -> Any:
    """verl's own `verl.trainer.ppo.reward` (reward-function and reward-manager resolution); its imports of the
    training stack stubbed."""
    return load(
        "verl.trainer.ppo.reward",
        stubs={"verl": {"DataProto": object}, "verl.utils.reward_score": {"get_default_compute_score": lambda n: None}},
    )


@dataclass
class Item:
    """A one-sample slice of verl's DataProto, as reward managers read it (`batch`, `non_tensor_batch`)."""

    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, Any]


def item(tokenizer: Any, prompt: str, response: str, raw_prompt: list[dict[str, Any]] | None) -> list[Item]:
    pad = tokenizer.pad_token_id or 0
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = [*tokenizer(response, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    prompts, responses = [pad] * 3 + p, r + [pad] * 2  # left-padded prompt, right-padded response
    mask = [0] * 3 + [1] * (len(p) + len(r)) + [0] * 2
    extra: dict[str, Any] = {"data_source": "d", "reward_model": {"ground_truth": "6"}, "extra_info": {"index": 0}}
    if raw_prompt is not None:
        extra["raw_prompt"] = raw_prompt
    batch = {
        "prompts": torch.tensor(prompts),
        "responses": torch.tensor(responses),
        "attention_mask": torch.tensor(mask),
    }
    return [Item(batch, extra)]


def test_verl_documented_overrides_compose_and_resolve_to_the_adapters(server: ThreadServer) -> None:
    from transformers import AutoTokenizer

    from server.core.embedded import prepare_embedded_model

    reward = verl_reward()
    manager_recipe, score_recipe, remote_recipe = documented_overrides(server.url)
    # the reward manager: verl resolves it from the config, builds it as its reward workers do, awaits run_single
    cfg = compose(manager_recipe)
    assert reward.get_custom_reward_fn(cfg) is None
    manager = reward.resolve_reward_manager_cls(cfg)(
        config=cfg, tokenizer=(tok := AutoTokenizer.from_pretrained(prepare_embedded_model(cache_dir()))),
        compute_score=None, reward_router_address=None, reward_model_tokenizer=None,
    )  # fmt: skip

    async def run() -> list[dict[str, Any]]:
        try:
            return [
                await manager.run_single(item(tok, "What is 2 * 3?", "six", TOOL_CHAT)),
                await manager.run_single(item(tok, "Name a colour.", "Red", None)),
            ]
        finally:
            await grm_verl.close_clients()

    with_chat, decoded = asyncio.run(run())
    assert with_chat == {
        "reward_score": unit(3.0),
        "reward_extra_info": {"score": unit(3.0), "grm_score": 3.0, "valid": 1.0},
    }
    assert decoded["reward_extra_info"]["grm_score"] == 3.0  # "Red": the EOS token was not part of the response
    prompts = judged_prompts(server)
    assert any("Tool: [mul] 6" in p for p in prompts) and any("Name a colour." in p for p in prompts)
    # compute_score (async, verl's naive manager) and compute_score_sync (the remote manager's Ray workers)
    for recipe, is_async in ((score_recipe, True), (remote_recipe, False)):
        fn = reward.get_custom_reward_fn(compose(recipe))
        assert inspect.iscoroutinefunction(fn.func) == is_async
        call = {"data_source": "d", "solution_str": "abcd", "ground_truth": "6", "extra_info": {"question": "Q?"}}
        out = asyncio.run(_close_after(fn(**call))) if is_async else fn(**call)
        assert out == {"score": unit(4.0), "grm_score": 4.0, "valid": 1.0}
        with pytest.raises(ValueError, match="reward_manager.source=importlib"):  # verl's own extra_info: no prompt
            bad = {**call, "extra_info": {"split": "train", "index": 3}}
            asyncio.run(_close_after(fn(**bad))) if is_async else fn(**bad)


async def _close_after(work: Any) -> Any:
    try:
        return await work
    finally:
        await grm_verl.close_clients()


def test_verl_keys_of_the_old_docs_do_not_compose_or_are_ignored(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="use_reward_loop"):
        compose(["reward_model.use_reward_loop=True"])  # removed in verl 67dc84b
    legacy = compose(["custom_reward_function.path=pkg://server.integrations.verl", "custom_reward_function.name=x"])
    assert verl_reward().get_custom_reward_fn(legacy) is None  # main_ppo no longer migrates them: silently unused
    assert "migrate_legacy_reward_impl" not in source("verl", "trainer/main_ppo.py")
    with pytest.raises(ValueError, match=r"\+reward.reward_kwargs.url"):
        grm_verl.GRMRewardManager(compose([]), tokenizer=None)  # no URL: fails once, when verl builds it


def test_the_makefile_installs_the_versions_these_tests_name() -> None:
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("TRAINER_WHEELS"))
    assert dict(re.findall(r'"([\w-]+)==([\w.]+)"', line)) == VERSIONS
