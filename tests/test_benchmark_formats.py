"""Published benchmark formats: detection, conversion, bad files (exit 2, no traceback), a run with official scores."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from server.cli import app as cli_app
from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.evaluation.benchmarks.official import official_scores
from server.evaluation.evaluate import EvalOptions, evaluate
from server.evaluation.formats import FormatError, load_benchmark
from server.evaluation.formats.registry import REGISTRY, fits
from server.evaluation.scorers import ServiceScorer
from tests.conftest import ROOT
from tests.fakes import ScriptedGenerator, shown_responses

DATA = ROOT / "tests" / "data" / "benchmarks"
PUBLISHED = DATA / "published"
DEV_SAMPLE = ROOT / "tests" / "data" / "dev_sample.jsonl"
GEN_DOC = ROOT / "deploy" / "gen_benchmark_doc.py"


def source_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a fixture read independently of the readers: a JSON list, or one object per line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows = json.loads(text)
        assert isinstance(rows, list)
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def judged_as_labelled(items: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], tuple[float, ...]]]:
    """What the official scorer gets from a judge that gives the labelled response 9 and the others 1, and every
    response the same score where the label is a tie (PandaLM's tie-majority rows)."""
    out = []
    for item in items:
        label = item["label"]
        rewards = tuple(5.0 if label is None else 9.0 if i == label else 1.0 for i in range(len(item["responses"])))
        record = {"id": item["id"], "perm": list(range(len(item["responses"]))), "label": label}
        out.append((record, item["meta"], rewards))
    return out


# file, format, items per row, the official score's keys for a judge that always prefers the labelled response
PUBLISHED_FILES = [
    ("rm-bench_chat_filtered.json", "rm-bench", 9, {"hard": 100.0, "normal": 100.0, "easy": 100.0, "avg": 100.0}),
    ("rm-bench_code_filtered.json", "rm-bench", 9, {"hard": 100.0, "normal": 100.0, "easy": 100.0, "avg": 100.0}),
    ("rm-bench_safety-refuse_filtered.json", "rm-bench", 9, {"hard": 100.0, "normal": 100.0, "easy": 100.0, "avg": 100.0}),
    ("rm-bench_safety-response_filtered.json", "rm-bench", 9, {"hard": 100.0, "normal": 100.0, "easy": 100.0, "avg": 100.0}),
    ("pandalm_testset-v1.json", "pandalm", 1, {"accuracy": 100.0, "precision": 100.0, "recall": 100.0, "f1": 100.0}),
    ("judgebench_claude.jsonl", "judgebench", 1, {"accuracy": 100.0}),
    ("judgebench_gpt-4o.jsonl", "judgebench", 1, {"accuracy": 100.0}),
    ("rmb_pairwise_harmlessness_S1.json", "rmb-pairwise", 1, {"accuracy": 100.0}),
    ("rmb_pairwise_helpfulness_chat_discussion.json", "rmb-pairwise", 1, {"accuracy": 100.0}),
    ("rmb_bon_harmlessness_S1.json", "rmb-bon", 1, {"accuracy": 100.0}),
    ("rmb_bon_helpfulness_chat_discussion.json", "rmb-bon", 1, {"accuracy": 100.0}),
]  # fmt: skip
RM_DOMAIN = {"chat": "chat", "code": "code", "safety-refuse": "safety", "safety-response": "safety"}


@pytest.mark.parametrize(("name", "fmt", "per_row", "score"), PUBLISHED_FILES)
def test_each_published_file_is_detected_converted_without_loss_and_scored(
    name: str, fmt: str, per_row: int, score: dict[str, float]
) -> None:
    rows = source_rows(PUBLISHED / name)
    items, found = load_benchmark(PUBLISHED / name)
    assert found == fmt
    assert len(items) == per_row * len(rows) and len({i["id"] for i in items}) == len(items)
    assert all(i["meta"]["benchmark"] == fmt for i in items)
    entry = REGISTRY[fmt]
    assert entry.score is not None
    # PandaLM's tie-majority row is scored too (a tie is its third label), as the run does
    official = entry.score(
        judged_as_labelled(items if entry.scores_ties else [i for i in items if i["label"] is not None])
    )
    assert {k: v for k, v in official.items() if k in score} == score
    if fmt == "rm-bench":
        domain = name.removeprefix("rm-bench_").removesuffix("_filtered.json")
        assert {i["meta"]["domain"] for i in items} == {domain}
        assert set(official["per_domain"]) == {RM_DOMAIN[domain]}
        assert set(official["per_domain"][RM_DOMAIN[domain]]) == {"hard", "normal", "easy", "avg"}


def test_published_rows_convert_to_what_the_scoring_needs() -> None:
    rm, _ = load_benchmark(PUBLISHED / "rm-bench_chat_filtered.json")
    row = source_rows(PUBLISHED / "rm-bench_chat_filtered.json")[0]
    assert {(i["meta"]["chosen_style"], i["meta"]["rejected_style"]) for i in rm[:9]} == {
        (a, b) for a in range(3) for b in range(3)
    }
    assert rm[5]["responses"] == [row["chosen"][1], row["rejected"][2]] and rm[5]["id"] == f"{row['id']}:c1r2"
    panda_rows = source_rows(PUBLISHED / "pandalm_testset-v1.json")
    panda, _ = load_benchmark(PUBLISHED / "pandalm_testset-v1.json")
    votes = [[r[f"annotator{k}"] for k in (1, 2, 3)] for r in panda_rows]
    majority = [max(set(v), key=v.count) for v in votes]
    assert [i["meta"]["majority"] for i in panda] == majority and 0 in majority
    assert [i["label"] for i in panda] == [None if m == 0 else m - 1 for m in majority]
    assert [i["responses"] for i in panda] == [[r["response1"], r["response2"]] for r in panda_rows]
    assert panda[0]["prompt"] == f"{panda_rows[0]['instruction']}\n\n{panda_rows[0]['input']}"
    jb_rows = source_rows(PUBLISHED / "judgebench_gpt-4o.jsonl")
    jb, _ = load_benchmark(PUBLISHED / "judgebench_gpt-4o.jsonl")
    assert [i["label"] for i in jb] == [0 if r["label"] == "A>B" else 1 for r in jb_rows] == [0, 1]
    bon_rows = source_rows(PUBLISHED / "rmb_bon_harmlessness_S1.json")
    bon, _ = load_benchmark(PUBLISHED / "rmb_bon_harmlessness_S1.json")
    assert [len(i["responses"]) for i in bon] == [1 + len(r["loser_list"]) for r in bon_rows]
    assert all(m["role"] in ("user", "assistant", "system") for i in bon for m in i["prompt"])


def test_pandalm_answers_stored_as_json_scalars_become_text(tmp_path: Path) -> None:
    """testset-v1.json stores some answers as JSON `true` (rows 157-164): read as the text, not refused."""
    row = source_rows(PUBLISHED / "pandalm_testset-v1.json")[0]
    (tmp_path / "testset-v1.json").write_text(json.dumps([{**row, "response1": True, "response2": 3}]))
    items, _ = load_benchmark(tmp_path / "testset-v1.json")
    assert items[0]["responses"] == ["True", "3"]


@pytest.mark.parametrize(
    ("name", "fmt", "n_items", "labels", "n_responses"),
    [
        ("rewardbench.jsonl", "rewardbench", 3, [0, 0, 0], [2, 2, 2]),
        ("rewardbench2.jsonl", "rewardbench2", 3, [0, 0, 0], [4, 4, 5]),
        ("rm_bench_total_dataset.json", "rm-bench", 9, [0] * 9, [2] * 9),
        ("ppe_human_preference.jsonl", "ppe-preference", 3, [0, 1, None], [2, 2, 2]),
        ("ppe_correctness_math.jsonl", "ppe-correctness", 2, [0, 1], [4, 4]),
    ],
)  # fmt: skip
def test_hub_only_layouts_are_detected_and_normalized(
    name: str, fmt: str, n_items: int, labels: list[int | None], n_responses: list[int]
) -> None:
    """Hand-made rows in the column layout of the sets published only on the hub (and RM-Bench's total file)."""
    items, found = load_benchmark(DATA / name)
    assert found == fmt and len(items) == n_items and [i["label"] for i in items] == labels
    assert [len(i["responses"]) for i in items] == n_responses
    assert all(i["meta"]["benchmark"] == fmt for i in items) and len({i["id"] for i in items}) == n_items
    dev, found = load_benchmark(DEV_SAMPLE)
    assert found == "normalized" and len(dev) == len(source_rows(DEV_SAMPLE))


def test_conversions_keep_what_the_scoring_needs() -> None:
    rb2, _ = load_benchmark(DATA / "rewardbench2.jsonl")
    assert [i["meta"]["num_correct"] for i in rb2] == [1, 1, 3] and rb2[2]["responses"][:3] == ["7", "11", "13"]
    rm, _ = load_benchmark(DATA / "rm_bench_total_dataset.json")
    assert {i["meta"]["domain"] for i in rm} == {"chat"}
    ppe, _ = load_benchmark(DATA / "ppe_correctness_math.jsonl")
    assert ppe[0]["meta"]["conflict_pairs"] == [[0, 1], [2, 3]] and "conflict_pairs" not in ppe[1]["meta"]


def test_every_fixture_row_fits_exactly_one_entry_strictly() -> None:
    """The distinguishing features keep the strict fits apart on every row of every fixture."""
    for path in [*PUBLISHED.glob("*.json*"), *DATA.glob("r*.json*"), *DATA.glob("ppe*.jsonl"), DEV_SAMPLE]:
        for row in source_rows(path):
            strict, _ = fits(row)
            assert len(strict) == 1, (path.name, strict)


def test_format_can_be_forced_and_a_wrong_force_names_the_field() -> None:
    items, found = load_benchmark(DATA / "rewardbench.jsonl", "rewardbench")
    assert found == "rewardbench" and len(items) == 3
    with pytest.raises(FormatError, match=r"judgebench_gpt-4o.jsonl, line 1: missing field 'subset'"):
        load_benchmark(PUBLISHED / "judgebench_gpt-4o.jsonl", "rewardbench")


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


def _loose_rmbench_row() -> dict[str, Any]:
    """A published RM-Bench row stripped of what tells it from RewardBench 2: its error fields and known subset."""
    row = source_rows(PUBLISHED / "rm-bench_chat_filtered.json")[0]
    return {k: v for k, v in row.items() if k not in ("error_key", "error")} | {"subset": "my-chat"}


def _ambiguous_row() -> dict[str, Any]:
    jb = source_rows(PUBLISHED / "judgebench_gpt-4o.jsonl")[0]
    return {**jb, **source_rows(PUBLISHED / "rmb_pairwise_harmlessness_S1.json")[0]}


def _shape_change() -> list[dict[str, Any]]:
    return [source_rows(PUBLISHED / "judgebench_gpt-4o.jsonl")[0], _loose_rmbench_row() | {"domain": "chat"}]


def _write(rows: list[dict[str, Any]], path: Path) -> Path:
    text = json.dumps(rows) if path.suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("rows", "suffix", "needles"),
    [
        ([_loose_rmbench_row()], ".json", ["row 1", "resembles rewardbench2 or rm-bench", "--format NAME (one of rewardbench2, rm-bench)"]),
        ([_ambiguous_row()], ".jsonl", ["line 1", "fits several formats: judgebench, rmb-pairwise", "--format"]),
    ],
)  # fmt: skip
def test_ambiguous_or_loose_rows_exit_2_in_a_subprocess(
    rows: list[dict[str, Any]], suffix: str, needles: list[str], tmp_path: Path
) -> None:
    """Never a guess: the real CLI exits 2 naming the candidates and --format, or the line where the shape changes."""
    path = _write(rows, tmp_path / f"data{suffix}")
    cmd = [sys.executable, "-m", "server.cli", "eval", str(path), "--out", str(tmp_path / "o"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ), cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    text = " ".join(proc.stderr.split())
    assert all(n in text for n in needles), text
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("suffix", "where"), [(".jsonl", ", line 2:"), (".json", ": row 2:")])
def test_a_file_whose_rows_change_shape_names_the_line(suffix: str, where: str, tmp_path: Path) -> None:
    path = _write(_shape_change(), tmp_path / f"data{suffix}")
    with pytest.raises(FormatError) as exc:
        load_benchmark(path)
    text = str(exc.value)
    assert text.startswith(f"{path}{where} the rows change shape here: this row reads as rm-bench; "), text
    assert "missing field 'question' of judgebench" in text and "reads as judgebench" in text


