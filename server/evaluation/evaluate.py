"""One evaluation end to end: select items, judge the missing ones, write results.json and the plot."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.evaluation.benchmarks.official import official_scores
from server.evaluation.data import select_items
from server.evaluation.plot import plot_accuracy
from server.evaluation.report import ReportSpec, build_results
from server.evaluation.runner import ITEMS_FILE, RunSpec, run_items
from server.evaluation.scorers import Scorer
from server.evaluation.sweep import HALF
from voting.orders import OrderStrategy

RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy_vs_k.png"


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """What to evaluate and how; `k_meta=None` means the paper's default (k/2) when a Meta RM exists."""

    data: tuple[Path, ...]
    out: Path
    ks: tuple[int, ...] = (1, 2, 4, 8)
    limit: int | None = None
    seed: int = 0
    k_meta: tuple[str | int, ...] | None = None
    temperature: float = 0.5
    max_tokens: int | None = None
    max_chars: int | None = None
    concurrency: int = 4
    greedy: bool = True
    order_strategy: OrderStrategy = OrderStrategy.ROTATE
    resamples: int = 1000
    progress: bool = True
    data_format: str | None = None


def parse_ks(text: str) -> tuple[int, ...]:
    """ "1,2,4,8" -> (1, 2, 4, 8): sorted, unique, each >= 1."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise ValueError(f"k values must be integers separated by commas, got {text!r}") from exc
    if not ks or ks[0] < 1:
        raise ValueError(f"k values must be >= 1, got {text!r}")
    return tuple(ks)


def parse_k_meta(text: str) -> tuple[str | int, ...]:
    """ "half,1,4" -> ("half", 1, 4); "0" or "none" -> () (no MetaRM rows)."""
    specs: list[str | int] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part in ("0", "none"):
            return ()
        if part == HALF:
            specs.append(HALF)
        elif part.isdigit() and int(part) >= 1:
            specs.append(int(part))
        else:
            raise ValueError(f"k_meta values are 'half' or integers >= 1, got {part!r}")
    return tuple(dict.fromkeys(specs))


async def evaluate(scorer: Scorer, options: EvalOptions, *, log: Any = print) -> dict[str, Any]:
    """Judge what items.jsonl lacks, then rebuild results.json and the plot from all selected records."""
    started = time.perf_counter()
    selection = select_items(
        options.data, limit=options.limit, seed=options.seed, max_chars=options.max_chars, fmt=options.data_format
    )
    info = await scorer.info()
    k_max = max(options.ks)
    asked_meta = options.k_meta is not None and len(options.k_meta) > 0
    specs: tuple[str | int, ...] = (
        () if info.meta_rm is None else (options.k_meta if options.k_meta is not None else (HALF,))
    )
    if asked_meta and info.meta_rm is None:
        log("MetaRM@k rows skipped: the judge has no Meta RM (serve one with --meta-rm to get them)")
    spec = RunSpec(
        model=info.model,
        k_max=k_max,
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        seed=options.seed,
        greedy=options.greedy,
        request_k_meta=max(1, k_max // 2) if specs else 0,
        order_strategy=options.order_strategy.value,
    )
    records = await run_items(
        selection.items, scorer, spec, options.out, concurrency=options.concurrency, progress=options.progress
    )
    wanted = {item.key for item in selection.items}
    selected = [r for r in records if r["key"] in wanted]
    report = ReportSpec(options.ks, specs, options.order_strategy, options.resamples, options.seed)
    results = build_results(selected, report)
    if asked_meta and info.meta_rm is None and not results["notes"]:
        results["notes"].append("MetaRM@k rows skipped: the judge has no Meta RM")
    results["config"] = {
        **spec.to_json(),
        "ks": list(options.ks),
        "k_meta": [str(s) for s in specs],
        "meta_rm": info.meta_rm,
        "data": [str(p) for p in options.data],
        "limit_per_file": options.limit,
        "max_chars": options.max_chars,
        "concurrency": options.concurrency,
        "bootstrap_resamples": options.resamples,
        "sweep": "k_max samples per item, Voting@k / MetaRM@k from order-matched subsets (server/evaluation/sweep.py)",
    }
    results["official"] = official_scores(selected, selection.meta, k_meta=spec.request_k_meta)
    results["items"].update(
        formats=selection.formats,
        selected=len(selection.items),
        available_per_file=selection.available,
        skipped=dict(sorted(selection.skipped.items())),
        items_file=str(options.out / ITEMS_FILE),
    )
    results["wall_s"] = round(time.perf_counter() - started, 2)
    (options.out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot_accuracy(
        results, options.out / PLOT_FILE, title=f"{info.model}: accuracy vs k ({results['items']['evaluated']} items)"
    )
    return results
