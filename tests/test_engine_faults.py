"""A live `grm-server serve` (GRM and Meta RM both in-process vLLM engines) whose EngineCore processes are
killed heals each engine, then, restarts spent, says unhealthy."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from meta_rm.embedded import prepare_embedded_meta_rm
from server.core.embedded import prepare_embedded_model
from tests.conftest import cache_dir
from tests.servers import Background, descendants, start_grm_server

pytestmark = pytest.mark.engine

SCORE = {"query": "What is 2+2?", "responses": ["4", "5"], "k": 2, "k_meta": 1, "seed": 3}


def engine_core_pids(server_pid: int) -> list[int]:
    """The server's vLLM EngineCore processes (by process title or command line), oldest first (the GRM
    engine starts before the Meta RM engine)."""
    found = []
    for pid in descendants(server_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/comm").read_bytes()
        except OSError:
            continue
        if b"EngineCore" in title:
            found.append(pid)
    return sorted(found, key=started)


def started(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # starttime, in ticks


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


def metric(url: str, name: str) -> str:
    return next(x for x in httpx.get(url + "/metrics", timeout=5).text.splitlines() if x.startswith(name))


def test_killed_engine_cores_heal_then_exhausted_restarts_report_unhealthy() -> None:
    meta_rm = prepare_embedded_meta_rm(prepare_embedded_model(cache_dir()), cache_dir())
    env = {
        "GRM_META_RM__BACKEND": "vllm",
        "GRM_META_RM__MODEL": str(meta_rm),
        "GRM_META_RM__MAX_LENGTH": "2048",
        "GRM_SUPERVISION__MAX_RESTARTS": "1",
        "GRM_JUDGING__MAX_TOKENS": "192",
        "GRM_SUPERVISION__BACKOFF_INITIAL_S": "1",
        "GRM_SUPERVISION__CHECK_INTERVAL_S": "0.5",
    }
    server = start_grm_server(env=env, name="grm-server-faults")
    try:
        url = server.wait()
        poll("/ready 200", lambda: status(url + "/ready") == 200, 300, server)
        grm_core, meta_core = engine_core_pids(server.proc.pid)

        # the Meta RM engine dies: it heals on its own, the GRM engine is left alone
        os.kill(meta_core, signal.SIGKILL)
        poll("/ready 503", lambda: status(url + "/ready") == 503, 30, server)
        r = httpx.post(url + "/score", json=SCORE, timeout=300)
        if r.status_code != 200:  # unless the small Meta RM engine was back before the judgments were written
            assert r.status_code == 503 and "retry-after" in r.headers, r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        poll("/ready 200 after the Meta RM restart", lambda: status(url + "/ready") == 200, 300, server)
        assert httpx.post(url + "/score", json=SCORE, timeout=400).json()["kept"] == 1
        assert metric(url, 'grm_engine_restarts_total{engine="meta_rm"}').endswith(" 1.0")
        assert engine_core_pids(server.proc.pid)[0] == grm_core

        # the GRM engine dies: the same
        os.kill(grm_core, signal.SIGKILL)
        poll("/ready 503", lambda: status(url + "/ready") == 503, 30, server)
        r = httpx.post(url + "/score", json=SCORE, timeout=120)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert status(url + "/health") == 200  # healing, not dead
        poll("/ready 200 after the restart", lambda: status(url + "/ready") == 200, 300, server)
        # judging resumes (the first judgment on a cold engine is slow on a shared 2-core host)
        assert httpx.post(url + "/score", json=SCORE, timeout=400).status_code == 200
        assert metric(url, 'grm_engine_restarts_total{engine="grm"}').endswith(" 1.0")

        new_core = engine_core_pids(server.proc.pid)[-1]  # the newest: the GRM engine restarted last
        assert new_core not in (grm_core, meta_core)
        os.kill(new_core, signal.SIGKILL)  # the one allowed restart is spent: the process must say so
        poll("/health 503", lambda: status(url + "/health") == 503, 300, server)
        assert "grm engine failed" in httpx.get(url + "/health", timeout=5).json()["reason"]
        assert server.proc.poll() is None  # alive but unhealthy: the orchestrator replaces it
    finally:
        server.stop()
