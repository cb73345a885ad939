"""The /ui inspector in a real browser against a scripted-engine server with API keys and a Meta RM: the key field
and a 401, kept and dropped judgments, ties, a conversation, cancel, optional sample fields, and an evaluation
run's `items.jsonl` written by the real evaluation runner."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from meta_rm.protocol import MetaRMInput
from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.evaluation.evaluate import EvalOptions, evaluate
from server.evaluation.metrics import credit
from server.evaluation.runner import ITEMS_FILE, load_records
from server.evaluation.scorers import ServiceScorer
from server.evaluation.sweep import Judgment, metarm_rewards, voting_rewards
from tests.browser import ThreadServer, fill, fill_form, ints, open_page, submit_and_wait, wait
from tests.conftest import ROOT
from tests.fakes import ScriptedGenerator, ScriptedMetaRM, shown_responses

pytestmark = pytest.mark.browser

KEY = "ui-s3cret"
XSS = '<img src=x onerror="window.__xss=1"><b>bold</b>'


@pytest.fixture(scope="module")
def scripted() -> Iterator[ThreadServer]:
    with ThreadServer(Settings().with_overrides({"server.api_keys": [KEY]})) as server:
        yield server


def test_the_api_key_field_and_a_401(browser: WebDriver, scripted: ThreadServer) -> None:
    open_page(browser, scripted.url)
    fill_form(browser, "Which is longer?", ["a", "bbbb"], {"k": "2", "seed": "3"})  # no key yet
    assert submit_and_wait(browser, 60) == "error"
    text = browser.find_element(By.ID, "score-error").text
    assert "HTTP 401" in text and "authentication_error" in text and "API key field" in text

    fill(browser.find_element(By.ID, "p-key"), KEY)
    assert submit_and_wait(browser, 60) == "result"
    assert not browser.find_element(By.ID, "score-error").is_displayed()
    cards = browser.find_elements(By.CSS_SELECTOR, "#score-result .card")
    kept = [c for c in cards if "kept" in c.find_element(By.CSS_SELECTOR, ".badges").text.split()]
    dropped = [c for c in cards if "dropped" in c.find_element(By.CSS_SELECTOR, ".badges").text.split()]
    assert len(cards) == 2 and len(kept) == len(dropped) == 1  # k=2, the Meta RM keeps k/2
    assert all(re.search(r"meta \d", c.text) for c in cards)
    rewards = [ints(e.text)[0] for e in browser.find_elements(By.CSS_SELECTOR, ".reward-value")]
    assert rewards == [1, 4]  # the scripted judge scores by length (1 and 4); only the kept judgment votes
    best = browser.find_element(By.CSS_SELECTOR, ".bar-row.best")
    assert best.get_attribute("data-index") == "1" and "best" in best.text
    assert "tied" not in browser.find_element(By.ID, "result-heading").text

    fill_form(browser, "Which is longer?", ["ab", "cd"], {"k": "2", "k_meta": "0", "seed": "3"})
    assert submit_and_wait(browser, 60) == "result"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#score-result .card .tag.kept")) == 2  # plain voting
    assert "tied with" in browser.find_element(By.ID, "result-heading").text


def test_a_conversation_and_cancel(browser: WebDriver, scripted: ThreadServer) -> None:
    """Turns with roles go out as `messages`; Cancel aborts the request and the server cancels its engine work."""
    open_page(browser, scripted.url)
    fill(browser.find_element(By.ID, "p-key"), KEY)
    fill_form(browser, "Answer in one word.", ["a", "bbbb"], {"k": "2", "seed": "1"})
    Select(browser.find_element(By.CSS_SELECTOR, "#turns select.role")).select_by_value("system")
    browser.find_element(By.ID, "add-turn").click()
    assert browser.switch_to.active_element == browser.find_elements(By.CSS_SELECTOR, "#turns textarea")[1]
    browser.switch_to.active_element.send_keys("Which is longer?")
    assert submit_and_wait(browser, 60) == "result"
    prompt = scripted.generator.calls[-1][0]
    assert "System: Answer in one word." in prompt and "User: Which is longer?" in prompt

    scripted.generator.delay_s = 30
    try:
        before = scripted.generator.cancelled
        browser.find_element(By.ID, "submit").click()
        cancel = browser.find_element(By.ID, "cancel")
        wait(browser, lambda d: cancel.is_displayed() and "Scoring" in d.find_element(By.ID, "status").text, 10)
        cancel.click()
        box = browser.find_element(By.ID, "score-error")
        wait(browser, lambda d: box.is_displayed(), 10)
        assert "cancelled" in box.text
        wait(browser, lambda d: scripted.generator.cancelled > before, 10)  # the server aborted the engine call
    finally:
        scripted.generator.delay_s = 0


def test_a_card_shows_completion_fields_when_present_and_model_text_as_text(
    browser: WebDriver, scripted: ThreadServer
) -> None:
    """`completed` / `finish_reason` (when a server reports them) and a parse error; markup stays text."""
    open_page(browser, scripted.url)
    sample = {
        "scores": None, "order": [1, 0], "meta_reward": None, "kept": False, "text": XSS, "principles": XSS,
        "critique": "<script>window.__xss=2</script>", "error": "no \\boxed{...}", "completed": False,
        "finish_reason": "length",
    }  # fmt: skip
    card = browser.execute_script("const c = renderCard(arguments[0], 0); document.body.append(c); return c;", sample)
    tags = [t.text for t in card.find_elements(By.CSS_SELECTOR, ".tag")]
    assert tags == ["dropped", "unparseable", "cut off", "finish: length"]
    assert "parse error: no \\boxed{...}" in card.text and XSS in card.text
    assert not card.find_elements(By.CSS_SELECTOR, "img, b, script")
    assert browser.execute_script("return window.__xss") is None
    done = browser.execute_script(
        "const c = renderCard(arguments[0], 1); document.body.append(c); return c;",
        {**sample, "scores": [3, 9], "kept": True, "error": None, "completed": True, "finish_reason": "stop"},
    )
    assert [t.text for t in done.find_elements(By.CSS_SELECTOR, ".tag")] == [
        "kept",
        "valid",
        "completed",
        "finish: stop",
    ]
    assert [c.text for c in done.find_elements(By.CSS_SELECTOR, "td.score")] == ["3", "9"]


def biased_judge(prompt: str, index: int) -> str:
    """Longer responses score higher, and whatever is shown first gets +3 (capped at 10)."""
    shown = shown_responses(prompt)
    scores = [min(10, len(r) // 8 + 1 + (3 if pos == 0 else 0)) for pos, r in enumerate(shown)]
    return f"Principles: length.\nAnalysis: sample {index}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def first_score(item: MetaRMInput) -> float:
    """A Meta RM that likes judgments giving the first shown response a high score: MetaRM@k then keeps
    judgments of one order only, and its outcome differs from Voting@k."""
    return float(re.findall(r"\d+", item.judgment.rsplit("boxed", 1)[1])[0])


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real items.jsonl, written by the evaluation runner over a scripted engine and Meta RM."""
    out = tmp_path_factory.mktemp("eval-run")
    generator = ScriptedGenerator(judge=biased_judge)
    service = JudgeService(
        generator, PromptBuilder(TemplateName.GENERIC), Settings(), meta_rm=ScriptedMetaRM(rate=first_score)
    )
    data = (ROOT / "tests" / "data" / "dev_sample.jsonl",)
    options = EvalOptions(data=data, out=out, ks=(1, 4), progress=False, resamples=20)
    asyncio.run(evaluate(ServiceScorer(service), options, log=lambda _: None))
    return out / ITEMS_FILE


