"""`train grpo`: rule-based online RL with TRL's GRPOTrainer. Each prompt is a labelled item rendered with the
served template (responses in the item's seeded order, label remapped); the reward is the SPCT rule, +1 / -1."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.core.prompts import PromptBuilder, TemplateName, measure_chars_per_token
from server.evaluation.data import EvalItem
from server.training.reward import CORRECT, rule_reward
from server.training.structured import GrammarCache, RegexFor, structured_trainer_class
from server.training.trl_common import log_summary, lora_config, on_gpu, save_model_folder
from voting import parse_scores

LOGGED = ("reward", "reward_std", "rewards/spct_reward/mean", "spct/correct_share", "spct/unparseable_share",
          "completions/mean_length", "completions/clipped_ratio", "kl", "loss", "frac_reward_zero_std")  # fmt: skip


@dataclass(frozen=True, slots=True)
class GRPOOptions:
    out: Path
    model: str
    template: TemplateName
    num_generations: int = 4
    beta: float = 0.08
    max_steps: int = 100
    max_completion_length: int = 512
    lr: float = 1e-6
    temperature: float = 1.0
    batch_size: int | None = None
    lora_rank: int = 0
    lora_alpha: int = 32
    structured: bool = True
    seed: int = 0


def left_out_by_pass_rate(items: Sequence[EvalItem], stats_path: Path) -> tuple[list[EvalItem], Counter[str]]:
    """Items whose RFT pass rate is strictly between 0 and 1 (a group of all-equal rewards carries no signal:
    TRL has no dynamic sampling); items the RFT run did not judge are kept. Counts what was left out and why."""
    per_item: dict[str, Any] = json.loads(stats_path.read_text(encoding="utf-8")).get("per_item", {})
    kept, left = [], Counter[str]()
    for item in items:
        rate = (per_item.get(item.key) or {}).get("pass_rate")
        if rate is not None and rate <= 0:
            left["pass_rate_0"] += 1
        elif rate is not None and rate >= 1:
            left["pass_rate_1"] += 1
        else:
            kept.append(item)
    return kept, left


def prompt_rows(items: Sequence[EvalItem], template: TemplateName) -> list[dict[str, Any]]:
    """One conversational prompt per item, as the server sends it; `label` indexes the shown order (n = 1: the score)."""
    builder = PromptBuilder(template)
    return [
        {
            "prompt": [{"role": "user", "content": builder.build(item.conversation(), item.responses)}],
            "n": len(item.responses),
            "label": item.label,
            "item_id": item.key,
        }
        for item in items
    ]


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(str(m.get("content", "")) for m in completion)
    return str(completion)


def spct_reward(
    prompts: list[Any],
    completions: list[Any],
    n: list[int],
    label: list[int],
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> list[float | None]:
    """TRL reward function: the SPCT rule per completion; logs the correct and unparseable shares."""
    texts = [_text(c) for c in completions]
    rewards: list[float | None] = [rule_reward(t, k, lab) for t, k, lab in zip(texts, n, label, strict=True)]
    if log_metric is not None and texts:
        log_metric("spct/correct_share", sum(r == CORRECT for r in rewards) / len(rewards))
        unparsed = sum(parse_scores(t, k).scores is None for t, k in zip(texts, n, strict=True))
        log_metric("spct/unparseable_share", unparsed / len(texts))
    return rewards


def build_trainer(options: GRPOOptions, rows: list[dict[str, Any]], work_dir: str) -> Any:
    """GRPOTrainer with the paper's defaults (beta 0.08, group 4); vLLM colocate generation on a GPU, plain
    `generate` on the CPU; truncated completions masked out of the loss. With `lora_rank` the policy is a peft
    LoRA adapter and TRL's reference is the same model with the adapter disabled (no second copy). With
    `structured` every judgment is decoded under the served score regex (server/training/structured.py)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    gpu = on_gpu()
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    model = AutoModelForCausalLM.from_pretrained(options.model, dtype=torch.bfloat16 if gpu else torch.float32)
    regex_for = RegexFor(
        options.template, options.max_completion_length,
        measure_chars_per_token(lambda t: len(tokenizer.encode(t, add_special_tokens=False)), options.template),
    )  # fmt: skip
    vllm_regex = regex_for.union(r["n"] for r in rows) if gpu and options.structured else None
    args = GRPOConfig(
        output_dir=work_dir, max_steps=options.max_steps, learning_rate=options.lr, beta=options.beta,
        num_generations=options.num_generations, max_completion_length=options.max_completion_length,
        per_device_train_batch_size=options.batch_size or options.num_generations, temperature=options.temperature,
        mask_truncated_completions=True, logging_steps=1, save_strategy="no", report_to="none", seed=options.seed,
        use_cpu=not gpu, bf16=gpu, use_vllm=gpu, vllm_mode="colocate", gradient_checkpointing=False,
        vllm_structured_outputs_regex=vllm_regex,
    )  # fmt: skip
    peft_config = lora_config(options.lora_rank, options.lora_alpha, dropout=0.0)
    common: dict[str, Any] = {
        "model": model, "reward_funcs": [spct_reward], "args": args, "train_dataset": Dataset.from_list(rows),
        "processing_class": tokenizer, "peft_config": peft_config,
    }  # fmt: skip
    if not options.structured or gpu:
        return GRPOTrainer(**common)
    grammars = GrammarCache(tokenizer, model.config.vocab_size, regex_for)
    counts = {r["prompt"][0]["content"]: r["n"] for r in rows}
    return structured_trainer_class()(**common, counts_by_prompt=counts, grammars=grammars)


