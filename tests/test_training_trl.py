"""`train sft` and `train grpo` with the real TRL trainers on the CPU (tiny steps), the trained folder served and
scored through the real engine, and the training inputs' guards (hints, pass rates, bad files)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from server.cli.main import app
from server.core.engines import judging_template
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.training.data import load_training_items
from server.training.grpo import GRPOOptions, left_out_by_pass_rate, prompt_rows, spct_reward, train_grpo
from server.training.reward import hint_text
from server.training.rft import SamplingOptions, run_rft
from server.training.sft import SFTOptions, build_trainer, train_sft
from server.training.trl_common import read_rows
from tests.fakes import ScriptedGenerator, shown_responses

SAMPLE = Path(__file__).parent / "data" / "dev_sample.jsonl"
GENERIC = PromptBuilder(TemplateName.GENERIC)


def alternating(prompt: str, index: int) -> str:
    """A judge that ranks the first shown response best on even samples and the last on odd ones."""
    n = len(shown_responses(prompt))
    scores = [9 if i == (0 if index % 2 == 0 else n - 1) else 2 for i in range(n)]
    return (
        f"Specific Criteria: Correctness.\nAnalysis: sample {index}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"
    )


@pytest.fixture(scope="module")
def rft_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rft.jsonl from dev items (a scripted judge right on half the samples of each item)."""
    from server.core.judging import JudgeService

    out = tmp_path_factory.mktemp("rft")
    items = load_training_items([SAMPLE], seed=0).items
    service = JudgeService(ScriptedGenerator(judge=alternating), GENERIC, Settings())
    import asyncio

    asyncio.run(run_rft(service, items, out, SamplingOptions(k=2, max_tokens=128), hint_share=0.0))
    rows = out / "rft.jsonl"
    assert rows.read_text().strip()
    return rows


def test_sft_loss_covers_the_judgment_only(rft_rows: Path, embedded_model: Path, tmp_path: Path) -> None:
    trainer = build_trainer(SFTOptions(rft_rows, tmp_path / "m", str(embedded_model), max_steps=1), str(tmp_path))
    tok = trainer.processing_class
    first = json.loads(rft_rows.read_text().splitlines()[0])
    example = trainer.train_dataset[0]
    labels, ids = example["labels"], example["input_ids"]
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert labels[0] == -100 and 0 < len(trained) < len(ids) // 2  # the long prompt is masked
    assert first["completion"][0]["content"] in tok.decode(trained)
    assert first["prompt"][0]["content"][:200] not in tok.decode(trained)


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


