"""`grm-server reproduce`: the paper's table from eval records (scripted engines), and end to end on the CPU
with the embedded GRM and Meta RM at tiny scale (a real engine in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.evaluation.evaluate import EvalOptions, evaluate
from server.evaluation.reproduce import PAPER, benchmark_of, format_reproduce, reproduce_table
from server.evaluation.runner import ITEMS_FILE, load_records
from server.evaluation.scorers import ServiceScorer
from server.evaluation.sweep import HALF
from tests.conftest import ROOT
from tests.fakes import ScriptedGenerator, ScriptedMetaRM, score_by_length

SAMPLE = ROOT / "tests" / "data" / "dev_sample.jsonl"


def write_benchmarks(path: Path) -> Path:
    sources = ["reward_bench/chat", "RMB/helpfulness", "llmbar/natural"]
    rows: list[dict[str, Any]] = [
        {"id": f"q{i}", "source": sources[i % 3], "category": None, "prompt": f"Question {i}?",
         "responses": [f"a longer, better answer {i}", f"short {i}"], "label": i % 2, "meta": {}}
        for i in range(9)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("source", "column"),
    [("reward_bench/chat", "Reward Bench"), ("RMB/x/y", "RMB"), ("ppe_correctness/math", "PPE-Corr"),
     ("PPE-Pref", "PPE-Pref"), ("llmbar/natural", "llmbar")],
)  # fmt: skip
def test_benchmark_columns(source: str, column: str) -> None:
    assert benchmark_of(source) == column


async def test_reproduce_table_from_eval_records(tmp_path: Path) -> None:
    def judge(prompt: str, i: int) -> str:  # every other judgment is cut before its box
        text = score_by_length(prompt, i)
        return text[: text.index("Scores")] + "and so" if i % 2 else text

    gen = ScriptedGenerator(judge=judge)
    svc = JudgeService(gen, PromptBuilder(TemplateName.DEEPSEEK_GRM), Settings(), meta_rm=ScriptedMetaRM())
    out = tmp_path / "run"
    options = EvalOptions(
        data=(write_benchmarks(tmp_path / "b.jsonl"),),
        out=out,
        ks=(1, 8, 32),
        k_meta=(HALF,),
        progress=False,
        resamples=50,
    )
    results = await evaluate(ServiceScorer(svc), options)
    table = reproduce_table(results, load_records(out / ITEMS_FILE))
    assert table["columns"][:4] == ["Reward Bench", "PPE-Pref", "PPE-Corr", "RMB"] and "llmbar" in table["columns"]
    rows = {r["name"]: r for r in table["rows"]}
    assert rows["greedy"]["paper"] == dict(
        zip(("Reward Bench", "PPE-Pref", "PPE-Corr", "RMB", "Overall"), PAPER["greedy"], strict=True)
    )
    assert rows["voting@32"]["paper"]["Overall"] == 71.0 and rows["metarm@32 (k_meta=16)"]["paper"]["Overall"] == 72.8
    assert rows["voting@8"]["paper"] is None
    for r in table["rows"]:
        assert r["n"] == {"Reward Bench": 3, "RMB": 3, "llmbar": 3}
        assert r["overall_over"] == ["Reward Bench", "RMB"]  # the paper's benchmarks present, not llmbar
        assert r["overall"] == pytest.approx((r["accuracy"]["Reward Bench"] + r["accuracy"]["RMB"]) / 2, abs=0.051)
    # half the sampled judgments were cut and completed; greedy samples index 0 only, never cut
    assert table["judgments"]["sampled"]["completed_share"] == 0.5
    assert rows["voting@32"]["completed_share"] == 0.5 and rows["greedy"]["completed_share"] == 0.0
    per = table["judgments"]["sampled"]["tokens_per_judgment"]
    assert per and rows["voting@32"]["tokens_per_item"] == round(per * 32) == 4 * rows["voting@8"]["tokens_per_item"]
    text = format_reproduce(table)
    assert "(86.0)" in text and "(72.8)" in text and "50.0%" in text


@pytest.mark.engine
def test_reproduce_runs_end_to_end_on_the_cpu_with_the_embedded_models(tmp_path: Path) -> None:
    out = tmp_path / "repro"
    cmd = [
        sys.executable, "-m", "server.cli", "reproduce", str(SAMPLE), "--model", "embedded", "--meta-rm", "embedded",
        "--k", "1,2", "--limit", "2", "--max-tokens", "32", "--structured-output", "free+complete",
        "--max-model-len", "4096", "--concurrency", "1", "--resamples", "50", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(86.0)" in proc.stdout and "tokens/item" in proc.stdout
    table = json.loads((out / "reproduce.json").read_text())
    names = [r["name"] for r in table["rows"]]
    assert names[:3] == ["greedy", "voting@1", "voting@2"] and any(n.startswith("metarm@2") for n in names)
    assert table["items"]["evaluated"] == 2  # --limit 2 from the one file
    assert table["judgments"]["sampled"]["completed_share"] == 1.0  # 32 tokens never finish: all completed
    assert all(r["tokens_per_item"] and r["tokens_per_item"] > 0 for r in table["rows"])
    records = load_records(out / ITEMS_FILE)
    assert all(r["sampled"]["valid"] == 2 for r in records)  # every completed judgment voted
