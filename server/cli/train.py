"""`grm-server train ...`: SPCT training. `rft` samples rejection fine-tuning data through the judging path,
`sft` fine-tunes on it (TRL SFTTrainer), `grpo` runs rule-based online RL (TRL GRPOTrainer)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.common import cli_errors, fail, load_settings
from server.core.settings import Backend, MetaRMBackend, Settings

train_app = typer.Typer(no_args_is_help=True, add_completion=False, help="SPCT training: rft, sft, grpo.")


@train_app.command()
def rft(
    data: Annotated[
        list[Path], typer.Argument(help="labelled benchmark files (any format `eval` reads) or normalized JSONL")
    ],
    out: Annotated[Path, typer.Option(help="output folder: rft.jsonl, stats.json, manifest.json (a rerun resumes)")],
    k: Annotated[int, typer.Option(help="judgments sampled per item")] = 4,
    limit: Annotated[int | None, typer.Option(help="at most N items from each file (a seeded sample)")] = None,
    seed: Annotated[int, typer.Option(help="seed of item sampling, response orders and sampling")] = 0,
    hint_share: Annotated[
        float, typer.Option("--hint-share", help="at most this share of the rows from hinted sampling (0 = none)")
    ] = 0.25,
    balance_positions: Annotated[
        bool,
        typer.Option(
            "--balance-positions/--no-balance-positions",
            help="keep as many rows with the best shown at each position as at the rarest one",
        ),
    ] = True,
    data_format: Annotated[str | None, typer.Option("--format", help="force the format of every file")] = None,
    max_chars: Annotated[int | None, typer.Option("--max-chars", help="leave out items longer than this")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="token budget per judgment")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature (default: the judge's)")] = None,
    concurrency: Annotated[int, typer.Option(help="items judged at once")] = 4,
    item_timeout: Annotated[
        float, typer.Option("--item-timeout", help="seconds one item may take (a late one is judged by a rerun)")
    ] = 1800.0,
    backend: Annotated[Backend | None, typer.Option(help="vllm (in-process) or openai (remote server)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible base URL")] = None,
    model: Annotated[str | None, typer.Option(help="GRM model path or name (default: embedded CPU model)")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
) -> None:
    """Sample K judgments per labelled item as the server judges, keep the correct ones (hinted where none is)."""
    from server.core.engines import judging_template
    from server.evaluation.formats import FORMATS, FormatError, accepted
    from server.training.data import load_training_items
    from server.training.rft import SamplingOptions
    from server.training.rft_output import check_manifest, run_manifest

    with cli_errors():
        if item_timeout <= 0:
            fail("--item-timeout must be > 0")
        settings = load_settings(
            {"generator.backend": backend, "generator.base_url": base_url, "generator.model": model,
             "meta_rm.backend": MetaRMBackend.NONE, "limits.request_timeout_s": item_timeout}
        )  # fmt: skip
        if not 1 <= k <= settings.judging.max_k:
            fail(f"--k must be in 1..{settings.judging.max_k}")
        if not 0 <= hint_share < 1:
            fail("--hint-share must be in [0, 1)")
        if data_format is not None and data_format not in FORMATS:
            fail(f"--format must be one of: {accepted()}")
        try:
            loaded = load_training_items(data, seed=seed, limit=limit, max_chars=max_chars, fmt=data_format)
        except FormatError as exc:
            fail(f"cannot read {exc}\naccepted formats: {accepted()}")
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(loaded.skipped.items())) or "none"
        if not loaded.items:
            fail(f"no labelled item to train on in {', '.join(map(str, data))} (left out: {skipped})")
        options = SamplingOptions(k, temperature, max_tokens, concurrency, hint=hint_share > 0)
        check_manifest(
            out,
            run_manifest(
                loaded.files, model=settings.generator.model or "embedded", model_path=_model_path(settings),
                template=judging_template(settings).value, k=k, seed=seed, temperature=temperature,
                max_tokens=max_tokens, max_chars=max_chars, limit=limit, order_strategy=settings.judging.order_strategy.value,
                hint=options.hint, hint_share=hint_share, balance_positions=balance_positions,
            ),
        )  # fmt: skip
        typer.echo(f"{len(loaded.items)} labelled items (left out: {skipped}); sampling k={k} into {out}", err=True)
        stats = asyncio.run(
            _rft(settings, loaded.items, out, options, hint_share, balance_positions, loaded.skipped, progress)
        )
    items = stats["items"]
    dropped = ", ".join(f"{n} {why}" for why, n in items["dropped"].items()) or "none"
    if items["unfinished"]:
        typer.echo(
            f"{items['unfinished']} items ran past --item-timeout: rerun the same command to judge them", err=True
        )
    typer.echo(
        f"wrote {stats['rows']} rows ({stats['hinted_rows']} hinted, {stats['hinted_share']:.1%}) from {items['kept']} of "
        f"{items['judged']} items to {out / 'rft.jsonl'}; dropped: {dropped}; plain correct share "
        f"{stats['plain_correct_share']:.1%}"
    )


def _model_path(settings: Settings) -> str:
    """What `train sft` starts from by default: the GRM's folder (the embedded model's prepared copy) or name."""
    if settings.generator.model is not None:
        return settings.generator.model
    if settings.generator.backend is Backend.OPENAI:
        return settings.generator.served_model_name or "embedded"
    from server.core.embedded import prepare_embedded_model

    return str(prepare_embedded_model(Path(settings.cache_dir)))


async def _rft(
    settings: Settings,
    items: list[Any],
    out: Path,
    options: Any,
    hint_share: float,
    balance: bool,
    skipped: Any,
    progress: bool,
) -> dict[str, Any]:
    from tqdm import tqdm

    from server.core.engines import open_service
    from server.training.rft import read_records, run_rft

    if {item.key for item in items} <= set(read_records(out)):  # everything judged: no engine needed
        return await run_rft(None, items, out, options, hint_share=hint_share, balance=balance, skipped=skipped)
    async with open_service(settings) as service:
        with tqdm(total=len(items), desc="rft", unit="item", disable=not progress) as bar:
            return await run_rft(
                service,
                items,
                out,
                options,
                hint_share=hint_share,
                balance=balance,
                skipped=skipped,
                on_done=lambda _: bar.update(1),
            )


@train_app.command()
def sft(
    data: Annotated[Path, typer.Option(help="rft.jsonl from `train rft`")],
    out: Annotated[Path, typer.Option(help="model folder to write (weights, tokenizer, chat template)")],
    model: Annotated[
        str | None, typer.Option(help="base model (default: the model that wrote the data, from its manifest.json)")
    ] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", help="optimizer steps (-1: run --epochs)")] = -1,
    epochs: Annotated[float, typer.Option(help="passes over the rows when --max-steps is -1")] = 2.0,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-5,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="train a LoRA adapter of this rank (0 = full)")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="rows per device step")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="gradient accumulation steps")] = 1,
    max_length: Annotated[int, typer.Option("--max-length", help="tokens per row (prompt + completion)")] = 2048,
    seed: Annotated[int, typer.Option(help="seed of the data order and initialisation")] = 0,
) -> None:
    """Rejection fine-tuning with TRL's SFTTrainer (loss on the judgment only); a LoRA adapter is merged on save."""
    from server.training.rft_output import MANIFEST, read_manifest
    from server.training.sft import SFTOptions, train_sft

    with cli_errors():
        if not data.is_file():
            fail(f"{data} is not a file (give the rft.jsonl that `train rft` wrote)")
        manifest = read_manifest(data.parent) if (data.parent / MANIFEST).is_file() else None
        if model is None:
            if manifest is None:
                fail(f"no --model and no {MANIFEST} beside {data} to read the base model from")
            model = str(manifest["model_path"])
        if lora_rank < 0 or batch_size < 1 or grad_accum < 1 or max_length < 16 or lr <= 0:
            fail("--lora-rank must be >= 0, --batch-size and --grad-accum >= 1, --max-length >= 16, --lr > 0")
        options = SFTOptions(
            data=data, out=out, model=model, max_steps=max_steps, epochs=epochs, lr=lr, lora_rank=lora_rank,
            batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, seed=seed,
            template=str(manifest["template"]) if manifest and manifest.get("template") else None,
        )  # fmt: skip
        info = train_sft(options)
    loss = info["log"].get("loss", {})
    typer.echo(
        f"{info['steps']} steps on {info['rows']} rows in {info['time_s']} s; loss {loss.get('first', float('nan')):.4f}"
        f" -> {loss.get('last', float('nan')):.4f}; saved to {out} (grm-server serve --model {out})"
    )


