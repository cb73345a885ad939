"""Train a scalar Meta RM with binary cross-entropy on labelled judgments (pure torch/transformers).

Two modes: a full fine-tune of a sequence-classification model, or (CPU friendly) a frozen backbone whose
pooled last-token features are computed once and only the linear `score` head is fitted on them.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from meta_rm.embedded import head_module
from meta_rm.hf import length_batches, pad_batch, quiet_transformers, resolve_device, resolve_dtype, score_ids
from meta_rm.inputs import encode
from meta_rm.records import JudgmentRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; `freeze_backbone` trains only the scalar head (lr/epochs/l2 then apply to it)."""

    model: str
    freeze_backbone: bool = True
    epochs: int = 1
    lr: float = 1e-5
    batch_size: int = 4
    l2: float = 0.0
    max_length: int = 2048
    eval_fraction: float = 0.2
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    features_cache: str | None = None


@dataclass
class TrainResult:
    """The trained model (in memory), its tokenizer, and what was measured."""

    model: Any
    tokenizer: Any
    loss_before: float
    loss_after: float
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def split_by_item(
    records: Sequence[JudgmentRecord], eval_fraction: float, seed: int
) -> tuple[list[JudgmentRecord], list[JudgmentRecord]]:
    """Train/eval split by item id (all judgments of an item on one side), seeded."""
    ids = sorted({r.item_id for r in records})
    random.Random(seed).shuffle(ids)
    n_eval = round(len(ids) * eval_fraction)
    held = set(ids[:n_eval])
    return [r for r in records if r.item_id not in held], [r for r in records if r.item_id in held]


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC: the chance a random correct judgment outscores a random incorrect one (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def accuracy(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Share of judgments whose sign (logit > 0 = correct) matches the label."""
    if not scores:
        return float("nan")
    return sum((s > 0) == y for s, y in zip(scores, labels, strict=True)) / len(scores)


def bce(logits: Any, labels: Any) -> Any:
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def load_for_training(config: TrainConfig) -> tuple[Any, Any]:
    """A one-label classifier on `config.model` (a new head is seeded), in float32 on CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            config.model, num_labels=1, dtype=resolve_dtype(config.dtype, device)
        )
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.id2label, model.config.label2id = {0: "correct"}, {"correct": 0}
    return model.to(device), tokenizer


def pooled_features(model: Any, ids: Sequence[Sequence[int]], batch_size: int, progress: bool = False) -> Any:
    """The hidden state the scalar head reads for each sequence (captured at the head's input, pooled
    at the last non-pad token exactly as the model's own forward pools)."""
    import torch

    head, pad_id = head_module(model), int(model.config.pad_token_id)
    device = str(next(model.parameters()).device)
    captured: list[Any] = []
    hook = head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    rows: list[Any] = [None] * len(ids)
    try:
        with torch.inference_mode():
            for batch in tqdm(length_batches([len(x) for x in ids], batch_size), desc="features", disable=not progress):
                captured.clear()
                inputs = pad_batch([ids[i] for i in batch], pad_id, device)
                model(**inputs)
                hidden = captured[0]
                last = ((inputs["input_ids"] != pad_id).int() * torch.arange(hidden.shape[1], device=device)).argmax(-1)
                for row, i in enumerate(batch):
                    rows[i] = hidden[row, last[row]].float().cpu()
    finally:
        hook.remove()
    return torch.stack(rows)


def cached_features(model: Any, ids: Sequence[Sequence[int]], config: TrainConfig, progress: bool) -> Any:
    """`pooled_features`, reused from `config.features_cache` when it holds the same model and token ids
    (head-only runs with other hyper-parameters then skip the expensive backbone passes)."""
    import hashlib

    import torch

    if config.features_cache is None:
        return pooled_features(model, ids, config.batch_size, progress)
    digest = hashlib.sha256(json.dumps([config.model, config.dtype, list(map(list, ids))]).encode()).hexdigest()
    path = Path(config.features_cache)
    if path.is_file():
        stored = torch.load(path)
        if stored.get("key") == digest:
            logger.info("features reused from %s", path)
            return stored["features"]
    feats = pooled_features(model, ids, config.batch_size, progress)
    torch.save({"key": digest, "features": feats}, path)
    return feats


def _fit_head(model: Any, feats: Any, labels: Any, config: TrainConfig, progress: bool) -> list[float]:
    """Full-batch Adam on the head only, BCE + l2 * ||w||^2; one loss per epoch."""
    import torch

    head = head_module(model)
    weight = head.weight.detach().float().clone().requires_grad_(True)
    bias = None if head.bias is None else head.bias.detach().float().clone().requires_grad_(True)
    params = [weight] + ([bias] if bias is not None else [])
    opt = torch.optim.Adam(params, lr=config.lr)
    losses = []
    for _ in tqdm(range(config.epochs), desc="head", disable=not progress):
        logits = feats @ weight[0] + (bias[0] if bias is not None else 0.0)
        loss = bce(logits, labels) + config.l2 * weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.dtype))
        if bias is not None:
            head.bias.copy_(bias.to(head.bias.dtype))
    return losses


