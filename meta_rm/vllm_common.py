"""What every in-process vLLM engine here shares: the CPU environment, the readiness check, the shutdown."""

from __future__ import annotations

import os
from typing import Any


def configure_cpu_environment(cache_dir: str, kvcache_gb: int) -> None:
    """vLLM reads these at import: bind OpenMP to every core, size the KV cache, keep caches contained,
    log to stderr (stdout stays for our output, `--json`). Values already in the environment win, so the
    first engine of a process sets them."""
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kvcache_gb))
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(cache_dir, "vllm"))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def readiness_problem(engine: Any, error: str | None, *, not_started: str, dead: str) -> str | None:
    """Why an `AsyncLLM` cannot serve (never started, failed, closed, or its engine core died), or None."""
    if engine is None or error:
        return error or not_started
    if engine.errored:
        return dead
    return None


def shutdown(engine: Any) -> None:
    """Stop an `AsyncLLM` if there is one (idempotent for the caller, which drops its reference)."""
    if engine is not None:
        engine.shutdown()