def test_official_scores_refuse_unknown_benchmarks_and_name_missing_scorers() -> None:
    record = {"key": "f:1", "id": "1", "n": 2, "perm": [0, 1], "label": 0}
    out = official_scores([record], {"f:1": {"benchmark": "normalized"}})
    assert out["normalized"]["voting"] is None and "no official scorer" in out["normalized"]["note"]
    with pytest.raises(ValueError, match="unknown benchmark 'mystery'; accepted: rewardbench"):
        official_scores([record], {"f:1": {"benchmark": "mystery"}})


def test_a_loose_file_reads_with_format_forced(tmp_path: Path) -> None:
    path = tmp_path / "chat_filtered.json"  # the per-domain file's own name gives the domain
    path.write_text(json.dumps([_loose_rmbench_row()]), encoding="utf-8")
    items, found = load_benchmark(path, "rm-bench")
    assert found == "rm-bench" and len(items) == 9 and {i["meta"]["domain"] for i in items} == {"chat"}


def test_the_detected_format_of_every_file_prints_before_judging(monkeypatch: pytest.MonkeyPatch) -> None:
    import server.cli.eval as eval_cli

    started: list[bool] = []

    async def judging_starts(*args: Any) -> dict[str, Any]:
        started.append(True)
        raise ValueError("judging stops here")

    monkeypatch.setattr(eval_cli, "run_evaluation", judging_starts)
    files = [PUBLISHED / "rm-bench_chat_filtered.json", PUBLISHED / "pandalm_testset-v1.json"]
    result = CliRunner().invoke(cli_app, ["eval", *map(str, files), "--out", "/nonexistent/o", "--no-progress"])
    assert result.exit_code == 2 and started, result.output
    out = " ".join(result.output.split())
    first = out.index(f"{files[0]}: rm-bench (detected), 18 items")
    second = out.index(f"{files[1]}: pandalm (detected), 4 items")
    assert first < second < out.index("judging stops here")


