"""One training epoch (the step loop, divergence checks, evaluation) and the best-checkpoint
choice."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .. import distributed, runs
from ..console import progress_enabled
from ..data import iterate, num_batches
from .components import evaluate, params_finite, w_max
from .config import LAST_EPOCHS, TrainConfig, TrainingDiverged
from .state import TrainState
from .summary import new_row


def best_metric(config: TrainConfig) -> str:
    """The row column that picks best.pt: val_acc with a validation split, else train_acc.
    Never test_acc: a checkpoint chosen on test data would leak the test set into the choice."""
    return "val_acc" if config.val_split > 0 else "train_acc"


def update_best(best: dict, row: dict, metric: str) -> bool:
    """Record ``row`` in ``best`` (metric, value, epoch, test_acc) if it beats it."""
    v = row.get(metric)
    if v is None or (best.get("value") is not None and v <= best["value"]):
        return False
    best.update(metric=metric, value=v, epoch=row["epoch"], test_acc=row.get("test_acc"))
    return True


def run_epoch(state: TrainState, best: dict) -> tuple[dict, bool]:
    """Train one epoch, then evaluate if due. Returns (row, is_best) where ``row`` still holds
    the start time ``_t0`` so callbacks' work counts into ``epoch_time``."""
    from tqdm import tqdm

    cfg, model, opt, e = state.config, state.model, state.optimizer, state.epoch
    t0 = time.perf_counter()
    n_steps = num_batches(len(state.train_ds), cfg.batch_size)
    shard = distributed.shard()  # (rank, world) under torchrun, else None
    batches = iterate(
        state.train_ds,
        cfg.batch_size,
        shuffle=True,
        augment=cfg.augment,
        seed=cfg.seed,
        epoch=e,  # data order and augmentation: a function of (seed, epoch) only
        device=state.device,
        shard=shard,  # this rank's slice of each global batch
    )
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(
        batches,
        total=n_steps,
        desc=f"epoch {e}/{cfg.epochs}",
        leave=False,
        disable=not (cfg.progress and distributed.is_main() and progress_enabled()),
        dynamic_ncols=True,
    )
    for step, (x, y) in enumerate(bar):
        if shard is not None and len(y) == 0:
            # This rank's slice of a short last batch is empty, but DDP needs its forward and
            # backward: two zero samples (BatchNorm needs two in training) weighted by zero.
            # Their BatchNorm statistics stay on this rank (rank 0's are kept), except with
            # sync_bn, where they enter this one step's statistics.
            x = torch.zeros((2, *x.shape[1:]), device=x.device)
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            logits = state.train_model(x)
        logits = logits.float()
        if shard is None:
            loss = F.cross_entropy(logits, y)
            loss_val = float(loss.detach())
            n_correct, n_batch = int((logits.detach().argmax(1) == y).sum()), len(y)
        else:
            loss, loss_val, n_correct, n_batch = sharded_loss(logits, y, shard[1])
        if not math.isfinite(loss_val):
            raise TrainingDiverged(
                f"the training loss became {loss_val} at epoch {e}, step {step + 1}/{n_steps}. "
                f"Lower the learning rate (now {cfg.lr:g}) and start a new run. The last good "
                f"checkpoint (epoch {e - 1}) is kept in {runs.checkpoint_path(state.run_dir)}.",
                e,
                step + 1,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss_val * n_batch
        correct += n_correct
        seen += n_batch
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}%")
    bar.close()
    # Each rank's BatchNorm running statistics saw only its slices: use rank 0's everywhere
    # (they are the ones checkpointed), so evaluation and measurement agree on every rank.
    distributed.broadcast_buffers(model)
    if not params_finite(model):
        raise TrainingDiverged(
            f"a parameter became NaN/Inf in the last step of epoch {e}. Lower the learning rate "
            f"(now {cfg.lr:g}) and start a new run. The last good checkpoint (epoch {e - 1}) is "
            f"kept in {runs.checkpoint_path(state.run_dir)}.",
            e,
            None,
        )
    row = new_row(e)
    row["train_loss"] = loss_sum / max(seen, 1)
    row["train_acc"] = correct / max(seen, 1)
    row["train_time"] = time.perf_counter() - t0
    if e % cfg.eval_every == 0 or e > cfg.epochs - LAST_EPOCHS:
        if state.val_ds is not None:
            row["val_loss"], row["val_acc"] = evaluate(
                model, state.val_ds, state.device, shard=shard
            )
        if state.test_ds is not None:
            row["test_loss"], row["test_acc"] = evaluate(
                model, state.test_ds, state.device, shard=shard
            )
    is_best = update_best(best, row, best_metric(cfg))
    row["w_max"] = w_max(model)
    row["lr"] = cfg.lr
    row["steps"] = n_steps
    row["epoch_time"] = 0.0  # completed after the callbacks ran
    row["_t0"] = t0
    return row, is_best


def sharded_loss(
    logits: torch.Tensor, y: torch.Tensor, world: int
) -> tuple[torch.Tensor, float, int, int]:
    """This rank's loss for a slice of the global batch, and the global batch's figures.

    DDP averages gradients over the ``world`` ranks, so each rank's loss is
    ``world * (sum of its per-sample losses) / global batch size``: the average of these is the
    single-process mean loss, whatever the slice sizes. One small all-reduce gives the global
    loss (the same on every rank, so a NaN stops all ranks together), correct count and size.
    Returns (loss to backward, global mean loss, global correct, global batch size). An empty
    slice (``y`` empty, ``logits`` of placeholder inputs) contributes a zero loss."""
    if len(y) == 0:
        per_sample, correct = logits.sum() * 0.0, torch.zeros((), device=logits.device)
    else:
        per_sample = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.detach().argmax(1) == y).sum()
    stats = torch.stack(
        [
            per_sample.detach().double(),
            correct.double(),
            torch.tensor(float(len(y)), dtype=torch.float64, device=logits.device),
        ]
    )
    total, n_correct, n_batch = distributed.all_reduce_sum(stats).tolist()
    n_batch = int(n_batch)
    return per_sample * (world / n_batch), total / n_batch, int(n_correct), n_batch
