"""`train rft`: judgments sampled through the judging service, labelled by the SPCT rule, all-correct items dropped,
hinted sampling for items with none correct (hint removed from the training prompt, share capped), resume, bad input."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from server.cli.main import app
from server.core.generators.base import Generation, Partial, SamplingConfig
from server.core.generators.vllm_local import VLLMGenerator
from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.evaluation.data import EvalItem
from server.training.data import load_training_items
from server.training.reward import HINT_PREFIX, has_hint, hint_text, judgment_correct
from server.training.rft import RECORDS, SamplingOptions, read_records, run_rft
from server.training.rft_output import ALL_CORRECT, HINT_CAP, NO_CORRECT, POSITION_BALANCE, select_rows
from tests.conftest import shortest_labelled_items
from tests.fakes import ScriptedGenerator, shown_responses

SAMPLE = Path(__file__).parent / "data" / "dev_sample.jsonl"
GENERIC = PromptBuilder(TemplateName.GENERIC)


MODES = ("all", "some", "none")


def mode(item: EvalItem) -> str:
    """How the scripted judge treats an item: always right, right on even samples, or wrong unless hinted."""
    return MODES[sum(map(len, item.responses)) % 3]


def obeying_judge(chosen: list[EvalItem]) -> Any:
    """A judge that knows the labels: `mode(item)` decides, and a hint is always obeyed."""
    known = {tuple(sorted(i.responses)): i for i in chosen}

    def judge(prompt: str, index: int) -> str:
        shown = shown_responses(prompt)
        item = known[tuple(sorted(shown))]
        best = shown.index(item.responses[item.label])
        if HINT_PREFIX in prompt:
            best = int(prompt.rsplit(HINT_PREFIX, 1)[1].split()[0]) - 1
        elif mode(item) == "none" or (mode(item) == "some" and index % 2):
            best = (best + 1) % len(shown)
        scores = [9 if i == best else 2 for i in range(len(shown))]
        return (
            f"Specific Criteria: length.\nAnalysis: sample {index}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"
        )

    return judge


def service(gen: Any) -> JudgeService:
    return JudgeService(gen, GENERIC, Settings())


def items(limit: int | None = None) -> list[EvalItem]:
    return load_training_items([SAMPLE], seed=0, limit=limit).items


def expected_prompt(item: EvalItem, order: list[int]) -> str:
    return GENERIC.build(item.conversation(), [item.responses[i] for i in order])


async def test_rft_keeps_correct_judgments_drops_all_correct_and_hints_the_rest(tmp_path: Path) -> None:
    chosen = items()
    assert {mode(i) for i in chosen} == set(MODES)
    gen = ScriptedGenerator(judge=obeying_judge(chosen))
    stats = await run_rft(service(gen), chosen, tmp_path, SamplingOptions(k=4, max_tokens=128), hint_share=0.99)
    records = read_records(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "rft.jsonl").read_text().splitlines()]
    by_key = {i.key: i for i in chosen}
    assert set(records) == set(by_key) and rows
    for key, record in records.items():
        item = by_key[key]
        status = stats["per_item"][key]["status"]
        assert status == {"all": ALL_CORRECT, "some": "kept", "none": "kept_hinted"}[mode(item)], (key, status)
        hinted = [s for s in record["samples"] if s["hinted"]]
        assert bool(hinted) is (mode(item) == "none")
        for s in record["samples"]:
            assert s["correct"] == judgment_correct(s["text"], s["order"], item.label)
            assert s["prompt"] == expected_prompt(item, s["order"]) and not has_hint(s["prompt"])
    # the hint named the labelled response where that prompt showed it, and only hinted calls carry it
    for prompt, _sampling, _ in gen.calls:
        if has_hint(prompt):
            responses = shown_responses(prompt)
            item = next(i for i in chosen if sorted(i.responses) == sorted(responses))
            assert prompt.endswith(hint_text(responses.index(item.responses[item.label])) + "\n")
    for row in rows:
        item = by_key[row["item_id"]]
        assert row["hinted"] is (mode(item) == "none") and mode(item) != "all"
        assert row["prompt"] == [{"role": "user", "content": expected_prompt(item, row["order"])}]
        assert not has_hint(row["prompt"][0]["content"])
        assert judgment_correct(row["completion"][0]["content"], row["order"], item.label)
    # engine batching: one call per distinct order, n samples each (k = 4 over two orders of two responses)
    plain = [c for c in gen.calls if not has_hint(c[0])]
    assert len(plain) == 2 * len(chosen) and Counter(c[1].n for c in plain) == {2: 2 * len(chosen)}
    assert stats["items"]["judged"] == len(chosen) and stats["rows"] == len(rows)
    assert stats["hinted_rows"] == 4 * sum(mode(i) == "none" for i in chosen)  # the cap (0.99) leaves them all


def record(key: str, plain: list[bool], hinted: list[bool], error: str | None = None) -> dict[str, Any]:
    def sample(ok: bool, h: bool) -> dict[str, Any]:
        return {"prompt": "p", "text": f"{key}-{ok}", "order": [0, 1], "correct": ok, "hinted": h}

    return {
        "key": key,
        "error": error,
        "samples": [sample(c, False) for c in plain] + [sample(c, True) for c in hinted],
    }


@pytest.mark.parametrize(
    ("share", "hinted_rows", "statuses"),
    [
        (0.0, 0, {"c": HINT_CAP, "d": HINT_CAP}),
        (0.25, 1, {"c": "kept_hinted", "d": HINT_CAP}),  # 3 plain rows: floor(0.25 * 3 / 0.75) = 1
        (0.4, 2, {"c": "kept_hinted", "d": "kept_hinted"}),  # one per item before a second of any
        (0.6, 4, {"c": "kept_hinted", "d": "kept_hinted"}),
    ],
)
def test_hinted_share_is_capped_and_spread(share: float, hinted_rows: int, statuses: dict[str, str]) -> None:
    records = [
        record("a", [True, False, True, True], []),
        record("b", [True, True, True, True], []),
        record("c", [False] * 4, [True, True, False]),
        record("d", [False] * 4, [True, True]),
        record("e", [False] * 4, [False, False]),
        record("f", [], [], error="invalid_request_error"),
    ]
    sel = select_rows(records, share)
    assert sum(r["hinted"] for r in sel.rows) == hinted_rows
    assert sum(not r["hinted"] for r in sel.rows) == 3 and all(r["item_id"] == "a" for r in sel.rows if not r["hinted"])
    assert sel.status["b"] == ALL_CORRECT and sel.status["e"] == NO_CORRECT and sel.status["f"] == "failed"
    assert {k: sel.status[k] for k in statuses} == statuses
    assert hinted_rows <= share * len(sel.rows) + 1e-9


async def test_a_rerun_resumes_and_judges_only_new_items(tmp_path: Path) -> None:
    gen = ScriptedGenerator(judge=obeying_judge(items()))
    first = items(limit=3)
    await run_rft(service(gen), first, tmp_path, SamplingOptions(k=2, max_tokens=128), hint_share=0.5)
    before, calls = (tmp_path / RECORDS).read_text(), len(gen.calls)
    await run_rft(service(gen), first, tmp_path, SamplingOptions(k=2, max_tokens=128), hint_share=0.5)
    assert len(gen.calls) == calls  # nothing judged again
    more = items(limit=4)
    assert {i.key for i in first} < {i.key for i in more}  # a larger limit keeps the smaller one's items
    await run_rft(service(gen), more, tmp_path, SamplingOptions(k=2, max_tokens=128), hint_share=0.5)
    assert (tmp_path / RECORDS).read_text().startswith(before) and len(read_records(tmp_path)) == 4
    new = [c for c in gen.calls[calls:] if not has_hint(c[0])]
    assert len(new) == 2  # one item, two orders


def test_cli_writes_manifest_and_refuses_other_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "server.core.engines.build_generator", lambda settings: ScriptedGenerator(judge=obeying_judge(items()))
    )
    runner, out = CliRunner(), tmp_path / "run"
    args = ["train", "rft", str(SAMPLE), "--out", str(out), "--k", "2", "--limit", "3", "--max-tokens", "128"]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] and manifest["k"] == 2 and manifest["template"] == "generic"
    assert manifest["command"] and "trl" in manifest["versions"] and manifest["model_path"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["items"]["judged"] == 3 and set(stats["per_item"]) == {i.key for i in items(limit=3)}
    refused = runner.invoke(app, [*args[:-4], "--k", "4", "--limit", "3", "--no-progress"])
    assert refused.exit_code == 2 and "other k" in refused.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "prompt": "Hi", "responses": ["x", "y"], "label": null}\n', "no labelled item"),
        ('{"question": "Hi", "answer": "x"}\n', "not a known benchmark format"),
    ],
)
def test_cli_bad_data_exits_2_with_one_message(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    result = CliRunner().invoke(app, ["train", "rft", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


@dataclass
class Counting:
    """The real engine, with every call's prompt and n recorded."""

    inner: VLLMGenerator
    calls: list[tuple[str, int]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        self.calls.append((prompt, sampling.n))
        return await self.inner.generate(prompt, sampling, request_id)

    async def continue_judgments(
        self, prompt: str, partials: Any, sampling: SamplingConfig, request_id: str
    ) -> Generation:
        parts: list[Partial] = list(partials)
        return await self.inner.continue_judgments(prompt, parts, sampling, request_id)


@pytest.mark.engine
async def test_rft_on_dev_items_with_the_real_engine(vllm_generator: VLLMGenerator, tmp_path: Path) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in shortest_labelled_items("llmbar.jsonl", 3)))
    chosen = load_training_items([data], seed=0).items
    gen = Counting(vllm_generator)
    svc = JudgeService(gen, GENERIC, Settings())  # type: ignore[arg-type]  # a delegating proxy of the Protocol
    stats = await run_rft(svc, chosen, tmp_path / "out", SamplingOptions(k=4, max_tokens=128), hint_share=0.5)
    records = read_records(tmp_path / "out")
    assert set(records) == {i.key for i in chosen} and all(r["error"] is None for r in records.values())
    for item in chosen:
        r = records[item.key]
        plain = [s for s in r["samples"] if not s["hinted"]]
        assert len(plain) == 4 and Counter(tuple(s["order"]) for s in plain) == {(0, 1): 2, (1, 0): 2}
        assert r["pass_rate"] == sum(s["correct"] for s in plain) / 4
        assert any(s["hinted"] for s in r["samples"]) is (r["pass_rate"] == 0)
        for s in r["samples"]:
            assert s["correct"] == judgment_correct(s["text"], s["order"], item.label)
            assert s["prompt"] == expected_prompt(item, s["order"])
    plain_calls = [c for c in gen.calls if not has_hint(c[0])]
    assert sorted(n for _, n in plain_calls) == [2] * 6  # one engine call per order, n per order
    rows = [json.loads(line) for line in (tmp_path / "out" / "rft.jsonl").read_text().splitlines()]
    assert stats["rows"] == len(rows) and stats["hinted_share"] <= 0.5
    for row in rows:
        assert not has_hint(row["prompt"][0]["content"])
        item = next(i for i in chosen if i.key == row["item_id"])
        assert judgment_correct(row["completion"][0]["content"], row["order"], item.label)
        assert stats["per_item"][row["item_id"]]["status"].startswith("kept")