@train_app.command()
def grpo(
    data: Annotated[list[Path], typer.Argument(help="labelled benchmark files (any format `eval` reads)")],
    model: Annotated[str, typer.Option(help="the model to start from (e.g. the `train sft` output)")],
    out: Annotated[Path, typer.Option(help="model folder to write")],
    num_generations: Annotated[int, typer.Option("--num-generations", help="judgments per prompt (group)")] = 4,
    beta: Annotated[float, typer.Option(help="KL coefficient")] = 0.08,
    max_steps: Annotated[int, typer.Option("--max-steps", help="optimizer steps")] = 100,
    max_completion_length: Annotated[
        int, typer.Option("--max-completion-length", help="tokens per judgment (a cut one is masked out)")
    ] = 512,
    limit: Annotated[int | None, typer.Option(help="at most N items from each file (a seeded sample)")] = None,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-6,
    pass_rates: Annotated[
        Path | None, typer.Option("--pass-rates", help="stats.json of `train rft`: leave out items it passed 0 or 1")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of item sampling, response orders and training")] = 0,
    data_format: Annotated[str | None, typer.Option("--format", help="force the format of every file")] = None,
    max_chars: Annotated[int | None, typer.Option("--max-chars", help="leave out items longer than this")] = None,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="train a LoRA adapter of this rank (0 = full)")] = 0,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="completions per step, a multiple of --num-generations")
    ] = None,
    structured: Annotated[
        bool | None,
        typer.Option(
            "--structured/--no-structured",
            help="decode judgments under the served score regex (default: as served, judging.structured_output)",
        ),
    ] = None,
) -> None:
    """Rule-based online RL with TRL's GRPOTrainer: reward +1 for a correct judgment, -1 otherwise."""
    from collections import Counter

    from server.core.engines import judging_template
    from server.evaluation.formats import FormatError, accepted
    from server.training.data import load_training_items
    from server.training.grpo import GRPOOptions, left_out_by_pass_rate, train_grpo
    from server.training.structured import served_structured

    with cli_errors():
        if num_generations < 2 or max_steps < 1 or max_completion_length < 1 or beta < 0 or lr <= 0 or lora_rank < 0:
            fail(
                "--num-generations must be >= 2, --max-steps and --max-completion-length >= 1, --beta >= 0, --lr > 0,"
                " --lora-rank >= 0"
            )
        if batch_size is not None and (batch_size < 1 or batch_size % num_generations):
            fail("--batch-size must be a positive multiple of --num-generations")
        settings = load_settings({"generator.model": model})
        template = judging_template(settings)
        if structured is None:
            structured = served_structured(settings.judging.structured_output, template)
        try:
            loaded = load_training_items(data, seed=seed, limit=limit, max_chars=max_chars, fmt=data_format)
        except FormatError as exc:
            fail(f"cannot read {exc}\naccepted formats: {accepted()}")
        items, left = loaded.items, Counter(loaded.skipped)
        if pass_rates is not None:
            if not pass_rates.is_file():
                fail(f"--pass-rates: {pass_rates} is not a file (the stats.json of `train rft`)")
            items, by_rate = left_out_by_pass_rate(items, pass_rates)
            left.update(by_rate)
        if not items:
            left_text = ", ".join(f"{n} {why}" for why, n in sorted(left.items())) or "none"
            fail(f"no labelled item to train on (left out: {left_text})")
        options = GRPOOptions(
            out=out, model=model, template=template, num_generations=num_generations, beta=beta, max_steps=max_steps,
            max_completion_length=max_completion_length, lr=lr, seed=seed, lora_rank=lora_rank, structured=structured,
            batch_size=batch_size,
        )  # fmt: skip
        info = train_grpo(options, items, left)
    log = info["log"]
    parts = [f"{key} {v['first']:.3f} -> {v['last']:.3f}" for key, v in log.items() if key in ("reward", "kl")]
    typer.echo(
        f"{info['steps']} steps on {info['items']} items in {info['time_s']} s; {'; '.join(parts)}; saved to {out}"
    )