def _fine_tune(
    model: Any, ids: list[list[int]], labels: list[float], config: TrainConfig, progress: bool
) -> list[float]:
    """Full fine-tune: AdamW over shuffled mini-batches, gradient norm clipped at 1; one loss per step."""
    import torch

    pad_id, device = int(model.config.pad_token_id), str(next(model.parameters()).device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.l2)
    rng, losses = random.Random(config.seed), []
    model.train()
    steps = config.epochs * ((len(ids) + config.batch_size - 1) // config.batch_size)
    with tqdm(total=steps, desc="fine-tune", disable=not progress) as bar:
        for _ in range(config.epochs):
            order = list(range(len(ids)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                logits = model(**pad_batch([ids[i] for i in batch], pad_id, device)).logits[:, 0].float()
                loss = bce(logits, torch.tensor([labels[i] for i in batch], device=device))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(float(loss))
                bar.update(1)
    model.eval()
    return losses


def _mean_bce(scores: Sequence[float], labels: Sequence[float]) -> float:
    import torch

    return float(bce(torch.tensor(scores), torch.tensor(labels)))


def train(records: Sequence[JudgmentRecord], config: TrainConfig, progress: bool = False) -> TrainResult:
    """Split by item, fit, and measure BCE before/after on the training split and AUC/accuracy on the eval split."""
    import torch

    train_recs, eval_recs = split_by_item(records, config.eval_fraction, config.seed)
    if not train_recs:
        raise ValueError("no training judgments after the eval split")
    if len({r.correct for r in train_recs}) < 2:
        raise ValueError("the training judgments are all correct or all incorrect: nothing to learn")
    model, tokenizer = load_for_training(config)
    pad_id = int(model.config.pad_token_id)
    train_ids = encode([r.to_input() for r in train_recs], tokenizer, config.max_length)
    eval_ids = encode([r.to_input() for r in eval_recs], tokenizer, config.max_length)
    y_train = [float(r.correct) for r in train_recs]
    if config.freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
        feats = cached_features(model, train_ids + eval_ids, config, progress)
        head = head_module(model)

        def logits_of(x: Any) -> list[float]:
            with torch.no_grad():
                out = x @ head.weight[0].float() + (head.bias[0].float() if head.bias is not None else 0.0)
            return [float(v) for v in out]

        before = _mean_bce(logits_of(feats[: len(train_ids)]), y_train)
        losses = _fit_head(model, feats[: len(train_ids)], torch.tensor(y_train), config, progress)
        after_train, eval_scores = logits_of(feats[: len(train_ids)]), logits_of(feats[len(train_ids) :])
    else:
        model.eval()
        before = _mean_bce(score_ids(model, train_ids, pad_id, config.batch_size), y_train)
        losses = _fine_tune(model, train_ids, y_train, config, progress)
        after_train = score_ids(model, train_ids, pad_id, config.batch_size)
        eval_scores = score_ids(model, eval_ids, pad_id, config.batch_size) if eval_ids else []
    y_eval = [r.correct for r in eval_recs]
    metrics = {
        "train_judgments": float(len(train_recs)),
        "eval_judgments": float(len(eval_recs)),
        "train_auc": auc(after_train, [bool(y) for y in y_train]),
        "eval_auc": auc(eval_scores, y_eval),
        "eval_accuracy": accuracy(eval_scores, y_eval),
        "eval_correct_rate": sum(y_eval) / len(y_eval) if y_eval else float("nan"),
    }
    return TrainResult(model, tokenizer, before, _mean_bce(after_train, y_train), losses, metrics)


def save_checkpoint(result: TrainResult, out: Path, config: TrainConfig) -> None:
    """The standard save_pretrained layout (+ tokenizer), loadable by every backend, plus what was measured."""
    out.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out)
    result.tokenizer.save_pretrained(out)
    report = {
        "config": asdict(config),
        "loss_before": result.loss_before,
        "loss_after": result.loss_after,
        "metrics": result.metrics,
    }
    (out / "meta_rm_training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