def _deploy_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verify_script_checks_files_against_the_expected_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verify = _deploy_script(ROOT / "deploy" / "verify_benchmarks.py")
    files = sorted(PUBLISHED.glob("rm-bench_*.json"))
    assert verify.main(["--expect", "rm-bench", *map(str, files), "--json", str(tmp_path / "v.json")]) == 0
    rows = json.loads((tmp_path / "v.json").read_text())
    assert [r["items"] for r in rows] == [9 * len(source_rows(f)) for f in files] and all(r["ok"] for r in rows)
    assert verify.main(["--expect", "pandalm", str(PUBLISHED / "judgebench_claude.jsonl")]) == 1
    assert verify.main([str(DATA / "bad_unknown.jsonl")]) == 1
    assert "0 of 1 files" in capsys.readouterr().out


def test_docs_table_is_generated_from_the_registry() -> None:
    gen = _deploy_script(GEN_DOC)
    committed = (ROOT / "docs" / "standard_benchmarks.md").read_text(encoding="utf-8")
    assert committed == gen.render(committed), "the table is stale: run python deploy/gen_benchmark_doc.py"
    assert all(f"| `{name}` |" in committed for name in REGISTRY)


def first_shown_wins(prompt: str, index: int) -> str:
    """A judge with pure position bias: 9 for whatever it sees first, 2 for the rest."""
    scores = [9 if pos == 0 else 2 for pos in range(len(shown_responses(prompt)))]
    return f"Specific Criteria: order.\nAnalysis: sample {index}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


