"""What every in-process vLLM engine here shares: the CPU environment, the readiness check, the shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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


async def construct_off_loop(build: Callable[[], T], discard: Callable[[T], None]) -> T:
    """Run the blocking `build` (tokenizer load, `AsyncLLM` construction: seconds, up to minutes) in a thread,
    so the event loop keeps answering /health and /ready meanwhile. If the caller is cancelled while it runs,
    whatever it builds is handed to `discard` in a thread of its own, never left running unowned."""
    future = asyncio.get_running_loop().run_in_executor(None, build)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:

        def orphaned(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                threading.Thread(target=discard, args=(done.result(),), daemon=True, name="engine-discard").start()

        future.add_done_callback(orphaned)
        raise


def bind_to_loop(engine: Any) -> None:
    """Start the background tasks an `AsyncLLM` starts itself when it is built inside the event loop (built in a
    thread, it would start them only at its first request, and miss an engine failure before that)."""
    start_output_handler = getattr(engine, "_run_output_handler", None)
    if callable(start_output_handler):
        start_output_handler()
    client = getattr(engine, "engine_core", None)
    for name in ("_ensure_output_queue_task", "_ensure_stats_update_task"):
        start = getattr(client, name, None)
        if callable(start):
            start()


async def shutdown_off_loop(engine: Any) -> None:
    """`shutdown` in a thread: stopping an `AsyncLLM` joins its engine process (vLLM's shutdown is thread-safe)."""
    if engine is not None:
        await asyncio.to_thread(shutdown, engine)
