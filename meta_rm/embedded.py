"""The embedded default Meta RM: a small trained scalar head (`embedded_head.json`, shipped here) put on the
tiny embedded GRM backbone (SmolLM2-135M-Instruct) into a sequence-classification folder in the cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meta_rm.errors import MetaRMConfigError
from meta_rm.hf import HFMetaRM, quiet_transformers
from meta_rm.model_folder import prepare_folder

logger = logging.getLogger(__name__)

HEAD_FILE = Path(__file__).with_name("embedded_head.json")
EMBEDDED_META_RM_NAME = "smollm2-135m-meta-rm"


def head_module(model: Any) -> Any:
    """The linear scalar head of a decoder sequence classifier (`score` in Llama, Gemma, Qwen, Mistral)."""
    head = getattr(model, "score", None)
    if head is None or not hasattr(head, "weight"):
        raise MetaRMConfigError(f"{type(model).__name__} has no linear `score` head")
    return head


def export_head(model: Any, path: Path, info: dict[str, Any]) -> None:
    """Write the scalar head (weights rounded to bfloat16, so a bf16 folder holds them exactly) as JSON."""
    import torch

    head = head_module(model)
    weight = head.weight.detach().to(torch.bfloat16).float()
    body = {
        "format": 1,
        "hidden_size": int(weight.shape[1]),
        "weight": [float(v) for v in weight[0].tolist()],
        "bias": None if head.bias is None else float(head.bias.detach().to(torch.bfloat16).float()[0]),
        **info,
    }
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def load_head(path: Path = HEAD_FILE) -> dict[str, Any]:
    """The head file's content; a missing or malformed file is a configuration error."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetaRMConfigError(f"the embedded Meta RM head {path} is missing or unreadable: {exc}") from exc
    if body.get("format") != 1 or len(body.get("weight") or []) != body.get("hidden_size"):
        raise MetaRMConfigError(f"the embedded Meta RM head {path} is malformed")
    return dict(body)


def apply_head(model: Any, head: dict[str, Any]) -> None:
    """Copy the head's weights into `model` (same hidden size required)."""
    import torch

    module = head_module(model)
    if module.weight.shape != (1, head["hidden_size"]):
        raise MetaRMConfigError(
            f"the head has hidden size {head['hidden_size']}, the backbone {module.weight.shape[1]}"
        )
    with torch.no_grad():
        module.weight.copy_(torch.tensor([head["weight"]], dtype=module.weight.dtype))
        if module.bias is not None:
            module.bias.fill_(head["bias"] or 0.0)


def prepare_embedded_meta_rm(backbone: Path, cache_dir: Path, head_file: Path = HEAD_FILE) -> Path:
    """Combine backbone and head once into `cache_dir/smollm2-135m-meta-rm-<head hash>`; later calls reuse it."""
    head = load_head(head_file)
    digest = hashlib.sha256(head_file.read_bytes()).hexdigest()[:12]
    target = cache_dir / f"{EMBEDDED_META_RM_NAME}-{digest}"

    def write(folder: Path) -> None:
        if not (backbone / "config.json").is_file():
            raise MetaRMConfigError(f"the embedded Meta RM backbone {backbone} has no config.json")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        logger.info("preparing the embedded Meta RM in %s (once)", target)
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1, dtype="auto")
        apply_head(model, head)
        model.config.id2label, model.config.label2id = {0: "correct"}, {"correct": 0}
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)

    return prepare_folder(target, write)


class EmbeddedMetaRM(HFMetaRM):
    """The HF Meta RM whose folder is prepared at `start` from the backbone the caller provides."""

    def __init__(self, backbone: Callable[[], Path], cache_dir: Path, **kwargs: Any) -> None:
        super().__init__(cache_dir / EMBEDDED_META_RM_NAME, name=EMBEDDED_META_RM_NAME, **kwargs)
        self._backbone = backbone
        self._cache_dir = cache_dir

    def _path(self) -> Path:
        return prepare_embedded_meta_rm(self._backbone(), self._cache_dir)
