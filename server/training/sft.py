"""`train sft`: rejection fine-tuning on `train rft` rows with TRL's SFTTrainer, loss on the completion only,
optionally through a LoRA adapter (peft) merged into the weights on save."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.training.rft_output import file_sha256_or_none
from server.training.trl_common import log_summary, lora_config, on_gpu, read_rows, save_model_folder


@dataclass(frozen=True, slots=True)
class SFTOptions:
    data: Path
    out: Path
    model: str
    max_steps: int = -1
    epochs: float = 2.0
    lr: float = 1e-5
    lora_rank: int = 0
    lora_alpha: int = 32
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048
    seed: int = 0
    template: str | None = None  # the template the rows were rendered with (RFT manifest): served with it


def build_trainer(options: SFTOptions, work_dir: str) -> Any:
    """TRL's SFTTrainer over the rows (prompt-completion: `completion_only_loss`), on the GPU in bf16 when there is one."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    rows = read_rows(options.data)
    gpu = on_gpu()
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    model = AutoModelForCausalLM.from_pretrained(options.model, dtype=torch.bfloat16 if gpu else torch.float32)
    args = SFTConfig(
        output_dir=work_dir, max_steps=options.max_steps, num_train_epochs=options.epochs,
        learning_rate=options.lr, per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum, max_length=options.max_length,
        completion_only_loss=True, logging_steps=1, save_strategy="no", report_to="none", seed=options.seed,
        use_cpu=not gpu, bf16=gpu, dataset_num_proc=None, lr_scheduler_type="cosine", warmup_steps=0,
    )  # fmt: skip
    peft_config = lora_config(options.lora_rank, options.lora_alpha, dropout=0.05)
    return SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=peft_config,
    )  # fmt: skip


def train_sft(options: SFTOptions) -> dict[str, Any]:
    """Train, merge a LoRA adapter into the weights, save the model folder; what was run and the loss curve ends."""
    from transformers import AutoConfig

    started = time.monotonic()
    base_dtype = AutoConfig.from_pretrained(options.model).dtype
    with tempfile.TemporaryDirectory(prefix="grm-sft-") as work:
        trainer = build_trainer(options, work)
        result = trainer.train()
        model = trainer.model
        if options.lora_rank > 0:
            model = model.merge_and_unload()
        info = {
            "kind": "sft", "base": options.model, "template": options.template, "options": {k: str(v) for k, v in asdict(options).items()},
            "data_sha256": file_sha256_or_none(options.data), "rows": len(trainer.train_dataset),
            "steps": result.global_step, "train_loss": result.training_loss,
            "log": log_summary(trainer.state.log_history, ("loss", "mean_token_accuracy", "num_tokens")),
            "time_s": round(time.monotonic() - started, 1),
        }  # fmt: skip
        save_model_folder(model, trainer.processing_class, options.out, base_dtype, info)
    return info
