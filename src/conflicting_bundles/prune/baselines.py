"""Baseline block scorers and the iterative (re-score after each removal) pruning loop.

- ``random``: uniform in [0, 1) per block, seeded; no forward pass.
- ``reverse-order``: the last blocks first (score = forward position). "Reassessing Layer
  Pruning in LLMs" (ICLR 2026) found that removing the last k layers, then fine-tuning, beats
  the elaborate scores.
- ``loss``: SLEB's criterion (Song et al. 2024): the calibration loss of the model with that
  one block removed; score = -loss. The loss is cross-entropy when batches carry labels and the
  model gives logits of (B, C); next-token cross-entropy (real tokens only) for a language model
  given ``input_ids`` and no labels; otherwise 1 - cos between the output features of the
  pruned and the reference (full) model (``last_hidden_state`` mean-pooled over real tokens:
  the sentence embedding of an encoder such as MiniLM).

:func:`iterative_prune` removes one block at a time and re-scores the survivors with any
scorer; with ``loss`` it is SLEB's greedy search.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..modelmode import evaluating
from .batches import attention_mask, iter_samples, split_batch
from .discovery import Block, find_blocks, run_model, to_device
from .scorers import Scorer, get_scorer, register_scorer
from .surgery import remove_blocks

__all__ = [
    "RandomScorer",
    "ReverseOrderScorer",
    "LossScorer",
    "IterativeResult",
    "iterative_prune",
    "output_features",
    "calibration_loss",
]


@register_scorer("random")
class RandomScorer(Scorer):
    """Uniform [0, 1) per block from a seeded generator, in block order; no forward pass."""

    uses_data = False

    def __init__(self, seed: int = 0, n_samples: int = 0, forward_chunk: int | None = None):
        super().__init__(n_samples, forward_chunk)
        self.seed = seed

    def score(self, model, blocks, batches=None):
        if not blocks:
            raise ValueError("no blocks to score: pass the list returned by find_blocks().")
        gen = torch.Generator().manual_seed(self.seed)
        values = torch.rand(len(blocks), generator=gen, dtype=torch.float64).tolist()
        self.details = {b.name: {"seed": self.seed} for b in blocks}
        return {b.name: v for b, v in zip(blocks, values, strict=True)}


@register_scorer("reverse-order")
class ReverseOrderScorer(Scorer):
    """score = position in forward order (0, 1, ...): the last block is the most removable."""

    uses_data = False

    def score(self, model, blocks, batches=None):
        if not blocks:
            raise ValueError("no blocks to score: pass the list returned by find_blocks().")
        self.details = {b.name: {"position": i} for i, b in enumerate(blocks)}
        return {b.name: float(i) for i, b in enumerate(blocks)}


def output_features(output, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F) features of a model output: a tensor (flattened per sample), ``logits`` (HF
    classifier/LM; a sequence is mean-pooled), or ``last_hidden_state`` mean-pooled over the
    real tokens of ``mask`` (B, T)."""
    t = output
    if not isinstance(t, torch.Tensor):
        for attr in ("logits", "last_hidden_state"):
            v = getattr(output, attr, None)
            if isinstance(v, torch.Tensor):
                t = v
                break
        else:
            if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
                t = output[0]
            else:
                raise TypeError(f"cannot read features from an output of {type(output).__name__}.")
    t = t.float()
    if t.dim() == 3:
        if mask is not None and tuple(mask.shape) == tuple(t.shape[:2]):
            w = mask.to(t.device).float()[..., None]  # (B, T, 1)
            return (t * w).sum(1) / w.sum(1).clamp_min(1.0)
        return t.mean(1)
    return t.reshape(t.shape[0], -1)


