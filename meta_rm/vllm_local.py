"""The vLLM pooling Meta RM in-process (the GPU path; also runs on vLLM CPU): `AsyncLLM.encode`, task classify."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

from meta_rm.errors import MetaRMBackendError, MetaRMConfigError, MetaRMUnavailableError
from meta_rm.inputs import encode
from meta_rm.protocol import MetaRMInput
from meta_rm.vllm_common import (
    bind_to_loop,
    configure_cpu_environment,
    construct_off_loop,
    readiness_problem,
    shutdown,
    shutdown_off_loop,
)

logger = logging.getLogger(__name__)


class VLLMMetaRM:
    """Owns one pooling `AsyncLLM`. Tokenizes locally with `meta_rm.inputs` (the text training saw) and
    sends token ids; every judgment is its own request, so vLLM batches them and shares prefixes."""

    def __init__(
        self,
        model: str,
        *,
        cache_dir: str,
        name: str | None = None,
        max_length: int = 4096,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.2,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = True,
    ) -> None:
        self._model_path = model
        self._cache_dir = cache_dir
        self._name = name or model
        self._max_length = max_length
        self._dtype = dtype
        self._gpu_memory_utilization = gpu_memory_utilization
        self._tp = tensor_parallel_size
        self._eager = enforce_eager
        self._engine: Any = None
        self._tokenizer: Any = None
        self._error: str | None = "Meta RM engine not started"
        self._counter = 0

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        """Build the tokenizer and the pooling engine in a thread (they block for seconds), so the event loop
        keeps answering meanwhile, at start and on a supervised restart."""
        try:
            self._tokenizer, self._engine = await construct_off_loop(self._build, lambda built: shutdown(built[1]))
        except MetaRMConfigError:
            raise
        except Exception as exc:
            self._error = f"vLLM pooling engine failed to start: {exc}"
            raise MetaRMUnavailableError(self._error) from exc
        bind_to_loop(self._engine)
        if "classify" not in await self._engine.get_supported_tasks():
            engine, self._engine = self._engine, None
            await shutdown_off_loop(engine)
            raise MetaRMConfigError(
                f"{self._model_path} is not a sequence-classification model (vLLM cannot classify with it)"
            )
        self._error = None

    def _build(self) -> tuple[Any, Any]:
        """(tokenizer, pooling AsyncLLM): blocking, run off the loop."""
        configure_cpu_environment(self._cache_dir, kvcache_gb=1)
        try:
            import torch
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MetaRMConfigError(f"the vllm Meta RM backend needs vLLM installed: {exc}") from exc
        dtype = self._dtype
        if dtype == "auto" and not torch.cuda.is_available():
            dtype = "float32"  # vLLM CPU would pick the checkpoint's bf16: slower, and off from the HF scores
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=self._name,
            runner="pooling",
            dtype=cast(Any, dtype),
            max_model_len=self._max_length,
            tensor_parallel_size=self._tp,
            gpu_memory_utilization=self._gpu_memory_utilization,
            enforce_eager=self._eager,
            distributed_executor_backend="uni" if self._tp == 1 else None,
        )
        return AutoTokenizer.from_pretrained(self._model_path), AsyncLLM.from_engine_args(args)

    async def _one(self, ids: list[int]) -> float:
        from vllm import PoolingParams

        self._counter += 1
        params = PoolingParams(task="classify", use_activation=False)
        final = None
        async for out in self._engine.encode({"prompt_token_ids": ids}, params, f"meta-rm-{self._counter}"):
            final = out
        if final is None:  # pragma: no cover - vLLM always yields a final output
            raise MetaRMBackendError("vLLM returned no pooling output")
        return float(final.outputs.data.flatten()[0])

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        if self._engine is None:
            raise MetaRMUnavailableError(self._error or "Meta RM engine not started")
        if not items:
            return []
        ids = await asyncio.to_thread(encode, items, self._tokenizer, self._max_length)
        try:
            return list(await asyncio.gather(*(self._one(x) for x in ids)))
        except MetaRMBackendError:
            raise
        except Exception as exc:
            if self._engine.errored:
                self._error = f"vLLM pooling engine is dead: {exc}"
                raise MetaRMUnavailableError(self._error) from exc
            raise MetaRMBackendError(f"vLLM pooling failed: {exc}") from exc

    async def check_ready(self) -> None:
        problem = readiness_problem(
            self._engine, self._error, not_started="Meta RM engine not started", dead="vLLM pooling engine is dead"
        )
        if problem:
            raise MetaRMUnavailableError(problem)

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine, self._error = self._engine, None, "Meta RM engine closed"
            await shutdown_off_loop(engine)
