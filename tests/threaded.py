"""The real app behind real uvicorn on a loopback port, its event loop in a thread of the test process, so a
test can poll it over HTTP with a client timeout while the app is busy (stalls of the app's loop show)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from tests.servers import free_port


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, start_timeout_s: float = 120) -> Iterator[str]:
    """Run `app` (lifespan included) under uvicorn in a daemon thread; yield its base URL; stop it (bounded)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited before it started")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn not started after {start_timeout_s} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


class Prober:
    """Polls a route every `every_s` with a `timeout_s` client timeout from its own thread; records latencies
    (a timeout records `inf`) and statuses until stopped."""

    def __init__(self, url: str, every_s: float = 0.1, timeout_s: float = 1.0) -> None:
        self.url, self.every_s, self.timeout_s = url, every_s, timeout_s
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    status = client.get(self.url).status_code
                    self.latencies.append(time.perf_counter() - start)
                except httpx.TimeoutException:
                    status = -1
                    self.latencies.append(float("inf"))
                self.statuses.append(status)
                self._stop.wait(self.every_s)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
