"""Per-block signals of a model (bundle entropy under each criterion, margin, position), the
accuracy of a (lesioned) model, and position-matched control blocks."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from ..metric import Criterion, conflict_margin, weight_amplitude
from ..probes import probe
from .config import LesionConfig


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` in eval mode; x (N, C, H, W) float32, y (N,).
    The model's train/eval mode is restored."""
    was = model.training
    model.eval()
    correct = 0
    try:
        for s in range(0, len(y), batch_size):
            logits = model(x[s : s + batch_size])  # (B, classes)
            correct += int((logits.argmax(1) == y[s : s + batch_size]).sum())
    finally:
        model.train(was)
    return 100.0 * correct / max(1, len(y))


@torch.no_grad()
def block_signals(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: LesionConfig
) -> list[dict]:
    """One row per block, in forward order: position (index, stage, position_in_stage,
    projecting, lesionable), the margin and, per criterion, entropy/bundles/flag, measured on
    (x, y) (non-augmented training samples, (N, ...) and (N,)) in eval mode in one forward."""
    was = model.training
    model.eval()
    w_max = weight_amplitude(model)
    try:
        with probe(model, kind=cfg.kind) as p:
            model(x)
    finally:
        model.train(was)
    info = {d["name"]: d for d in model.block_info()}
    crits = [Criterion.parse(c) for c in cfg.criteria]
    rows = []
    for pt in p.points:
        a = p.get(pt.name).reshape(len(y), -1)  # (N, D)
        d = info.get(pt.name, {})
        row = {
            "block": pt.name,
            "index": d.get("index", len(rows)),
            "stage": d.get("stage", ""),
            "position_in_stage": d.get("position_in_stage", len(rows)),
            "projecting": bool(d.get("projecting", False)),
            "lesionable": bool(d.get("lesionable", True)),
            "margin": conflict_margin(a, y, w_max=w_max, lr=cfg.lr, batch_size=cfg.batch_size),
        }
        for c in crits:
            st = c.stats(a, y, w_max=w_max, lr=cfg.lr, batch_size=cfg.batch_size)
            row[f"entropy[{c.name}]"] = st.entropy
            row[f"bundles[{c.name}]"] = st.num_bundles
            row[f"flag[{c.name}]"] = st.conflicting
        row["w_max"] = w_max
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