async def test_an_item_past_its_deadline_is_left_for_the_rerun(tmp_path: Path) -> None:
    chosen = items(limit=2)
    slow = ScriptedGenerator(judge=obeying_judge(items()), delay_s=2.0)
    late = JudgeService(slow, GENERIC, Settings().with_overrides({"limits.request_timeout_s": 0.1}))
    stats = await run_rft(late, chosen, tmp_path, SamplingOptions(k=2, max_tokens=128), hint_share=0.5)
    assert stats["items"]["unfinished"] == 2 and stats["items"]["judged"] == 0 and read_records(tmp_path) == {}
    stats = await run_rft(service(ScriptedGenerator(judge=obeying_judge(items()))), chosen, tmp_path,
                          SamplingOptions(k=2, max_tokens=128), hint_share=0.5)  # fmt: skip
    assert stats["items"]["unfinished"] == 0 and set(read_records(tmp_path)) == {i.key for i in chosen}


def positioned(key: str, label: int, correct_orders: list[list[int]]) -> dict[str, Any]:
    samples = [
        {"prompt": "p", "text": f"{key}{o}", "order": o, "correct": True, "hinted": False} for o in correct_orders
    ]
    wrong = {"prompt": "p", "text": "w", "order": [0, 1], "correct": False, "hinted": False}
    return {"key": key, "n": 2, "label": label, "error": None, "samples": [*samples, wrong]}


def test_balancing_keeps_as_many_rows_per_best_position_as_the_rarest() -> None:
    # best shown first in a, b (x2) and c; shown second only in d
    records = [
        positioned("a", 0, [[0, 1]]),
        positioned("b", 1, [[1, 0], [1, 0]]),
        positioned("c", 0, [[0, 1]]),
        positioned("d", 0, [[1, 0]]),
    ]
    assert len(select_rows(records, 0.0).rows) == 5  # unbalanced: 4 rows best-first, 1 best-second
    sel = select_rows(records, 0.0, balance=True)
    positions = Counter(
        r["order"].index(next(x for x in records if x["key"] == r["item_id"])["label"]) for r in sel.rows
    )
    assert positions == {0: 1, 1: 1} and {r["item_id"] for r in sel.rows} == {"a", "d"}
    assert sel.status == {"a": "kept", "b": POSITION_BALANCE, "c": POSITION_BALANCE, "d": "kept"}
