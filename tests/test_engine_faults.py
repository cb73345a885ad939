"""A live `grm-server serve` whose vLLM EngineCore process is killed heals, then, restarts spent, says unhealthy."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from server.core.embedded import prepare_embedded_model
from tests.conftest import cache_dir
from tests.servers import Background, start_grm_server

pytestmark = pytest.mark.engine

SCORE = {"query": "What is 2+2?", "responses": ["4", "5"], "k": 2, "seed": 3}


def engine_core_pids(server_pid: int) -> list[int]:
    """Child processes of the server whose title or command line names vLLM's EngineCore (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ") + (entry / "comm").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and b"EngineCore" in title:
            found.append(int(entry.name))
    return found


def poll(what: str, check: Callable[[], bool], timeout_s: float, server: Background) -> None:
    """Bounded poll on the server's observable state."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached in {timeout_s} s:\n{server.log.read_text()[-3000:]}")
        time.sleep(0.5)


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return -1


def test_killed_engine_core_heals_then_exhausted_restarts_report_unhealthy() -> None:
    prepare_embedded_model(cache_dir())
    env = {
        "GRM_SUPERVISION__MAX_RESTARTS": "1",
        "GRM_JUDGING__MAX_TOKENS": "192",
        "GRM_SUPERVISION__BACKOFF_INITIAL_S": "1",
        "GRM_SUPERVISION__CHECK_INTERVAL_S": "0.5",
    }
    server = start_grm_server(env=env, name="grm-server-faults")
    try:
        url = server.wait()
        (core,) = engine_core_pids(server.proc.pid)
        os.kill(core, signal.SIGKILL)  # as an OOM kill or a device fault would

        poll("/ready 503", lambda: status(url + "/ready") == 503, 30, server)
        r = httpx.post(url + "/score", json=SCORE, timeout=120)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert status(url + "/health") == 200  # healing, not dead
        poll("/ready 200 after the restart", lambda: status(url + "/ready") == 200, 300, server)
        # judging resumes (the first judgment on a cold engine is slow on a shared 2-core host)
        assert httpx.post(url + "/score", json=SCORE, timeout=400).status_code == 200
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert 'grm_engine_restarts_total{engine="grm"} 1.0' in metrics

        (new_core,) = engine_core_pids(server.proc.pid)
        assert new_core != core
        os.kill(new_core, signal.SIGKILL)  # the one allowed restart is spent: the process must say so
        poll("/health 503", lambda: status(url + "/health") == 503, 300, server)
        assert "grm engine failed" in httpx.get(url + "/health", timeout=5).json()["reason"]
        assert server.proc.poll() is None  # alive but unhealthy: the orchestrator replaces it
    finally:
        server.stop()
