"""The /ui judgment inspector: its assets and headers over ASGI, then in a real browser (Debian's headless Chromium
driven by selenium through the system chromedriver) against the live grm-server (real CPU engine) and a
scripted-engine uvicorn server (API keys, a real `items.jsonl` of an evaluation run)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from meta_rm.protocol import MetaRMInput
from server.core.judging import JudgeService
from server.core.prompts import PromptBuilder, TemplateName
from server.core.settings import Settings
from server.evaluation.evaluate import EvalOptions, evaluate
from server.evaluation.metrics import credit
from server.evaluation.runner import ITEMS_FILE, load_records
from server.evaluation.scorers import ServiceScorer
from server.evaluation.sweep import Judgment, metarm_rewards, voting_rewards
from server.http.app import create_app
from server.http.routes import ui
from tests.conftest import ROOT, free_port
from tests.fakes import ScriptedGenerator, ScriptedMetaRM, shown_responses

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KEY = "ui-s3cret"
XSS = '<img src=x onerror="window.__xss=1"><b>bold</b>'


# ---------- the assets, over ASGI (no browser) ----------


async def test_ui_assets_are_served_offline_and_public_while_the_api_needs_the_key() -> None:
    app = create_app(Settings().with_overrides({"server.api_keys": [KEY]}), generator=ScriptedGenerator())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            page = await client.get("/ui")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
            assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
            assert sorted(assets) == sorted(f"ui/{name}" for name in ui.ASSETS)  # relative, served here: no CDN
            static = {p.name for p in (ROOT / "server" / "http" / "static").iterdir()} - {"index.html"}
            assert static == set(ui.ASSETS)  # every shipped file is served, nothing else is
            for name, kind in ui.ASSETS.items():
                r = await client.get(f"/ui/{name}")
                assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
                assert r.headers["content-security-policy"] == csp
                assert not re.search(r"https?://", r.text), f"{name} references an external URL"
                assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(", r.text)
            assert (await client.get("/ui/", follow_redirects=True)).url.path == "/ui"
            assert (await client.post("/score", json={"query": "q", "responses": ["a"]})).status_code == 401
            assert (await client.get("/ui/nope.js")).json()["error"]["type"] == "not_found_error"
            assert "/ui" not in (await client.get("/openapi.json", headers={"authorization": f"Bearer {KEY}"})).text


# ---------- the browser ----------


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (CI runs as root with apt)."""
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("apt-get is unavailable here, so Debian's chromium and chromium-driver cannot be installed")
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        pytest.skip("chromium is missing and apt-get needs root here: apt-get install chromium chromium-driver")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wait_lock = ["-o", "DPkg::Lock::Timeout=600"]  # another apt run (a parallel job) holds the lock a while
    install = [apt, *wait_lock, "install", "-y", "-q", "chromium", "chromium-driver"]
    for cmd in ([apt, *wait_lock, "update", "-q"], install):
        run = subprocess.run(sudo + cmd, capture_output=True, text=True, env=env, timeout=1200)
        assert run.returncode == 0, f"{' '.join(sudo + cmd)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "apt installed chromium but not where expected"


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    ensure_chromium()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,1000",
    ):
        options.add_argument(arg)
    # The system chromedriver: selenium-manager (which downloads drivers) is never consulted.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