def per_step(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's per-step logs, the logged keys only (with the step and its wall time where TRL gives it)."""
    keep = (*LOGGED, "step", "step_time")
    return [{k: v for k, v in h.items() if k in keep} for h in history if "reward" in h]


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def train_grpo(options: GRPOOptions, items: Sequence[EvalItem], left_out: Counter[str] | None = None) -> dict[str, Any]:
    """Train on the items, save the model folder; what was run and TRL's logged metrics (first and last step)."""
    from transformers import AutoConfig

    if not items:
        raise ValueError("no item left to train on")
    started = time.monotonic()
    base_dtype = AutoConfig.from_pretrained(options.model).dtype
    rows = prompt_rows(items, options.template)
    with tempfile.TemporaryDirectory(prefix="grm-grpo-") as work:
        trainer = build_trainer(options, rows, work)
        result = trainer.train()
        model = trainer.model.merge_and_unload() if options.lora_rank > 0 else trainer.model
        info = {
            "kind": "grpo", "base": options.model, "template": options.template.value,
            "options": {k: str(v) for k, v in asdict(options).items()},
            "items": len(rows), "left_out": dict(left_out or {}), "steps": result.global_step,
            "log": log_summary(trainer.state.log_history, LOGGED), "time_s": round(time.monotonic() - started, 1),
            "per_step": per_step(trainer.state.log_history), "peak_rss_mb": peak_rss_mb(),
        }  # fmt: skip
        save_model_folder(model, trainer.processing_class, options.out, base_dtype, info)
    return info


def verl_rows(items: Sequence[EvalItem], template: TemplateName) -> list[dict[str, Any]]:
    """The same prompts in verl's RL data layout; its reward is `server.training.reward.compute_score`."""
    return [
        {
            "data_source": item.source,
            "prompt": row["prompt"],
            "ability": "reward_modeling",
            "reward_model": {"style": "rule", "ground_truth": json.dumps({"n": row["n"], "label": row["label"]})},
            "extra_info": {"item_id": item.key, "index": i},
        }
        for i, (item, row) in enumerate(zip(items, prompt_rows(items, template), strict=True))
    ]
