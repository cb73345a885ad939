"""Browser-test helpers: Debian's headless Chromium (apt-installed when missing) driven by selenium through the
system chromedriver, a scripted-engine uvicorn server in a thread, and page actions of the /ui inspector."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from server.core.settings import Settings
from server.http.app import create_app
from tests.fakes import ScriptedGenerator, ScriptedMetaRM
from tests.servers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


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


def start_browser() -> WebDriver:
    """Headless Chromium through the system chromedriver: selenium-manager (which downloads drivers) is never used."""
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
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


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
