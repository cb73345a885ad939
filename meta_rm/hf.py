"""The transformers Meta RM: a sequence-classification model with one scalar output (the CPU path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from meta_rm.errors import MetaRMConfigError, MetaRMError, MetaRMUnavailableError
from meta_rm.inputs import encode
from meta_rm.protocol import MetaRMInput

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report while a causal-LM backbone gets its (expected) new scalar head."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def resolve_device(device: str) -> str:
    """`auto` = cuda when torch sees a GPU, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """`auto` = float32 on CPU (bf16 matmuls are several times slower there), the checkpoint's on GPU."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else "auto"
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise MetaRMConfigError(f"unknown torch dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
    return value


def load_classifier(model: str | Path, dtype: Any, device: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a one-label sequence-classifier, in eval mode, with a pad token set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        net = AutoModelForSequenceClassification.from_pretrained(str(model), dtype=dtype)
    except (OSError, ValueError) as exc:
        raise MetaRMConfigError(f"cannot load the Meta RM from {model}: {exc}") from exc
    if net.config.num_labels != 1:
        raise MetaRMConfigError(
            f"the Meta RM at {model} has {net.config.num_labels} labels; it needs exactly 1 (a scalar head)"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if net.config.pad_token_id is None:
        net.config.pad_token_id = tokenizer.pad_token_id
    return net.to(device).eval(), tokenizer


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), longest first."""
    ranked = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int, device: str) -> dict[str, Any]:
    """Right padding: positions stay those of the unpadded input, the head reads the last real token."""
    import torch

    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def score_ids(model: Any, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int) -> list[float]:
    """The scalar logit of every token sequence, batched by length, without gradients."""
    import torch

    out = [0.0] * len(ids)
    device = str(next(model.parameters()).device)
    with torch.inference_mode():
        for batch in length_batches([len(x) for x in ids], batch_size):
            logits = model(**pad_batch([ids[i] for i in batch], pad_id, device)).logits
            for i, value in zip(batch, logits[:, 0].float().tolist(), strict=True):
                out[i] = float(value)
    return out


class HFMetaRM:
    """Loads the model in `start` (off the event loop); `score` runs batched forwards in a worker thread,
    one call at a time."""

    def __init__(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        batch_size: int = 8,
        max_length: int = 4096,
        dtype: str = "auto",
        device: str = "auto",
    ) -> None:
        self._source = model
        self._name = name or str(model)
        self._batch_size = batch_size
        self._max_length = max_length
        self._dtype = dtype
        self._device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._error: str | None = "Meta RM not started"

    @property
    def name(self) -> str:
        return self._name

    def _path(self) -> str | Path:
        """Where to load from; subclasses may prepare a folder first."""
        return self._source

    def _load(self) -> None:
        device = resolve_device(self._device)
        self._model, self._tokenizer = load_classifier(self._path(), resolve_dtype(self._dtype, device), device)

    async def start(self) -> None:
        if self._model is not None:
            return
        try:
            await asyncio.to_thread(self._load)
        except MetaRMError as exc:
            self._error = f"Meta RM failed to load: {exc}"
            raise
        except Exception as exc:  # torch/transformers failures (out of memory, bad weights): a Meta RM error
            self._error = f"Meta RM failed to load: {type(exc).__name__}: {exc}"
            raise MetaRMUnavailableError(self._error) from exc
        self._error = None
        logger.info("Meta RM %s loaded", self._name)

    def score_sync(self, items: Sequence[MetaRMInput]) -> list[float]:
        """The blocking scorer (also what training and evaluation call directly)."""
        if self._model is None:
            raise MetaRMUnavailableError(self._error or "Meta RM not started")
        with self._lock:
            ids = encode(items, self._tokenizer, self._max_length)
            return score_ids(self._model, ids, int(self._model.config.pad_token_id), self._batch_size)

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        if not items:
            return []
        return await asyncio.to_thread(self.score_sync, items)

    async def check_ready(self) -> None:
        if self._model is None:
            raise MetaRMUnavailableError(self._error or "Meta RM not started")

    async def close(self) -> None:
        self._model = None
        self._tokenizer = None
        self._error = "Meta RM closed"
