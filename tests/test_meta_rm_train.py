"""Meta RM training on the real tiny backbone (CPU): the loss falls, checkpoints reload and score identically,
the head exports into the embedded format, and the `meta-rm train` command works end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meta_rm.embedded import load_head, prepare_embedded_meta_rm
from meta_rm.hf import HFMetaRM, score_ids
from meta_rm.inputs import encode
from meta_rm.labels import is_correct
from meta_rm.records import JudgmentRecord, write_records
from meta_rm.train import TrainConfig, save_checkpoint, train
from server.cli.meta import meta_app

RIGHT = "Specific Criteria: correctness.\nAnalysis: Response 1 states the right fact.\nScores: \\boxed{9, 2}"
WRONG = "Specific Criteria: style.\nAnalysis: Response 2 sounds confident.\nScores: \\boxed{3, 8}"


def tiny_records(items: int = 8) -> list[JudgmentRecord]:
    """Per item a correct and an incorrect judgment whose wording differs: learnable in a few steps."""
    out = []
    for i in range(items):
        for text, scores in ((RIGHT, (9, 2)), (WRONG, (3, 8))):
            out.append(
                JudgmentRecord(
                    item_id=f"item-{i}",
                    source="tiny",
                    conversation=f"User: What is {i} + {i}?",
                    responses=(str(2 * i), str(2 * i + 1)),
                    label=0,
                    order=(0, 1),
                    text=text,
                    scores=scores,
                    correct=is_correct(scores, 0),
                )  # fmt: skip
            )
    return out


async def test_head_training_lowers_the_loss_and_the_checkpoint_reloads_identically(
    embedded_model: Path, tmp_path: Path
) -> None:
    records = tiny_records(6)
    config = TrainConfig(
        model=str(embedded_model), freeze_backbone=True, epochs=150, lr=1e-2, eval_fraction=0.34, max_length=256
    )
    result = train(records, config)
    assert result.loss_after < 0.5 * result.loss_before
    assert result.losses[-1] < result.losses[0]
    assert result.metrics["eval_judgments"] == 4 and result.metrics["eval_auc"] == 1.0
    inputs = [r.to_input() for r in records]
    in_memory = score_ids(result.model, encode(inputs, result.tokenizer, 256), int(result.model.config.pad_token_id), 4)
    save_checkpoint(result, tmp_path / "ckpt", config)
    assert (tmp_path / "ckpt" / "config.json").is_file() and (tmp_path / "ckpt" / "tokenizer.json").is_file()
    assert (tmp_path / "ckpt" / "meta_rm_training.json").is_file()
    reloaded = HFMetaRM(tmp_path / "ckpt", batch_size=3, max_length=256)
    await reloaded.start()
    again = await reloaded.score(inputs)
    await reloaded.close()
    assert again == pytest.approx(in_memory, abs=1e-4)
    correct = [s for s, r in zip(again, records, strict=True) if r.correct]
    wrong = [s for s, r in zip(again, records, strict=True) if not r.correct]
    assert min(correct) > max(wrong)  # the reloaded model still ranks the right judgments first


def test_full_fine_tune_lowers_the_loss(embedded_model: Path) -> None:
    records = tiny_records(2)
    config = TrainConfig(
        model=str(embedded_model),
        freeze_backbone=False,
        epochs=2,
        lr=5e-5,
        batch_size=2,
        eval_fraction=0.0,
        max_length=128,
    )
    result = train(records, config)
    assert len(result.losses) == 4  # 2 epochs x 2 batches
    assert result.loss_after < result.loss_before
    assert any(p.requires_grad for p in result.model.parameters())


def test_training_refuses_data_with_one_class(embedded_model: Path) -> None:
    only_right = [r for r in tiny_records(3) if r.correct]
    with pytest.raises(ValueError, match="all correct or all incorrect"):
        train(only_right, TrainConfig(model=str(embedded_model), eval_fraction=0.0))


async def test_cli_train_saves_a_checkpoint_and_exports_an_embedded_head(embedded_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "judgments.jsonl"
    write_records(data, tiny_records())
    head = tmp_path / "head.json"
    cache = tmp_path / "features.pt"
    args = ["train", "--data", str(data), "--out", str(tmp_path / "ckpt"), "--epochs", "100", "--eval-fraction", "0.25",
            "--max-length", "256", "--export-head", str(head), "--features-cache", str(cache)]  # fmt: skip
    first = CliRunner().invoke(meta_app, [*args, "--l2", "0.5"])  # a strong penalty: a different head
    assert first.exit_code == 0, first.output
    stamp = cache.stat().st_mtime_ns
    run = CliRunner().invoke(meta_app, args)
    assert run.exit_code == 0, run.output
    assert cache.stat().st_mtime_ns == stamp  # the second run reused the features
    assert run.output.split("train loss")[1] != first.output.split("train loss")[1]
    match = re.search(r"train loss ([\d.]+) -> ([\d.]+) on 12 judgments; eval on 4: AUC ([\d.]+)", run.output)
    assert match is not None, run.output
    assert float(match.group(2)) < float(match.group(1))
    body = load_head(head)
    assert body["hidden_size"] == 576 and body["backbone"] == "smollm2-135m-instruct" and "eval_auc" in body
    assert head.stat().st_size < 100_000
    # the head on the bf16 backbone scores like the float32 checkpoint, up to the head's bf16 rounding
    folder = prepare_embedded_meta_rm(embedded_model, tmp_path / "cache", head_file=head)
    assert prepare_embedded_meta_rm(embedded_model, tmp_path / "cache", head_file=head) == folder  # prepared once
    inputs = [r.to_input() for r in tiny_records(2)]
    scores = []
    for path in (tmp_path / "ckpt", folder):
        rm = HFMetaRM(path, max_length=256)
        await rm.start()
        scores.append(await rm.score(inputs))
        await rm.close()
    assert scores[1] == pytest.approx(scores[0], rel=0.02, abs=0.02)


def test_cli_train_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "x"}\n')
    run = CliRunner().invoke(meta_app, ["train", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert run.exit_code == 2 and "bad.jsonl:1" in run.output
