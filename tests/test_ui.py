"""The /ui judgment inspector: its assets and headers over ASGI, then in a real browser (Debian's headless Chromium,
`browser` fixture) against the live grm-server on the real CPU engine: a scoring and an invalid request."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from server.core.settings import Settings
from server.http.app import create_app
from server.http.routes import ui
from tests.browser import fill_form, ints, open_page, submit_and_wait
from tests.conftest import ROOT
from tests.fakes import ScriptedGenerator

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


# ---------- the browser, on the real engine ----------


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
