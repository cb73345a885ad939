"""`grm-server meta-rm ...`: build labelled judgment data with the GRM, train a Meta RM, evaluate one."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from meta_rm.records import JudgmentRecord, read_records, write_records
from server.cli.common import cli_errors, fail, load_settings
from server.core.errors import meta_rm_errors
from server.core.settings import Backend, MetaRMBackend, Settings

meta_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Meta RM: training data, training, evaluation.")
logger = logging.getLogger(__name__)


def _records(path: Path) -> list[JudgmentRecord]:
    try:
        records = list(read_records(path))
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    if not records:
        fail(f"{path} holds no judgment records")
    return records


@meta_app.command("build-data")
def build_data(
    data: Annotated[list[Path], typer.Option("--data", help="normalized JSONL file or folder of them (repeat)")],
    out: Annotated[Path, typer.Option(help="JSONL to write, one labelled judgment a line")],
    k: Annotated[int, typer.Option(help="judgments sampled per item")] = 4,
    seed: Annotated[int, typer.Option(help="seed of item selection, orders and sampling")] = 0,
    offset: Annotated[int, typer.Option(help="skip this many items of the seeded shuffle")] = 0,
    limit: Annotated[int | None, typer.Option(help="judge at most this many items")] = None,
    max_chars: Annotated[
        int | None, typer.Option("--max-chars", help="skip items whose prompt + responses are longer")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="token budget per judgment")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature (default 0.5)")] = None,
    concurrency: Annotated[int, typer.Option(help="items judged at once")] = 4,
    backend: Annotated[Backend | None, typer.Option(help="vllm (in-process) or openai (remote server)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible base URL")] = None,
    model: Annotated[str | None, typer.Option(help="GRM model path or name (default: embedded CPU model)")] = None,
) -> None:
    """Sample K judgments per labelled item with the GRM and label each correct/incorrect."""
    from server.core.meta_data import load_preference_items, select_items

    with cli_errors():
        settings = load_settings(
            {
                "generator.backend": backend,
                "generator.base_url": base_url,
                "generator.model": model,
                "meta_rm.backend": MetaRMBackend.NONE,
            }
        )
        try:
            items, report = load_preference_items(data, max_chars)
        except (OSError, ValueError, KeyError) as exc:
            fail(f"cannot read the data: {exc}")
        chosen = select_items(items, seed, offset, limit)
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
        typer.echo(f"{report.kept} labelled items (skipped: {skipped}); judging {len(chosen)} with k={k}", err=True)
        if not chosen:
            fail("no item to judge")
        records, failures = asyncio.run(_judge(settings, chosen, k, seed, max_tokens, temperature, concurrency))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_records(out, records)
    correct = sum(r.correct for r in records)
    valid = sum(r.scores is not None for r in records)
    failed = ", ".join(f"{n} {t}" for t, n in sorted(failures.items())) or "none"
    typer.echo(
        f"wrote {len(records)} judgments of {len(chosen) - sum(failures.values())} items to {out}: "
        f"{valid} parseable, {correct} correct ({correct / max(1, len(records)):.1%}); items failed: {failed}"
    )


async def _judge(
    settings: Settings,
    items: list[Any],
    k: int,
    seed: int,
    max_tokens: int | None,
    temperature: float | None,
    concurrency: int,
) -> tuple[list[JudgmentRecord], Counter[str]]:
    from tqdm import tqdm

    from server.core.engines import open_service
    from server.core.meta_data import judge_items

    async with open_service(settings) as service:
        with tqdm(total=len(items), desc="judging", unit="item") as bar:
            return await judge_items(
                service, items, k=k, seed=seed, max_tokens=max_tokens, temperature=temperature,
                concurrency=concurrency, on_done=lambda _: bar.update(1),
            )  # fmt: skip


@meta_app.command()
def train(
    data: Annotated[Path, typer.Option(help="JSONL of labelled judgments (from build-data)")],
    out: Annotated[Path, typer.Option(help="checkpoint folder to write (save_pretrained layout + tokenizer)")],
    model: Annotated[
        str | None, typer.Option(help="backbone or classifier to start from (default: the embedded backbone)")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="fine-tune every weight (default: frozen backbone, train the head)")
    ] = False,
    epochs: Annotated[
        int | None, typer.Option(help="passes over the data (default: 300 head steps, or 1 epoch with --full)")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: 1e-2 head, 1e-5 full)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="sequences per forward pass")] = 4,
    l2: Annotated[float, typer.Option(help="L2 penalty on the head (frozen) or AdamW weight decay (full)")] = 0.0,
    max_length: Annotated[int, typer.Option("--max-length", help="tokens per input (left-truncated)")] = 2048,
    eval_fraction: Annotated[
        float, typer.Option("--eval-fraction", help="share of items held out for AUC/accuracy")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the split, head init and batches")] = 0,
    export_head: Annotated[
        Path | None, typer.Option("--export-head", help="also write the scalar head as JSON (embedded format)")
    ] = None,
    features_cache: Annotated[
        Path | None,
        typer.Option("--features-cache", help="frozen backbone: keep the pooled features in this file and reuse them"),
    ] = None,
) -> None:
    """Fine-tune a scalar Meta RM with binary cross-entropy; print eval AUC and accuracy; save the checkpoint."""
    from meta_rm.embedded import export_head as write_head
    from meta_rm.train import TrainConfig, save_checkpoint
    from meta_rm.train import train as fit
    from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model

    with cli_errors():
        records = _records(data)
        settings = load_settings({})
        base = model or str(prepare_embedded_model(Path(settings.cache_dir)))
        config = TrainConfig(
            model=base, freeze_backbone=not full, epochs=epochs or (1 if full else 300), lr=lr or (1e-5 if full else 1e-2),
            batch_size=batch_size, l2=l2, max_length=max_length, eval_fraction=eval_fraction, seed=seed,
            features_cache=str(features_cache) if features_cache else None,
        )  # fmt: skip
        result = fit(records, config, progress=True)
        save_checkpoint(result, out, config)
        if export_head is not None:
            info = {
                "backbone": model or EMBEDDED_NAME, "trained_on": data.name,
                "train_config": {"epochs": config.epochs, "lr": config.lr, "l2": config.l2, "max_length": config.max_length,
                                 "eval_fraction": config.eval_fraction, "seed": config.seed},
                "loss_before": result.loss_before, "loss_after": result.loss_after, **result.metrics,
            }  # fmt: skip
            write_head(result.model, export_head, info)
    m = result.metrics
    typer.echo(
        f"train loss {result.loss_before:.4f} -> {result.loss_after:.4f} on {int(m['train_judgments'])} judgments; "
        f"eval on {int(m['eval_judgments'])}: AUC {m['eval_auc']:.3f}  accuracy {m['eval_accuracy']:.3f}  "
        f"(correct rate {m['eval_correct_rate']:.3f}); saved to {out}"
    )


@meta_app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="JSONL of labelled judgments (from build-data), e.g. held-apart items")],
    backend: Annotated[MetaRMBackend, typer.Option(help="Meta RM backend")] = MetaRMBackend.EMBEDDED,
    model: Annotated[str | None, typer.Option(help="Meta RM path or name (hf, vllm)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="pooling server (remote)")] = None,
    k_meta: Annotated[
        list[int] | None, typer.Option("--k-meta", help="judgments kept per item (repeat; default: half)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the numbers as JSON lines")] = False,
) -> None:
    """Rate stored judgments with a Meta RM: AUC, accuracy, and Voting@k vs MetaRM@k on their items."""
    from meta_rm.evaluate import compare

    with cli_errors():
        records = _records(data)
        if backend is MetaRMBackend.NONE:
            fail("choose a Meta RM backend to evaluate")
        settings = load_settings({"meta_rm.backend": backend, "meta_rm.model": model, "meta_rm.base_url": base_url})
        scores = asyncio.run(_rate(settings, records))
    choices: list[int | None] = list(k_meta) if k_meta else [None]
    for keep in choices:
        result = compare(records, scores, keep)
        if as_json:
            typer.echo(json.dumps({"data": str(data), "backend": backend.value, **_fields(result)}))
            continue
        typer.echo(
            f"{result.judgments} judgments of {result.items} items (k={result.k:g}, k_meta={keep or 'k/2'}): "
            f"AUC {result.auc:.3f}  accuracy {result.accuracy:.3f}  (correct rate {result.correct_rate:.3f})\n"
            f"  Voting@k accuracy {result.voting_accuracy:.3f} ({result.voting_ties} tied items)   "
            f"MetaRM@k accuracy {result.meta_accuracy:.3f} ({result.meta_ties} tied items)"
        )


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


async def _rate(settings: Settings, records: list[JudgmentRecord]) -> list[float]:
    from tqdm import tqdm

    from server.core.engines import build_meta_rm

    rm = build_meta_rm(settings)
    if rm is None:  # pragma: no cover - NONE is refused above
        return []
    with meta_rm_errors():
        await rm.start()
        try:
            scores: list[float] = []
            step = 32
            for start in tqdm(range(0, len(records), step), desc="meta rm", unit="batch"):
                scores.extend(await rm.score([r.to_input() for r in records[start : start + step]]))
            return scores
        finally:
            await rm.close()
