"""The `grm-server eval` command: accuracy vs k and each benchmark's official scores on labelled data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.common import MetaRMOption, cli_errors, fail, load_settings, meta_rm_overrides
from server.cli.evaluating import checked_options, run_evaluation
from server.core.settings import Backend
from server.evaluation.benchmarks.paper import format_official, format_paper_table
from server.evaluation.evaluate import EvalOptions, parse_k_meta, parse_ks
from server.evaluation.formats import FORMATS, FormatError, accepted, load_benchmark
from server.evaluation.report import format_table
from voting.orders import OrderStrategy


def eval_command(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="benchmark files as published (json, jsonl, parquet) or normalized JSONL, or Hugging Face dataset names"
        ),
    ],
    data_format: Annotated[
        str | None,
        typer.Option("--format", help=f"force the format of every file (default: detected); one of: {accepted()}"),
    ] = None,
    paper_table: Annotated[
        bool, typer.Option("--paper-table", help="also print RewardBench / PPE-P / PPE-C / RMB beside the paper's")
    ] = False,
    k: Annotated[
        str, typer.Option("--k", help="comma-separated k values; the largest is sampled once per item")
    ] = "1,2,4,8",
    limit: Annotated[int | None, typer.Option(help="at most N items from each file (a seeded sample)")] = None,
    out: Annotated[
        Path, typer.Option(help="output folder: run.json, items.jsonl, results.json, accuracy_vs_k.png")
    ] = Path("runs/eval"),
    url: Annotated[
        str | None, typer.Option(help="judge with a running grm-server at this URL instead of in-process")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of item sampling, response orders, sampling and bootstrap")] = 0,
    k_meta: Annotated[
        str | None,
        typer.Option(
            "--k-meta", help="MetaRM@k lines: 'half' (k/2, the default with a Meta RM), integers, or 0 for none"
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature of the Voting@k judgments")] = 0.5,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="token budget per judgment (default: the judge's)")
    ] = None,
    max_chars: Annotated[
        int | None,
        typer.Option("--max-chars", help="leave out items longer than this (prompt + responses, characters)"),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="items judged at once")] = 4,
    greedy: Annotated[
        bool, typer.Option("--greedy/--no-greedy", help="also judge each item once at temperature 0")
    ] = True,
    order_strategy: Annotated[
        OrderStrategy | None,
        typer.Option("--order-strategy", help="the judge's order strategy (default: from settings)"),
    ] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples of the confidence intervals")] = 1000,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Bearer key for --url")] = None,
    backend: Annotated[
        Backend | None, typer.Option(help="in-process: vllm (engine) or openai (an OpenAI-compatible server)")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible base URL (in-process, openai backend)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="GRM model path or name (in-process; default: the embedded CPU model)")
    ] = None,
    meta_rm: MetaRMOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print results.json instead of the table")] = False,
) -> None:
    """Accuracy of greedy, Voting@k and MetaRM@k on labelled DATA, with bootstrap CIs; reruns resume."""
    with cli_errors():
        overrides: dict[str, Any] = {
            "generator.backend": backend,
            "generator.base_url": base_url,
            "generator.model": model,
            **meta_rm_overrides(meta_rm),
        }
        settings = load_settings(overrides)
        with checked_options():
            if data_format is not None and data_format not in FORMATS:
                raise ValueError(f"--format must be one of: {accepted()}")
            options = EvalOptions(
                data=tuple(data),
                out=out,
                ks=parse_ks(k),
                limit=limit,
                seed=seed,
                k_meta=parse_k_meta(k_meta) if k_meta is not None else None,
                temperature=temperature,
                max_tokens=max_tokens,
                max_chars=max_chars,
                concurrency=concurrency,
                greedy=greedy,
                order_strategy=order_strategy or settings.judging.order_strategy,
                resamples=resamples,
                progress=progress,
                data_format=data_format,
            )
        try:
            for path in options.data:  # before any engine starts: a bad file ends here, exit 2
                items, found = load_benchmark(path, data_format)
                how = "forced" if data_format is not None else "detected"
                typer.echo(f"{path}: {found} ({how}), {len(items)} items", err=True)
        except FormatError as exc:
            fail(f"cannot read {exc}\naccepted formats: {accepted()}")
        results = asyncio.run(run_evaluation(options, settings, url, api_key))
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    typer.echo(format_table(results))
    if results["official"]:
        typer.echo(format_official(results["official"]))
    if paper_table:
        typer.echo(format_paper_table(results["official"], max(options.ks)))
    typer.echo(
        f"{results['items']['evaluated']} items evaluated of {results['items']['selected']} selected; results in {out}/"
    )
