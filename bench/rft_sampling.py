"""RFT sampling cost: `train rft`'s batched judging (one engine call per distinct order, n per order, box
completion) vs one engine call per sample, on the embedded engine; judgments/s and tokens per kept judgment."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine, table, write_json
from meta_rm.vllm_common import configure_cpu_environment
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.engines import build_prompt_builder
from server.core.generators.base import SamplingConfig
from server.core.generators.vllm_local import VLLMGenerator
from server.core.judging import JudgeService
from server.core.settings import Settings
from server.evaluation.data import EvalItem
from server.training.data import load_training_items
from server.training.reward import judgment_correct
from server.training.rft import SamplingOptions, judge_item
from voting import derive_seed, plan_orders

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "dev_sample.jsonl"


async def batched(service: JudgeService, items: list[EvalItem], options: SamplingOptions) -> dict[str, Any]:
    start = time.monotonic()
    records = [await judge_item(service, item, options) for item in items]
    wall = time.monotonic() - start
    done = [r for r in records if r is not None]
    plain = [s for r in done for s in r["samples"] if not s["hinted"]]
    tokens = sum(r["completion_tokens"] for r in done)
    return _row("rft (batched)", len(plain), sum(s["correct"] for s in plain), tokens, wall)


async def per_sample(service: JudgeService, items: list[EvalItem], options: SamplingOptions) -> dict[str, Any]:
    """The same orders and budget, each of the k samples its own engine call (n = 1, all k sent at once, so the
    engine batches them as it batches n), no box completion."""
    gen, settings = service.generator, service.settings
    start, judged, correct, tokens = time.monotonic(), 0, 0, 0
    for item in items:
        plan = service.plan(_request(item, options))
        regex = service.prompts.score_regex(len(item.responses), plan.max_tokens, gen.chars_per_token or 1.0)
        calls, orders = [], []
        for j, shown in enumerate(plan_orders(len(item.responses), plan.k, plan.seed, settings.judging.order_strategy)):
            prompt = service.prompts.build(item.conversation(), [item.responses[i] for i in shown.order])
            for c in range(shown.count):
                sampling = SamplingConfig(1, plan.temperature, plan.max_tokens, derive_seed(plan.seed, j, c), regex)
                calls.append(gen.generate(prompt, sampling, f"bench-{item.key}-{j}-{c}"))
                orders.append(shown.order)
        for out, order in zip(await asyncio.gather(*calls), orders, strict=True):
            judged += 1
            tokens += out.completion_tokens
            correct += judgment_correct(out.texts[0], order, item.label)
    return _row("one call per sample", judged, correct, tokens, time.monotonic() - start)


def _request(item: EvalItem, options: SamplingOptions) -> Any:
    from server.core.types import JudgeRequest

    return JudgeRequest(item.conversation(), item.responses, k=options.k, k_meta=0, max_tokens=options.max_tokens,
                        seed=item.seed)  # fmt: skip


def _row(mode: str, judged: int, correct: int, tokens: int, wall: float) -> dict[str, Any]:
    return {
        "mode": mode, "judgments": judged, "correct": correct, "judgments_per_s": judged / wall,
        "completion_tokens_per_kept": tokens / correct if correct else None, "wall_s": round(wall, 2),
    }  # fmt: skip


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = Settings().with_overrides({"generator.served_model_name": EMBEDDED_NAME})
    configure_cpu_environment(str(settings.cache_dir), 1)
    gen = VLLMGenerator(settings.generator, str(prepare_embedded_model(settings.cache_dir)), str(settings.cache_dir))
    await gen.start()
    try:
        service = JudgeService(gen, build_prompt_builder(settings), settings)
        items = load_training_items([args.data], seed=0, limit=args.items).items
        options = SamplingOptions(k=args.k, max_tokens=args.max_tokens, hint=False)
        await judge_item(service, items[0], options)  # warm the template prefix and the score regex
        return [await batched(service, items, options), await per_sample(service, items, options)]
    finally:
        await gen.close()


def _relative(value: Any) -> str:
    """Paths inside the repository as repository paths (results must not name one machine's folders)."""
    root = Path(__file__).resolve().parents[1]
    if isinstance(value, Path) and value.resolve().is_relative_to(root):
        return str(value.resolve().relative_to(root))
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "rft_sampling.json")
    args = parser.parse_args()
    info = machine()
    rows = asyncio.run(run(args))
    keys = ["mode", "judgments", "correct", "judgments_per_s", "completion_tokens_per_kept", "wall_s"]
    print(table(keys, [[r[k] for k in keys] for r in rows]))
    print(f"ratio (batched / per sample judgments/s): {rows[0]['judgments_per_s'] / rows[1]['judgments_per_s']:.2f}")
    payload = {
        "bench": "rft_sampling",
        "machine": info,
        "args": {k: _relative(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
