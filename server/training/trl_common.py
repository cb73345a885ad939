"""What the TRL trainers share: the device, reading the training rows, and saving a model folder the server serves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from server.training.reward import has_hint


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The conversational prompt-completion rows of `train rft` (only `prompt` and `completion` are trained on).
    A row whose prompt still carries the sampling hint is refused: the model would learn to read the label."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            prompt, completion = row.get("prompt"), row.get("completion")
            if not (isinstance(prompt, list) and prompt and isinstance(completion, list) and completion):
                raise ValueError(f"{path}:{number}: not a conversational prompt-completion row (from `train rft`)")
            if any(has_hint(str(m.get("content", ""))) for m in prompt):
                raise ValueError(f"{path}:{number}: the prompt still carries the sampling hint")
            rows.append({"prompt": prompt, "completion": completion})
    if not rows:
        raise ValueError(f"{path} holds no training rows")
    return rows


def lora_config(rank: int, alpha: int, dropout: float) -> Any:
    """peft's LoRA on every linear layer of a causal LM, or None when `rank` is 0 (full fine-tuning)."""
    if rank <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def save_model_folder(model: Any, tokenizer: Any, out: Path, dtype: Any, info: dict[str, Any]) -> None:
    """Weights in the base model's dtype, the tokenizer with its chat template, and `training.json` (what was
    run): a folder `grm-server serve --model OUT` loads as it is."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(dtype)
    model.config.use_cache = True
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({**info, "saved_at": time.time()}, indent=2) + "\n", encoding="utf-8")


def log_summary(history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """First and last logged value of each key in TRL's log history (the per-step logs)."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [h[key] for h in history if key in h]
        if values:
            out[key] = {"first": values[0], "last": values[-1], "steps": len(values)}
    return out