class ThreadServer:
    """A real uvicorn server on a scripted engine and Meta RM, in a thread (cheap: no model)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.generator = ScriptedGenerator()
        app = create_app(settings, generator=self.generator, meta_rm=ScriptedMetaRM())
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ThreadServer]:
    with ThreadServer(Settings().with_overrides({"server.api_keys": [KEY]})) as server:
        yield server


def wait(driver: WebDriver, condition: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout).until(condition)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(f"{url}/ui")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def fill(field: WebElement, text: str) -> None:
    field.clear()
    field.send_keys(text)


def fill_form(driver: WebDriver, query: str, responses: list[str], params: dict[str, str]) -> None:
    fill(driver.find_element(By.CSS_SELECTOR, "#turns textarea"), query)
    areas = driver.find_elements(By.CSS_SELECTOR, "#responses textarea")
    while len(areas) > len(responses):
        driver.find_elements(By.CSS_SELECTOR, "#responses .remove")[-1].click()
        areas = driver.find_elements(By.CSS_SELECTOR, "#responses textarea")
        assert driver.switch_to.active_element == areas[-1]  # the focus stays in the list
    while len(areas) < len(responses):
        driver.find_element(By.ID, "add-response").click()
        areas = driver.find_elements(By.CSS_SELECTOR, "#responses textarea")
    for area, text in zip(areas, responses, strict=True):
        fill(area, text)
    for name, value in params.items():
        fill(driver.find_element(By.ID, f"p-{name}"), value)


def submit_and_wait(driver: WebDriver, timeout: float = 300) -> str:
    """Submit; 'result' or 'error' once the page shows one."""
    driver.find_element(By.ID, "submit").click()

    def settled(d: WebDriver) -> str | bool:
        if d.find_element(By.ID, "submit").is_enabled() and d.find_element(By.ID, "status").text:
            if d.find_element(By.ID, "score-error").is_displayed():
                return "error"
            if d.find_element(By.ID, "score-result").is_displayed():
                return "result"
        return False

    outcome: str = wait(driver, settled, timeout)
    return outcome


def ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


@pytest.mark.live
@pytest.mark.browser
def test_score_in_the_browser_on_the_real_engine(browser: WebDriver, live_url: str) -> None:
    """Fill the form, submit, see k judgment cards and the bars; every reward = the sum of its kept cards'
    scores; caller texts (even markup) stay text."""
    open_page(browser, live_url)
    k = 3
    responses = ["Paris is the capital of France.", "The capital of France is Lyon.", XSS]
    fill_form(browser, "What is the capital of France?", responses, {"k": str(k), "max_tokens": "128", "seed": "1"})
    assert submit_and_wait(browser) == "result", browser.find_element(By.ID, "score-error").text

    cards = browser.find_elements(By.CSS_SELECTOR, "#score-result .card")
    assert len(cards) == k
    rows = browser.find_elements(By.CSS_SELECTOR, "#score-result .bar-row")
    assert len(rows) == len(responses)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#score-result .bar-row.best")) == 1
    assert all(row.find_element(By.CSS_SELECTOR, ".bar.reward").size["width"] >= 0 for row in rows)
    assert browser.find_elements(By.CSS_SELECTOR, "#score-result table.positions tbody tr")

    rewards = [ints(r.find_element(By.CSS_SELECTOR, ".reward-value").text)[0] for r in rows]
    sums = [0] * len(responses)
    kept = 0
    for card in cards:
        badges = [t.text for t in card.find_elements(By.CSS_SELECTOR, ".badges .tag")]
        assert ("kept" in badges) != ("dropped" in badges)
        assert ("valid" in badges) != ("unparseable" in badges)
        shown = card.find_element(By.CSS_SELECTOR, ".order").text
        assert sorted(int(x) for x in re.findall(r"#(\d+)", shown)) == list(range(len(responses)))
        if "kept" in badges:
            kept += 1
            cells = card.find_elements(By.CSS_SELECTOR, ".card-scores td.score")
            for i, cell in enumerate(cells):
                sums[i] += int(cell.text)
    assert kept >= 1 and rewards == sums
    best = int(browser.find_element(By.CSS_SELECTOR, ".bar-row.best").get_attribute("data-index") or -1)
    assert rewards[best] == max(rewards)

    # The markup in a response is shown as text: no <img>/<b> element, no script ran.
    snippet = browser.find_elements(By.CSS_SELECTOR, "#score-result .bar-row .snippet")[2].text
    assert snippet.startswith("<img src=x") and not browser.find_elements(
        By.CSS_SELECTOR, "#score-result img, #score-result b"
    )
    assert browser.execute_script("return window.__xss") is None

    shot = os.environ.get("GRM_UI_SCREENSHOT")
    if shot:  # docs/ui.png: GRM_UI_SCREENSHOT=docs/ui.png pytest tests/test_ui.py -k real_engine
        screenshot_example(browser, Path(shot))


def screenshot_example(driver: WebDriver, path: Path) -> None:
    """The page after scoring its built-in example, the whole page in one PNG."""
    driver.find_element(By.ID, "example").click()
    fill_form(
        driver,
        driver.find_element(By.CSS_SELECTOR, "#turns textarea").get_attribute("value") or "",
        [a.get_attribute("value") or "" for a in driver.find_elements(By.CSS_SELECTOR, "#responses textarea")],
        {"k": "4", "max_tokens": "160", "seed": "0"},
    )
    assert submit_and_wait(driver) == "result"
    driver.execute_script("document.activeElement.blur()")
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.live
@pytest.mark.browser
def test_an_invalid_request_shows_the_api_error(browser: WebDriver, live_url: str) -> None:
    open_page(browser, live_url)
    fill_form(browser, "Say hi", ["Hi!"], {"k": "0"})
    assert submit_and_wait(browser, 60) == "error"
    box = browser.find_element(By.ID, "score-error")
    assert "HTTP 400" in box.text and "invalid_request_error" in box.text
    assert re.search(r"param\s+k\b", box.text), box.text
    assert not browser.find_element(By.ID, "score-result").is_displayed()
    assert browser.switch_to.active_element == box  # focus moves to the error


@pytest.mark.browser
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


@pytest.mark.browser
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


@pytest.mark.browser
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


@pytest.mark.browser
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


@pytest.mark.browser
def test_a_non_record_file_is_refused_plainly(browser: WebDriver, scripted: ThreadServer, tmp_path: Path) -> None:
    bogus = tmp_path / "items.jsonl"
    bogus.write_text(json.dumps({"hello": "world"}) + "\nnot json\n", encoding="utf-8")
    open_page(browser, scripted.url)
    browser.find_element(By.ID, "tab-eval").click()
    browser.find_element(By.ID, "eval-file").send_keys(str(bogus))
    box = browser.find_element(By.ID, "eval-error")
    wait(browser, lambda d: box.is_displayed())
    assert "no records" in box.text and "2 unreadable lines" in box.text