def expected_status(record: dict[str, Any], method: str) -> str:
    """What results.json's metrics make of the record at k_max: right, tie or wrong."""
    part = record["sampled"]
    judgments = [
        Judgment(tuple(s["scores"]) if s["scores"] else None, tuple(s["order"]), s["meta_reward"])
        for s in part["samples"]
    ]
    n = record["n"]
    rewards = voting_rewards(judgments, n) if method == "voting" else metarm_rewards(judgments, n, part["k_meta"])
    if rewards is None:
        return "wrong"
    c = credit(rewards, record["label"])
    return "right" if c == 1.0 else "wrong" if c == 0.0 else "tie"


def listed(driver: WebDriver) -> list[tuple[str, str]]:
    buttons = driver.find_elements(By.CSS_SELECTOR, "#eval-items .item-button")
    return [(b.get_attribute("data-key") or "", b.find_element(By.CSS_SELECTOR, ".status").text) for b in buttons]


def test_an_evaluation_run_loads_wrong_items_first(browser: WebDriver, scripted: ThreadServer, eval_run: Path) -> None:
    records = load_records(eval_run)
    assert all(r["sampled"]["k_meta"] == 2 for r in records)  # k_max = 4, the Meta RM keeps half
    rank = {"wrong": 0, "tie": 1, "right": 2}
    open_page(browser, scripted.url)
    browser.find_element(By.ID, "tab-eval").click()
    browser.find_element(By.ID, "eval-file").send_keys(str(eval_run))
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#eval-items .item-button"))
    assert f"{len(records)} items by Voting@k" in browser.find_element(By.ID, "eval-summary").text

    seen: dict[str, dict[str, str]] = {}
    for method in ("voting", "metarm"):
        Select(browser.find_element(By.ID, "eval-method")).select_by_value(method)
        statuses = {r["key"]: expected_status(r, method) for r in records}
        seen[method] = statuses
        assert "wrong" in statuses.values() and len(set(statuses.values())) >= 2  # the order below can fail
        shown = listed(browser)
        assert sorted(k for k, _ in shown) == sorted(statuses)
        assert all(statuses[k] == s for k, s in shown), (method, shown, statuses)
        assert [rank[s] for _, s in shown] == sorted(rank[s] for _, s in shown)  # wrong ones first

    assert seen["voting"] != seen["metarm"]  # the Meta RM's choice shows

    first_button = browser.find_element(By.CSS_SELECTOR, "#eval-items .item-button")
    first_button.send_keys("\n")  # keyboard: Enter on the button
    detail = browser.find_element(By.ID, "eval-detail")
    wait(browser, lambda d: detail.find_elements(By.CSS_SELECTOR, ".card"))
    first = next(r for r in records if r["key"] == first_button.get_attribute("data-key"))
    cards = detail.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == len(first["sampled"]["samples"]) == 4
    assert len(detail.find_elements(By.CSS_SELECTOR, ".card .tag.kept")) == 2  # MetaRM@4 keeps k_meta = 2
    assert len(detail.find_elements(By.CSS_SELECTOR, ".bar-row")) == first["n"]
    labelled = detail.find_element(By.CSS_SELECTOR, f'.bar-row[data-index="{first["label"]}"]')
    assert "labelled best" in labelled.text

    Select(browser.find_element(By.ID, "eval-filter")).select_by_value("right")
    wanted = sum(1 for r in records if expected_status(r, "metarm") == "right")
    try:
        wait(browser, lambda d: len(listed(d)) == wanted, 5)
    except TimeoutException:
        pytest.fail(f"the filter shows {listed(browser)}, expected {wanted} items")
    assert all(s == "right" for _, s in listed(browser))


def test_a_non_record_file_is_refused_plainly(browser: WebDriver, scripted: ThreadServer, tmp_path: Path) -> None:
    bogus = tmp_path / "items.jsonl"
    bogus.write_text(json.dumps({"hello": "world"}) + "\nnot json\n", encoding="utf-8")
    open_page(browser, scripted.url)
    browser.find_element(By.ID, "tab-eval").click()
    browser.find_element(By.ID, "eval-file").send_keys(str(bogus))
    box = browser.find_element(By.ID, "eval-error")
    wait(browser, lambda d: box.is_displayed())
    assert "no records" in box.text and "2 unreadable lines" in box.text