async def test_official_scores_of_a_position_biased_judge_over_every_format(tmp_path: Path) -> None:
    """Rotating orders, Voting@2 of a first-shown-wins judge ties every pair: no official credit anywhere, position
    consistency 0, and JudgeBench's both-orders rule calls every pair inconsistent (hand-derived)."""
    gen = ScriptedGenerator(judge=first_shown_wins)
    svc = JudgeService(gen, PromptBuilder(TemplateName.GENERIC), Settings())
    paths = [
        DATA / "rewardbench.jsonl",
        PUBLISHED / "judgebench_gpt-4o.jsonl",
        PUBLISHED / "rm-bench_safety-refuse_filtered.json",
        PUBLISHED / "rmb_pairwise_harmlessness_S1.json",
    ]
    opts = EvalOptions(data=tuple(paths), out=tmp_path, ks=(2,), progress=False, resamples=50)
    results = await evaluate(ServiceScorer(svc), opts, log=lambda _: None)
    official = results["official"]
    assert set(official) == {"rewardbench", "judgebench", "rm-bench", "rmb-pairwise"}
    assert results["items"]["formats"]["judgebench_gpt-4o.jsonl"] == "judgebench"
    assert official["rm-bench"]["items"] == 18 and set(official["rm-bench"]["voting"]["per_domain"]) == {"safety"}
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


