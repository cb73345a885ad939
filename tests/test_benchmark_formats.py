"""Published benchmark formats: detection, conversion, bad files (exit 2, no traceback), a run with official scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.cli import app as cli_app
from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.evaluation.evaluate import EvalOptions, evaluate
from server.evaluation.formats import FormatError, load_benchmark
from server.evaluation.scorers import ServiceScorer
from tests.conftest import ROOT
from tests.fakes import ScriptedGenerator, shown_responses

DATA = ROOT / "tests" / "data" / "benchmarks"
DEV_SAMPLE = ROOT / "tests" / "data" / "dev_sample.jsonl"


@pytest.mark.parametrize(
    ("name", "fmt", "n_items", "labels", "n_responses"),
    [
        ("rewardbench.jsonl", "rewardbench", 3, [0, 0, 0], 2),
        ("rewardbench2.jsonl", "rewardbench2", 3, [0, 0, 0], 4),
        ("rm_bench_total_dataset.json", "rm-bench", 9, [0] * 9, 2),
        ("judgebench_gpt-4o.jsonl", "judgebench", 2, [0, 1], 2),
        ("ppe_human_preference.jsonl", "ppe-preference", 3, [0, 1, None], 2),
        ("ppe_correctness_math.jsonl", "ppe-correctness", 2, [0, 1], 4),
        ("rmb_pairwise_brainstorming.json", "rmb-pairwise", 2, [0, 0], 2),
        ("rmb_bon_python.json", "rmb-bon", 1, [0], 3),
        ("pandalm_testset-v1.json", "pandalm", 3, [0, 1, None], 2),
        ("../dev_sample.jsonl", "normalized", None, None, None),
    ],
)  # fmt: skip
def test_each_published_format_is_detected_and_normalized(
    name: str, fmt: str, n_items: int | None, labels: list[int | None] | None, n_responses: int | None
) -> None:
    items, found = load_benchmark(DATA / name)
    assert found == fmt
    if n_items is not None:
        assert len(items) == n_items and [i["label"] for i in items] == labels
        assert all(len(i["responses"]) == n_responses or fmt == "rewardbench2" for i in items)
        assert all(i["meta"]["benchmark"] for i in items) and len({i["id"] for i in items}) == n_items
    assert all(isinstance(r, str) for i in items for r in i["responses"])


def test_conversions_keep_what_the_scoring_needs() -> None:
    rb2, _ = load_benchmark(DATA / "rewardbench2.jsonl")
    assert [i["meta"]["num_correct"] for i in rb2] == [1, 1, 3] and rb2[2]["responses"][:3] == ["7", "11", "13"]
    rm, _ = load_benchmark(DATA / "rm_bench_total_dataset.json")
    assert {(i["meta"]["chosen_style"], i["meta"]["rejected_style"]) for i in rm} == {
        (a, b) for a in range(3) for b in range(3)
    }
    rmb, _ = load_benchmark(DATA / "rmb_pairwise_brainstorming.json")
    assert [m["role"] for m in rmb[1]["prompt"]] == ["user", "assistant", "user"]
    panda, _ = load_benchmark(DATA / "pandalm_testset-v1.json")
    assert [i["meta"]["majority"] for i in panda] == [1, 2, 0]
    assert panda[0]["prompt"] == "Fix the grammar.\n\nShe go to school."
    ppe, _ = load_benchmark(DATA / "ppe_correctness_math.jsonl")
    assert ppe[0]["meta"]["conflict_pairs"] == [[0, 1], [2, 3]] and "conflict_pairs" not in ppe[1]["meta"]


def test_format_can_be_forced_and_a_wrong_force_names_the_field() -> None:
    items, found = load_benchmark(DATA / "rewardbench.jsonl", "rewardbench")
    assert found == "rewardbench" and len(items) == 3
    with pytest.raises(FormatError, match=r"judgebench_gpt-4o.jsonl, line 1: missing field 'subset'"):
        load_benchmark(DATA / "judgebench_gpt-4o.jsonl", "rewardbench")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["bad_truncated.json"], ["bad_truncated.json, line 2", "invalid JSON", "accepted formats"]),
        (["bad_missing_field.jsonl"], ["bad_missing_field.jsonl, line 2", "missing field 'response_B'", "judgebench"]),
        (["bad_unknown.jsonl"], ["not a known benchmark format", "fields: ['text']", "rm-bench", "--format"]),
        (["no_such_file.jsonl"], ["no such file"]),
        (["allenai/reward-bench"], ["allenai/reward-bench", "pass a downloaded file"]),
        (["rewardbench.jsonl", "--format", "nope"], ["--format must be one of"]),
    ],
)  # fmt: skip
def test_bad_files_exit_2_with_a_clear_message(
    args: list[str], needles: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(DATA)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without `datasets`: no hub access
    result = CliRunner().invoke(cli_app, ["eval", *args, "--out", "/nonexistent/o", "--no-progress"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert all(n in text for n in needles), text
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, AttributeError))


def test_bad_file_in_a_subprocess_exits_2_without_a_traceback() -> None:
    cmd = [sys.executable, "-m", "server.cli", "eval", str(DATA / "bad_missing_field.jsonl"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ), cwd=ROOT)
    assert proc.returncode == 2
    assert "line 2: missing field 'response_B'" in proc.stderr and "Traceback" not in proc.stderr


def first_shown_wins(prompt: str, index: int) -> str:
    """A judge with pure position bias: 9 for whatever it sees first, 2 for the rest."""
    scores = [9 if pos == 0 else 2 for pos in range(len(shown_responses(prompt)))]
    return f"Specific Criteria: order.\nAnalysis: sample {index}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


async def test_official_scores_of_a_position_biased_judge_over_every_format(tmp_path: Path) -> None:
    """Rotating orders, Voting@2 of a first-shown-wins judge ties every pair: no official credit anywhere, position
    consistency 0, and JudgeBench's both-orders rule calls every pair inconsistent (hand-derived)."""
    gen = ScriptedGenerator(judge=first_shown_wins)
    svc = JudgeService(gen, PromptBuilder(TemplateName.GENERIC), Settings())
    names = [
        "rewardbench.jsonl",
        "judgebench_gpt-4o.jsonl",
        "rm_bench_total_dataset.json",
        "rmb_pairwise_brainstorming.json",
    ]
    opts = EvalOptions(data=tuple(DATA / n for n in names), out=tmp_path, ks=(2,), progress=False, resamples=50)
    results = await evaluate(ServiceScorer(svc), opts, log=lambda _: None)
    official = results["official"]
    assert set(official) == {"rewardbench", "judgebench", "rmbench", "rmb_pairwise"}
    assert results["items"]["formats"]["judgebench_gpt-4o.jsonl"] == "judgebench"
    assert official["rmbench"]["items"] == 9
    for entry in official.values():
        assert entry["position_consistency"] == 0.0
        voting = entry["voting"]
        assert all(v == 0.0 for v in voting.values() if isinstance(v, float)), voting
    assert official["judgebench"]["both_orders"] == {"accuracy": 0.0, "inconsistent": 100.0, "pairs": 2}
    assert official["rewardbench"]["voting"]["Score"] == 0.0 and official["rewardbench"]["voting"]["Reasoning"] is None
    # greedy sees one order: it is right exactly when the labelled response happened to be shown first
    records = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    jb = [r for r in records if r["file"] == "judgebench_gpt-4o.jsonl"]
    first = [r["greedy"]["samples"][0]["order"][0] == r["label"] for r in jb]
    assert official["judgebench"]["greedy"]["accuracy"] == 100 * sum(first) / len(first)
    assert DEV_SAMPLE.is_file()


