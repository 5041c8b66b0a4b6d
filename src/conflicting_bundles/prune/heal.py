"""Short fine-tune after pruning ("healing"), and accuracy evaluation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .discovery import run_model
from .scorers import _batch_len, _split_batch, _to

__all__ = ["heal", "evaluate", "logits_of", "classification_loss"]


def logits_of(output) -> torch.Tensor:
    """The logits of a model output: a tensor, ``output.logits`` (HF), or the first element."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}.")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; (B, C) vs (B,), or per token (B, T, V) vs (B, T)."""
    if logits.dim() == labels.dim() + 1:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    raise ValueError(
        f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not fit a "
        "classification loss; pass loss_fn=."
    )


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def heal(
    model: nn.Module,
    batches: Iterable,
    steps: int = 100,
    lr: float = 1e-4,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    weight_decay: float = 0.0,
) -> list[float]:
    """Fine-tune ``model`` in place for ``steps`` AdamW steps on ``batches`` of (x, y),
    cycling through them if they run out. Returns the loss of each step. The model is left in
    eval mode."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    loss_fn = loss_fn or classification_loss
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters to heal.")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = _device(model)
    losses: list[float] = []
    model.train()
    source = itertools.cycle(batches) if isinstance(batches, (list, tuple)) else batches
    it = iter(source)
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            raise ValueError(
                f"batches ran out after {len(losses)} of {steps} steps; pass a list (it is "
                "cycled) or a longer iterator."
            ) from None
        x, y = _split_batch(batch)
        if y is None:
            raise ValueError("heal needs (inputs, labels) batches.")
        x, y = _to(x, device), y.to(device)
        loss = loss_fn(logits_of(run_model(model, x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable) -> float:
    """Top-1 accuracy over ``batches`` of (x, y); eval mode, restored afterwards."""
    was_training = model.training
    model.eval()
    device = _device(model)
    correct = total = 0
    try:
        for batch in batches:
            x, y = _split_batch(batch)
            if y is None:
                raise ValueError("evaluate needs (inputs, labels) batches.")
            pred = logits_of(run_model(model, _to(x, device))).argmax(dim=-1)
            correct += int((pred == y.to(device)).sum())
            total += y.numel() if y.dim() > 1 else _batch_len(x)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate got no samples.")
    return correct / total