async def test_pandalm_tie_rows_are_judged_for_the_official_score_and_left_out_of_accuracy(tmp_path: Path) -> None:
    """PandaLM scores 3 labels (0 tie, 1, 2) against the annotators' majority, so its tie rows are judged; accuracy
    rows have no labelled response for them. Voting@2 of a first-shown-wins judge ties every pair (rotated orders):
    predicted all ties against majorities [2, 1, 0, 1] -> accuracy 1/4, macro precision (1/4 + 0 + 0) / 3,
    recall (1 + 0 + 0) / 3, F1 (0.4 + 0 + 0) / 3 (hand-derived)."""
    gen = ScriptedGenerator(judge=first_shown_wins)
    svc = JudgeService(gen, PromptBuilder(TemplateName.GENERIC), Settings())
    opts = EvalOptions(
        data=(PUBLISHED / "pandalm_testset-v1.json",), out=tmp_path, ks=(2,), progress=False, resamples=50
    )
    results = await evaluate(ServiceScorer(svc), opts, log=lambda _: None)
    entry = results["official"]["pandalm"]
    assert entry["items"] == 4 and entry["voting"] == {
        "accuracy": 25.0,
        "precision": 8.33,
        "recall": 33.33,
        "f1": 13.33,
    }
    assert results["items"]["evaluated"] == 3 and results["items"]["excluded"] == {"tie_official_score_only": 1}
    assert "tie" not in results["items"]["skipped"]
    records = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert sorted(r["label"] is None for r in records) == [False, False, False, True]


@pytest.mark.live
def test_native_judgebench_file_end_to_end_on_the_live_server(live_url: str, tmp_path: Path) -> None:
    """The published JudgeBench layout, judged by the real CPU engine: official scores and the paper table print."""
    cmd = [
        sys.executable, "-m", "server.cli", "eval", str(PUBLISHED / "judgebench_gpt-4o.jsonl"), "--url", live_url,
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
