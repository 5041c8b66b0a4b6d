"""Per-block signals of a model (bundle entropy under each criterion, margin, position), the
accuracy of a (lesioned) model, and position-matched control blocks."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..measurespec import MeasureSpec
from ..metric import Criterion, weight_amplitude
from ..modelmode import evaluating
from ..probes import probe
from .config import LesionConfig


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 500,
    on_batch: Callable[[int, int], None] | None = None,
) -> float:
    """Top-1 accuracy (a fraction in 0..1) of ``model`` in eval mode; x (N, C, H, W) float32,
    y (N,). The model's train/eval mode is restored. on_batch(seen, N): called after each
    batch (the study's progress lines)."""
    correct = 0
    with evaluating(model):
        for s in range(0, len(y), batch_size):
            logits = model(x[s : s + batch_size])  # (B, classes)
            correct += int((logits.argmax(1) == y[s : s + batch_size]).sum())
            if on_batch is not None:
                on_batch(min(s + batch_size, len(y)), len(y))
    return correct / max(1, len(y))


@torch.no_grad()
def block_signals(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: LesionConfig,
    spec: MeasureSpec | None = None,
) -> list[dict]:
    """One row per block, in forward order: position (index, stage, position_in_stage,
    projecting, lesionable), the margin and, per criterion, entropy/bundles/flag, measured on
    (x, y) (non-augmented training samples, (N, ...) and (N,)) in eval mode in one forward.
    spec: the measurement context (lr, batch size, kind); default ``cfg.measure_spec()``.
    Each (block, criterion) is :meth:`MeasureSpec.layer_stats`, as measure_run and prune's
    conflict scorer compute it."""
    spec = (spec or cfg.measure_spec()).replace(w_max=weight_amplitude(model))
    with evaluating(model), probe(model, kind=spec.kind) as p:
        model(x)
    info = {d["name"]: d for d in model.block_info()}
    crits = [Criterion.parse(c).name for c in cfg.criteria]
    rows = []
    for pt in p.points:
        a = p.get(pt.name).reshape(len(y), -1)  # (N, D)
        d = info.get(pt.name, {})
        stats = [
            spec.layer_stats(a, y, criterion=c, name=pt.name, margin=i == 0)
            for i, c in enumerate(crits)
        ]
        row = {
            "block": pt.name,
            "index": d.get("index", len(rows)),
            "stage": d.get("stage", ""),
            "position_in_stage": d.get("position_in_stage", len(rows)),
            "projecting": bool(d.get("projecting", False)),
            "lesionable": bool(d.get("lesionable", True)),
            "margin": stats[0].margin,  # the same for every criterion (units of q)
        }
        for c, st in zip(crits, stats, strict=True):
            row[f"entropy[{c}]"] = st.entropy
            row[f"bundles[{c}]"] = st.num_bundles
            row[f"flag[{c}]"] = st.conflicting
        row["w_max"] = spec.w_max
        rows.append(row)
    return rows


def matched_controls(
    flagged: Sequence[int], others: Sequence[int], rng: random.Random
) -> list[int]:
    """Position-matched controls: for each flagged block (in the given order) the not yet chosen
    block of ``others`` nearest to it in forward order (block index), ties broken by ``rng``.
    Raises ValueError when ``others`` has fewer blocks than ``flagged``."""
    if len(others) < len(flagged):
        raise ValueError(
            f"cannot match {len(flagged)} flagged blocks with {len(others)} other blocks: a "
            "control set needs one distinct block per flagged block."
        )
    pool = list(others)
    out = []
    for f in flagged:
        best = min(abs(o - f) for o in pool)
        choice = rng.choice([o for o in pool if abs(o - f) == best])
        out.append(choice)
        pool.remove(choice)
    return out