@train_app.command("export-verl")
def export_verl(
    data: Annotated[list[Path], typer.Argument(help="labelled benchmark files (any format `eval` reads)")],
    out: Annotated[Path, typer.Option(help="parquet file to write (verl's RL data layout)")],
    model: Annotated[str | None, typer.Option(help="the model verl will train (picks the judging template)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most N items from each file (a seeded sample)")] = None,
    pass_rates: Annotated[
        Path | None, typer.Option("--pass-rates", help="stats.json of `train rft`: leave out items it passed 0 or 1")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of item sampling and response orders")] = 0,
) -> None:
    """Write the GRPO prompts for verl; its reward is `server.training.reward.compute_score` (docs/training.md)."""
    from datasets import Dataset

    from server.core.engines import judging_template
    from server.evaluation.formats import FormatError, accepted
    from server.training.data import load_training_items
    from server.training.grpo import left_out_by_pass_rate, verl_rows

    with cli_errors():
        template = judging_template(load_settings({"generator.model": model}))
        try:
            items = load_training_items(data, seed=seed, limit=limit).items
        except FormatError as exc:
            fail(f"cannot read {exc}\naccepted formats: {accepted()}")
        if pass_rates is not None:
            items, _ = left_out_by_pass_rate(items, pass_rates)
        if not items:
            fail("no labelled item to export")
        out.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_list(verl_rows(items, template)).to_parquet(str(out))
    typer.echo(f"wrote {len(items)} prompts to {out}")