@pytest.mark.live
def test_native_judgebench_file_end_to_end_on_the_live_server(live_url: str, tmp_path: Path) -> None:
    """The published JudgeBench layout, judged by the real CPU engine: official scores and the paper table print."""
    cmd = [
        sys.executable, "-m", "server.cli", "eval", str(DATA / "judgebench_gpt-4o.jsonl"), "--url", live_url,
        "--out", str(tmp_path), "--k", "1,2", "--max-tokens", "112", "--concurrency", "1", "--resamples", "50",
        "--no-progress", "--paper-table",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "official judgebench (voting, 2 items)" in proc.stdout and "ours / paper" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["items"]["formats"] == {"judgebench_gpt-4o.jsonl": "judgebench"}
    entry = results["official"]["judgebench"]
    assert entry["items"] == 2
    for method in ("greedy", "voting"):
        if entry[method] is not None:  # None only when no judgment of that kind parsed
            assert 0.0 <= entry[method]["accuracy"] <= 100.0
    if "both_orders" in entry:
        both = entry["both_orders"]
        assert both["accuracy"] + both["inconsistent"] <= 100.0 and both["pairs"] <= 2
        assert 0.0 <= entry["position_consistency"] <= 100.0


def test_parquet_files_read_like_json(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (DATA / "rewardbench2.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("additional_metadata")  # an empty struct has no parquet type
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    items, found = load_benchmark(tmp_path / "test-00000-of-00001.parquet")
    assert found == "rewardbench2" and items == load_benchmark(DATA / "rewardbench2.jsonl")[0]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FormatError, match="broken.parquet: not a readable parquet file"):
        load_benchmark(tmp_path / "broken.parquet")