def _lm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Summed next-token cross-entropy over real target tokens, and their count."""
    target = ids[:, 1:].clone()
    if mask is not None:
        target[~mask[:, 1:].to(target.device)] = -100
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return loss, int((target != -100).sum())


@torch.no_grad()
def calibration_loss(
    model: nn.Module, batches: Iterable, reference: list[torch.Tensor] | None = None
) -> tuple[float, str]:
    """(mean loss, kind) of ``model`` on ``batches``; kind is "cross-entropy", "lm-loss" or
    "1-cos-to-full" (then ``reference`` holds the full model's features per batch)."""
    total, count, kind = 0.0, 0, ""
    with evaluating(model):
        device = next(model.parameters()).device
        for i, batch in enumerate(batches):
            x, y = split_batch(batch)
            x = to_device(x, device)
            out = run_model(model, x)
            logits = getattr(out, "logits", out)
            mask = attention_mask(x)
            ids = x.get("input_ids") if isinstance(x, Mapping) else None
            if y is not None and torch.is_tensor(logits) and logits.dim() == 2:
                kind = "cross-entropy"
                total += float(
                    F.cross_entropy(logits.float(), y.to(logits.device), reduction="sum")
                )
                count += y.shape[0]
            elif ids is not None and torch.is_tensor(logits) and logits.dim() == 3 and y is None:
                kind = "lm-loss"
                s, n = _lm_loss(logits, ids, mask)
                total, count = total + float(s), count + n
            else:
                if reference is None:
                    raise ValueError("loss: no labels and no LM logits; pass reference features.")
                kind = "1-cos-to-full"
                f = output_features(out, mask)
                total += float((1 - F.cosine_similarity(f, reference[i].to(f.device))).sum())
                count += f.shape[0]
    return total / max(count, 1), kind


@register_scorer("loss")
class LossScorer(Scorer):
    """SLEB's criterion: score = -(calibration loss with only this block removed).

    reference: the model whose outputs the "1-cos-to-full" loss compares to (default: the
      scored model; :func:`iterative_prune` sets the unpruned model).
    """

    def __init__(self, n_samples: int = 64, forward_chunk: int | None = None):
        super().__init__(n_samples, forward_chunk)
        self.reference: nn.Module | None = None

    def score(self, model, blocks, batches):
        if not blocks:
            raise ValueError("no blocks to score: pass the list returned by find_blocks().")
        device = next(model.parameters()).device
        data = list(iter_samples(batches, self.n_samples, device))
        ref_model = self.reference if self.reference is not None else model
        with torch.no_grad(), evaluating(ref_model):
            ref = [output_features(run_model(ref_model, x), attention_mask(x)) for x, _ in data]
        self.details, out = {}, {}
        for b in blocks:
            loss, kind = calibration_loss(remove_blocks(model, [b.name]), data, ref)
            self.details[b.name] = {"loss": loss, "loss_kind": kind}
            out[b.name] = -loss
        return out


@dataclass
class IterativeResult:
    """What :func:`iterative_prune` did: the pruned model, the removed blocks (names in the
    ORIGINAL model), and each step's scores (names at that step)."""

    model: nn.Module = field(repr=False)
    removed: list[str]
    steps: list[dict[str, float]]


def iterative_prune(
    model: nn.Module,
    batches: Iterable,
    remove: int,
    scorer: str | Scorer = "loss",
    example=None,
    blocks: str | None = None,
    scorer_kwargs: dict | None = None,
) -> IterativeResult:
    """Remove ``remove`` blocks one at a time, re-scoring the surviving blocks after each
    removal. ``model`` is not modified (the work happens on a deep copy)."""
    batches = list(batches)
    work = copy.deepcopy(model)
    found = find_blocks(work, example=example, blocks=blocks)
    if not 0 <= remove <= len(found):
        raise ValueError(f"remove={remove}, but the model has {len(found)} removable blocks.")
    original = {id(b.module): b.name for b in found}
    sc = get_scorer(scorer, **(scorer_kwargs or {})) if isinstance(scorer, str) else scorer
    if hasattr(sc, "reference"):
        sc.reference = model
    removed, steps = [], []
    for _ in range(remove):
        current: list[Block] = [
            b for b in find_blocks(work, example=example, blocks=blocks) if id(b.module) in original
        ]
        scores = sc.score(work, current, batches)
        steps.append(scores)
        best = max(current, key=lambda b: scores[b.name])  # ties: first in forward order
        removed.append(original[id(best.module)])
        remove_blocks(work, [best], inplace=True)
    return IterativeResult(work, removed, steps)
