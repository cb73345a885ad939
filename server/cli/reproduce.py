"""The `grm-server reproduce` command: the paper's greedy / Voting@k / MetaRM@k table on benchmark files,
a thin layer over `grm-server eval` (same loaders, runner, resume and results.json)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.common import cli_errors, load_settings, meta_rm_overrides
from server.cli.evaluating import checked_options, run_evaluation
from server.core.prompts import StructuredOutput
from server.evaluation.data import select_items
from server.evaluation.evaluate import EvalOptions, parse_ks
from server.evaluation.reproduce import format_reproduce, reproduce_table
from server.evaluation.runner import ITEMS_FILE, load_records
from server.evaluation.sweep import HALF

GRM = "BBQGOD/DeepSeek-GRM-27B"
META_RM = "BBQGOD/DeepSeek-GRM-27B-MetaRM"
REPRODUCE_FILE = "reproduce.json"


def reproduce_command(
    data: Annotated[list[Path], typer.Argument(help="normalized JSONL benchmark file(s)", exists=True, dir_okay=False)],
    k: Annotated[str, typer.Option("--k", help="comma-separated k values; the largest is sampled once")] = "1,8,32",
    model: Annotated[str, typer.Option(help="the GRM: a path or HF name; 'embedded' = the tiny CPU model")] = GRM,
    meta_rm: Annotated[
        str, typer.Option("--meta-rm", help="the Meta RM: a path or HF name, 'embedded', or 'none'")
    ] = META_RM,
    meta_rm_backend: Annotated[
        str, typer.Option("--meta-rm-backend", help="backend of a named Meta RM: vllm (GPU pooling) or hf")
    ] = "vllm",
    out: Annotated[Path, typer.Option(help="output folder (resumable; as for eval)")] = Path("runs/reproduce"),
    limit: Annotated[int | None, typer.Option(help="at most N items from each file (a seeded sample)")] = None,
    seed: Annotated[int, typer.Option(help="seed of item sampling, orders, sampling and bootstrap")] = 0,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="token budget per judgment (default: the template's)")
    ] = None,
    max_model_len: Annotated[int, typer.Option("--max-model-len", help="GRM engine context length")] = 8192,
    gpu_memory_utilization: Annotated[
        float, typer.Option("--gpu-memory-utilization", help="GPU memory share of the GRM engine")
    ] = 0.5,
    structured_output: Annotated[
        StructuredOutput | None, typer.Option("--structured-output", help="decoding mode (default: by template)")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="items judged at once")] = 8,
    url: Annotated[str | None, typer.Option(help="judge with a running grm-server instead of in-process")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples of the confidence intervals")] = 1000,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print reproduce.json instead of the table")] = False,
) -> None:
    """Greedy, Voting@k and MetaRM@k accuracy per benchmark beside DeepSeek-GRM-27B's published numbers."""
    with cli_errors():
        meta = meta_rm_overrides(meta_rm)
        if meta.get("meta_rm.backend") == "hf":
            meta = {
                "meta_rm.backend": meta_rm_backend,
                "meta_rm.model": meta_rm,
                "meta_rm.gpu_memory_utilization": round(max(0.05, 0.9 - gpu_memory_utilization), 2),
            }
        overrides: dict[str, Any] = {
            "generator.model": None if model == "embedded" else model,
            "generator.max_model_len": max_model_len,
            "generator.gpu_memory_utilization": gpu_memory_utilization,
            "judging.structured_output": structured_output,
            **meta,
        }
        settings = load_settings(overrides)
        with checked_options():
            options = EvalOptions(
                data=tuple(data),
                out=out,
                ks=parse_ks(k),
                limit=limit,
                seed=seed,
                k_meta=(HALF,) if meta_rm.lower() != "none" else (),
                max_tokens=max_tokens,
                concurrency=concurrency,
                order_strategy=settings.judging.order_strategy,
                resamples=resamples,
                progress=progress,
            )
        results = asyncio.run(run_evaluation(options, settings, url, None))
    wanted = {item.key for item in select_items(options.data, limit=limit, seed=seed).items}
    records = [r for r in load_records(out / ITEMS_FILE) if r["key"] in wanted]
    table = {**reproduce_table(results, records), "config": results["config"], "items": results["items"]}
    (out / REPRODUCE_FILE).write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    typer.echo(format_reproduce(table))
    typer.echo(f"{results['items']['evaluated']} items evaluated; results in {out}/ ({REPRODUCE_FILE}, results.json)")
