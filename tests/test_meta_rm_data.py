"""`meta-rm build-data`: the real embedded GRM judges labelled dev items, each judgment labelled by the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from meta_rm.labels import is_correct, label_judgment
from server.cli.meta import meta_app
from server.core.generators.vllm_local import VLLMGenerator
from server.core.judging import JudgeService
from server.core.meta_data import judge_items, load_preference_items
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from tests.fakes import ScriptedGenerator

SAMPLE = Path(__file__).parent / "data" / "dev_sample.jsonl"


@pytest.mark.engine
async def test_build_data_labels_every_sampled_judgment(vllm_generator: VLLMGenerator) -> None:
    items, _ = load_preference_items([SAMPLE])
    items = sorted(items, key=lambda i: i.chars)[:2]
    service = JudgeService(vllm_generator, PromptBuilder(TemplateName.GENERIC), Settings())
    done: list[int] = []
    records, failures = await judge_items(
        service, items, k=4, seed=7, max_tokens=128, concurrency=1, on_done=lambda recs: done.append(len(recs or []))
    )
    assert not failures and done == [4, 4] and len(records) == 8
    for item in items:
        mine = [r for r in records if r.item_id == item.id]
        assert [r.sample for r in mine] == [0, 1, 2, 3]
        assert {r.order for r in mine} == {(0, 1), (1, 0)}  # both orders, two samples each
        assert len({r.seed for r in mine}) == 1 and mine[0].model == "smollm2-135m-instruct"
        for r in mine:
            assert r.responses == item.responses and r.label == item.label
            assert r.correct == is_correct(r.scores, r.label) == label_judgment(r.text, r.order, r.label)
            assert r.to_input().responses == tuple(item.responses[j] for j in r.order)
            assert r.conversation.startswith("User: ")


async def test_items_the_service_refuses_are_counted_and_skipped() -> None:
    items, _ = load_preference_items([SAMPLE])
    service = JudgeService(ScriptedGenerator(down=True), PromptBuilder(TemplateName.GENERIC), Settings())
    done: list[object] = []
    records, failures = await judge_items(service, items, k=2, seed=0, on_done=done.append)
    assert records == [] and failures == {"backend_unavailable": len(items)} and done == [None] * len(items)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent.jsonl"], "cannot read the data"),
        (["--data", str(SAMPLE), "--offset", "100"], "judging 0"),
        (["--data", str(SAMPLE), "--backend", "openai"], "base_url is required"),
    ],
)
def test_build_data_refuses_bad_input_before_loading_engines(args: list[str], message: str, tmp_path: Path) -> None:
    run = CliRunner().invoke(meta_app, ["build-data", "--out", str(tmp_path / "o.jsonl"), *args])
    assert run.exit_code == 2 and message in run.output
    assert not (tmp_path / "o.jsonl").exists()