@pytest.mark.engine
def test_sft_two_steps_give_a_folder_the_server_scores_with(
    rft_rows: Path, embedded_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grm-ckpt"  # "grm" in the path: only the recorded template keeps it on the generic one
    options = SFTOptions(rft_rows, out, str(embedded_model), max_steps=2, lr=1e-4, batch_size=2, template="generic")
    info = train_sft(options)
    assert info["steps"] == 2 and math.isfinite(info["train_loss"]) and info["log"]["loss"]["steps"] == 2
    saved, base = _weights(out), _weights(embedded_model)
    assert set(saved) == set(base) and any(not saved[k].equal(base[k]) for k in base)  # trained, same layout
    assert (out / "training.json").is_file() and "chat_template" in (
        (out / "tokenizer_config.json").read_text() + "".join(p.name for p in out.iterdir())
    )
    assert json.loads((out / "training.json").read_text())["template"] == "generic"
    assert judging_template(Settings().with_overrides({"generator.model": str(out)})) is TemplateName.GENERIC
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")  # served with the template training.json records
    cmd = [sys.executable, "-m", "server.cli", "score", "--model", str(out), "--query", "Divide 45 by 9",
           "-r", "The result is 5.", "-r", "22.5", "--k", "2", "--max-tokens", "128", "--seed", "1", "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(done.stdout)
    assert body["model"] == str(out) and body["k"] == 2 and body["valid"] >= 1 and len(body["rewards"]) == 2


def test_lora_adapter_is_merged_on_save(rft_rows: Path, embedded_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    train_sft(
        SFTOptions(rft_rows, out, str(embedded_model), max_steps=1, lr=1e-3, lora_rank=4, batch_size=1, max_length=768)
    )
    assert not (out / "adapter_config.json").exists()
    saved, base = _weights(out), _weights(embedded_model)
    assert set(saved) == set(base) and any(not saved[k].equal(base[k]) for k in base)


def test_grpo_step_with_the_rule_reward(embedded_model: Path, tmp_path: Path) -> None:
    items = load_training_items([SAMPLE], seed=0, limit=2).items
    out = tmp_path / "policy"
    options = GRPOOptions(
        out=out, model=str(embedded_model), template=TemplateName.GENERIC, num_generations=2, max_steps=1,
        max_completion_length=12, lr=1e-6, structured=False,
    )  # fmt: skip
    info = train_grpo(options, items)
    assert info["steps"] == 1 and info["items"] == 2
    log = info["log"]
    assert -1.0 <= log["reward"]["last"] <= 1.0 and 0.0 <= log["spct/unparseable_share"]["last"] <= 1.0
    assert "spct/correct_share" in log and "completions/mean_length" in log and "kl" in log
    assert (out / "config.json").is_file() and set(_weights(out)) == set(_weights(embedded_model))


def test_grpo_lora_under_the_served_regex_writes_judgments_that_parse(embedded_model: Path, tmp_path: Path) -> None:
    """LoRA policy (TRL's reference: the adapter disabled), every judgment decoded under the served score regex:
    none unparseable, each group's rewards by the unchanged rule; the adapter merged into a folder that loads."""
    from transformers import AutoModelForCausalLM

    items = load_training_items([SAMPLE], seed=0, limit=2).items
    out = tmp_path / "policy"
    options = GRPOOptions(
        out=out, model=str(embedded_model), template=TemplateName.GENERIC, num_generations=2, max_steps=1,
        max_completion_length=128, lr=1e-4, lora_rank=4, structured=True,
    )  # fmt: skip
    info = train_grpo(options, items)
    step = info["per_step"][0]
    assert info["steps"] == 1 and step["spct/unparseable_share"] == 0.0 and step["completions/clipped_ratio"] == 0.0
    assert step["reward"] in (-1.0, -0.5, 0.0, 0.5, 1.0) and step["reward"] == pytest.approx(
        2 * step["spct/correct_share"] - 1
    )
    assert info["peak_rss_mb"] > 0 and not (out / "adapter_config.json").exists()
    assert set(_weights(out)) == set(_weights(embedded_model))  # merged: the base layout, no lora_ keys
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.vocab_size == AutoModelForCausalLM.from_pretrained(embedded_model).config.vocab_size


def test_structured_default_is_what_the_server_serves() -> None:
    from server.core.prompts import StructuredOutput
    from server.training.structured import served_structured

    assert served_structured(StructuredOutput.AUTO, TemplateName.GENERIC)
    assert not served_structured(StructuredOutput.AUTO, TemplateName.DEEPSEEK_GRM)  # free reasoning there
    assert not served_structured(StructuredOutput.OFF, TemplateName.GENERIC)
    assert served_structured(StructuredOutput.REGEX, TemplateName.DEEPSEEK_GRM)


def test_one_regex_for_several_response_counts_accepts_each_count_only() -> None:
    import re

    from server.training.structured import RegexFor

    regex = re.compile(RegexFor(TemplateName.GENERIC, 128, 3.0).union([2, 3, 2]))
    text = "Specific Criteria: c.\nAnalysis: a.\nScores: \\boxed{{{}}}"
    assert regex.fullmatch(text.format("2, 9")) and regex.fullmatch(text.format("2, 9, 4"))
    assert not regex.fullmatch(text.format("9")) and not regex.fullmatch(text.format("2, 11"))


def test_grpo_prompts_are_the_served_prompts_with_the_label_remapped() -> None:
    loaded = load_training_items([SAMPLE], seed=3).items
    raw = {r["id"]: r for r in map(json.loads, SAMPLE.read_text().splitlines())}
    rows = prompt_rows(loaded, TemplateName.GENERIC)
    assert {tuple(i.perm) for i in loaded} == {(0, 1), (1, 0)}  # some items shown swapped
    for item, row in zip(loaded, rows, strict=True):
        assert row["prompt"] == [{"role": "user", "content": GENERIC.build(item.conversation(), item.responses)}]
        assert item.responses[row["label"]] == raw[item.id]["responses"][raw[item.id]["label"]]
        assert "The best response is" not in row["prompt"][0]["content"]


def test_spct_reward_function_logs_correct_and_unparseable_shares() -> None:
    logged: dict[str, float] = {}
    good = [{"role": "assistant", "content": "Specific Criteria: c.\nAnalysis: a.\nScores: \\boxed{2, 9}"}]
    tied = [{"role": "assistant", "content": "Specific Criteria: c.\nAnalysis: a.\nScores: \\boxed{9, 9}"}]
    cut = [{"role": "assistant", "content": "Specific Criteria: c.\nAnalysis: a."}]
    rewards = spct_reward([None] * 3, [good, tied, cut], n=[2, 2, 2], label=[1, 1, 1], log_metric=logged.__setitem__)
    assert rewards == [1.0, -1.0, -1.0]
    assert logged == {"spct/correct_share": pytest.approx(1 / 3), "spct/unparseable_share": pytest.approx(1 / 3)}


def test_pass_rates_leave_out_items_without_signal(tmp_path: Path) -> None:
    items = load_training_items([SAMPLE], seed=0).items
    rates = [0.0, 1.0, 0.5, None]
    stats = {"per_item": {i.key: {"pass_rate": r} for i, r in zip(items, rates, strict=False) if r is not None}}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    kept, left = left_out_by_pass_rate(items, path)
    assert [i.key for i in kept] == [items[2].key, *(i.key for i in items[3:])]
    assert left == {"pass_rate_0": 1, "pass_rate_1": 1}


def test_rows_with_a_hint_left_in_the_prompt_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rft.jsonl"
    row = {
        "prompt": [{"role": "user", "content": "judge\n" + hint_text(1)}],
        "completion": [{"role": "assistant", "content": "x"}],
    }
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="hint"):
        read_rows(path)
    path.write_text(json.dumps({"text": "plain"}) + "\n")
    with pytest.raises(ValueError, match="prompt-completion"):
        read_rows(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sft", "--data", "{tmp}/missing.jsonl", "--out", "{tmp}/o"], "is not a file"),
        (["sft", "--data", "{tmp}/rows.jsonl", "--out", "{tmp}/o"], "no --model and no manifest.json"),
        (["grpo", "{tmp}/rows.jsonl", "--model", "m", "--out", "{tmp}/o"], "not a known benchmark format"),
        (["grpo", str(SAMPLE), "--model", "m", "--out", "{tmp}/o", "--num-generations", "1"], "--num-generations"),
        (["grpo", str(SAMPLE), "--model", "m", "--out", "{tmp}/o", "--lora-rank", "-1"], "--lora-rank"),
        (["grpo", str(SAMPLE), "--model", "m", "--out", "{tmp}/o", "--batch-size", "6"], "--batch-size"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    result = CliRunner().invoke(app, ["train", *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_export_verl_writes_prompts_scored_by_compute_score(tmp_path: Path) -> None:
    from datasets import Dataset

    from server.training.reward import compute_score

    out = tmp_path / "verl.parquet"
    result = CliRunner().invoke(app, ["train", "export-verl", str(SAMPLE), "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    rows = Dataset.from_parquet(str(out)).to_list()
    expected = prompt_rows(load_training_items([SAMPLE], seed=3).items, TemplateName.GENERIC)
    assert [r["prompt"] for r in rows] == [e["prompt"] for e in expected]
    for row, e in zip(rows, expected, strict=True):
        best = e["label"]
        scores = ", ".join("9" if i == best else "2" for i in range(e["n"]))
        text = f"Specific Criteria: c.\nAnalysis: a.\nScores: \\boxed{{{scores}}}"
        assert compute_score(row["data_source"], text, row["reward_model"]["ground_truth"]) == 1.0


def test_gpu_recipe_configs_are_deepspeed_zero3() -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    configs = sorted((Path(__file__).resolve().parents[1] / "deploy" / "training").glob("*.yaml"))
    assert configs
    for path in configs:
        config = ClusterConfig.from_yaml_file(str(path))
        assert config.distributed_type == "DEEPSPEED" and config.mixed_precision == "bf16"
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"]
