"""Schema fuzzing of the HTTP API: the real app (uvicorn, the config `grm-server serve` builds) on a scripted
backend on 127.0.0.1, and `schemathesis run` against its /openapi.json with a bounded number of cases.

    .venv/bin/python -m bench.fuzz_api --max-examples 25

Prints cases and failures by check and writes bench/results/fuzz_api.json (and schemathesis' own JSON report).
schemathesis is in the `dev` extra (`pip install -e '.[dev]'`); the scripted backend keeps the run fast and
the answers deterministic, so a failure is the HTTP layer's, not the model's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.common import RESULTS_DIR, free_port, machine
from server.core.settings import Settings
from server.http.app import create_app
from server.http.connections import uvicorn_config
from tests.fakes import ScriptedGenerator, ScriptedMetaRM


def serve_in_thread(port: int) -> uvicorn.Server:
    settings = Settings().with_overrides({"server.port": port, "meta_rm.backend": "none"})
    app = create_app(settings, generator=ScriptedGenerator(), meta_rm=ScriptedMetaRM())
    server = uvicorn.Server(uvicorn_config(app, settings.server, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the app did not become ready within 30 s")


def failures_by_check(report: dict[str, Any]) -> dict[str, int]:
    """Unique failures per check ("ST202 Schema-valid request rejected": 6), from schemathesis' JSON report."""
    return {f"{f['code']} {f['title']}": int(f["count"]) for f in report.get("failures", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=25, help="cases per operation and phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checks", default="all")
    parser.add_argument("--timeout-s", type=float, default=900, help="the whole schemathesis run at most")
    args = parser.parse_args()
    binary = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    port = free_port()
    server = serve_in_thread(port)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    report_path = RESULTS_DIR / "fuzz_api.schemathesis.json"
    cmd = [
        binary, "run", f"http://127.0.0.1:{port}/openapi.json", "--max-examples", str(args.max_examples),
        "--seed", str(args.seed), "--checks", args.checks, "--request-timeout", "30", "--workers", "1",
        "--report", "json", "--report-json-path", str(report_path), "--no-color", "--continue-on-failure",
    ]  # fmt: skip
    start = time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
    finally:
        server.should_exit = True
    elapsed = time.monotonic() - start
    print(run.stdout[-6000:])
    if run.returncode not in (0, 1):
        print(run.stderr[-3000:], file=sys.stderr)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    summary = {
        "machine": machine(),
        "command": " ".join(cmd[1:]).replace(str(port), "PORT"),
        "exit_code": run.returncode,
        "seconds": round(elapsed, 1),
        "test_cases": report.get("test_cases"),
        "failures_by_check": failures_by_check(report),
        "errors": len(report.get("errors", [])),
    }
    (RESULTS_DIR / "fuzz_api.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
