"""Short fine-tune after pruning ("healing"), and accuracy evaluation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..modelmode import evaluating
from .batches import batch_len, split_batch
from .discovery import find_blocks, run_model, to_device

__all__ = [
    "heal",
    "evaluate",
    "logits_of",
    "classification_loss",
    "trainable",
    "trainable_count",
    "head_and_last",
]


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


def trainable(model: nn.Module, train: str = "all", example=None) -> list[nn.Parameter]:
    """The parameters :func:`heal` updates for a ``train`` mode."""
    last = parse_train(train)
    if last is None:
        return [p for p in model.parameters() if p.requires_grad]
    if example is None:
        raise ValueError(f"train={train!r} needs example= (one input batch) to find the head.")
    return [p for p in head_and_last(model, example, last) if p.requires_grad]


def trainable_count(model: nn.Module, train: str = "all", example=None) -> int:
    """Number of weights :func:`heal` updates for ``train``."""
    return sum(p.numel() for p in trainable(model, train, example))


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def head_and_last(model: nn.Module, example, last: int) -> list[nn.Parameter]:
    """Parameters of the "head" (modules that first run after the last removable block
    finishes: final norm, pooler, classifier; a tied LM head brings its embedding) and of the
    last ``last`` removable blocks, in forward order. Found by one traced forward."""
    blocks = find_blocks(model, example=example)
    order: list[nn.Module] = []
    done = {"flag": False}

    def pre(m, _args):
        if done["flag"] and any(True for _ in m.parameters(recurse=False)):
            order.append(m)

    def post(_m, _args, _out):
        done["flag"] = True

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles.append(blocks[-1].module.register_forward_hook(post))
    try:
        with torch.no_grad(), evaluating(model):
            run_model(model, to_device(example, _device(model)))
    finally:
        for h in handles:
            h.remove()
    mods = [b.module for b in blocks[len(blocks) - last :]] if last > 0 else []
    params: dict[int, nn.Parameter] = {}
    for m in mods:
        params.update((id(p), p) for p in m.parameters())
    for m in order:
        params.update((id(p), p) for p in m.parameters(recurse=False))
    return list(params.values())


def parse_train(train: str) -> int | None:
    """ "all" -> None; "head" -> 0; "head+last:N" -> N (blocks trained beside the head)."""
    if train == "all":
        return None
    if train == "head":
        return 0
    if train.startswith("head+last:") and train.split(":", 1)[1].isdigit():
        return int(train.split(":", 1)[1])
    raise ValueError(f"train={train!r}: use 'all', 'head' or 'head+last:N' (e.g. head+last:2).")


def heal(
    model: nn.Module,
    batches: Iterable,
    steps: int = 100,
    lr: float = 1e-4,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    train: str = "all",
    example=None,
    progress: Callable[[str], None] | None = None,
) -> list[float]:
    """Fine-tune ``model`` in place for ``steps`` AdamW steps on ``batches`` of (x, y),
    cycling through them if they run out. Returns the loss of each step. The model is left in
    eval mode.

    train: "all" weights, or "head" / "head+last:N": only the head and the last N removable
      blocks (:func:`head_and_last`; needs ``example``, one input batch), the others frozen
      for the run and unfrozen afterwards. ``trainable_count(model, train, example)`` gives
      the number of weights that moved (the healing budget beside ``steps``).
    progress: called with one line about every tenth of the steps."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    loss_fn = loss_fn or classification_loss
    params = trainable(model, train, example)
    if not params:
        raise ValueError("the model has no trainable parameters to heal.")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    chosen = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for p in frozen:  # no gradients computed for what does not move
        p.requires_grad_(False)
    # Frozen BatchNorm layers keep their running statistics: they stay in eval mode.
    still = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and not any(id(p) in chosen for p in m.parameters())
    ]
    try:
        return _fit(model, batches, steps, opt, loss_fn, still if frozen else [], progress)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _fit(model, batches, steps, opt, loss_fn, still: list[nn.Module], progress) -> list[float]:
    device = _device(model)
    losses: list[float] = []
    model.train()
    for m in still:
        m.eval()
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
        x, y = split_batch(batch)
        if y is None:
            raise ValueError("heal needs (inputs, labels) batches.")
        x, y = to_device(x, device), y.to(device)
        loss = loss_fn(logits_of(run_model(model, x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (len(losses) % max(1, steps // 10) == 0 or len(losses) == steps):
            progress(f"heal step {len(losses)}/{steps}: loss {losses[-1]:.4f}")
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable) -> float:
    """Top-1 accuracy over ``batches`` of (x, y); eval mode, restored afterwards."""
    device = _device(model)
    correct = total = 0
    with evaluating(model):
        for batch in batches:
            x, y = split_batch(batch)
            if y is None:
                raise ValueError("evaluate needs (inputs, labels) batches.")
            pred = logits_of(run_model(model, to_device(x, device))).argmax(dim=-1)
            correct += int((pred == y.to(device)).sum())
            total += y.numel() if y.dim() > 1 else batch_len(x)
    if total == 0:
        raise ValueError("evaluate got no samples.")
    return correct / total
