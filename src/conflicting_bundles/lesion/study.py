"""The lesion study on a model: single-block lesions, random lesion sets per group and k, the
jointly lesioned individually harmless blocks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..console import progress_enabled
from ..measurespec import MeasureSpec
from . import signals
from .cache import AccuracyCache, fingerprint
from .config import ALL, Group, LesionConfig, LesionResult
from .signals import block_signals, matched_controls
from .summary import correlations, summarize


@dataclass
class Plan:
    """One curve: lesion sets of k = 1.. blocks drawn from ``members`` (the group of blocks
    ``criterion`` puts in ``group``); position-matched plans map each draw to ``controls``."""

    criterion: str
    group: Group
    members: list[int]
    controls: list[int] = field(default_factory=list)

    def max_k(self, max_k: int) -> int:
        if self.group is Group.POSITION_MATCHED:
            return min(max_k, len(self.members), len(self.controls))
        return min(max_k, len(self.members))


def plans(blocks: list[dict], lesionable: list[int], cfg: LesionConfig) -> list[Plan]:
    """The "all" plan, then per flag criterion its conflicting, non-conflicting and (when both
    are non-empty) position-matched plans."""
    out = [Plan(ALL, Group.ALL, lesionable)]
    for c in cfg.flag_criteria:
        flagged = [i for i in lesionable if blocks[i][f"flag[{c}]"]]
        unflagged = [i for i in lesionable if i not in flagged]
        out += [Plan(c, Group.CONFLICTING, flagged), Plan(c, Group.NON_CONFLICTING, unflagged)]
        if flagged and unflagged:
            out.append(Plan(c, Group.POSITION_MATCHED, flagged, unflagged))
    return out


def draws(members: list[int], k: int, repeats: int, seed: int) -> list[list[int]]:
    """``repeats`` random k-subsets of ``members``, seeded by the seed, k and the member set
    only: groups with the same members (e.g. "non-conflicting" when nothing is flagged, and
    "all") draw the same sets and share cached results; the position-matched group is paired
    with the conflicting group's draws."""
    rng = random.Random(f"{seed}|{k}|{','.join(map(str, members))}")
    return [sorted(rng.sample(members, k)) for _ in range(repeats)]


def plan_sets(plan: Plan, k: int, cfg: LesionConfig) -> tuple[list[list[int]], list[float]]:
    """The lesion sets of ``plan`` at size k, and (position-matched) each set's mean distance
    to the flagged blocks it stands for."""
    sets = draws(plan.members, k, cfg.repeats, cfg.seed)
    if plan.group is not Group.POSITION_MATCHED:
        return sets, []
    rng = random.Random(f"{cfg.seed}|match|{k}|{plan.members}|{plan.controls}")
    matched = [matched_controls(s, plan.controls, rng) for s in sets]
    dist = [
        float(np.mean([abs(a - b) for a, b in zip(s, m, strict=True)]))
        for s, m in zip(sets, matched, strict=True)
    ]
    return [sorted(m) for m in matched], dist


def _check_inputs(model, train_xy, test_xy, cfg: LesionConfig) -> None:
    if not (hasattr(model, "lesioned") and hasattr(model, "block_info")):
        raise TypeError(
            f"{type(model).__name__} has no lesioned()/block_info(); the lesion study needs one "
            "of this project's models (fnn, plain, resnet). For other models use `cbundles prune`."
        )
    if len(train_xy[1]) < cfg.samples:
        raise ValueError(
            f"{len(train_xy[1])} training samples given, the study measures {cfg.samples}; "
            "lower --samples."
        )
    if len(test_xy[1]) == 0:
        raise ValueError("the test set is empty: the study needs test samples to score lesions.")


def lesion_study(
    model: nn.Module,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    test_xy: tuple[torch.Tensor, torch.Tensor],
    cfg: LesionConfig,
    cache_path: Path | None = None,
    progress: bool = True,
    *,
    spec: MeasureSpec | None = None,
) -> LesionResult:
    """The whole study on a model with ``block_info()`` and ``lesioned()`` (this project's
    models). train_xy: non-augmented training samples x (N, ...), y (N,) (the first
    ``cfg.samples`` are measured); test_xy: the preprocessed test set x (M, ...), y (M,).
    spec: the measurement context of the conflict signals (the training lr and batch size set
    the metric's resolution): default ``cfg.measure_spec()`` (cfg's lr / batch size, else 1e-3 /
    64); lesion_run passes the run's (MeasureSpec.from_run) with cfg's overrides.
    progress: progress bars, drawn only where console.progress_enabled() (a terminal, no
    --no-progress or TQDM_DISABLE)."""
    _check_inputs(model, train_xy, test_xy, cfg)
    x_tr, y_tr = train_xy[0][: cfg.samples], train_xy[1][: cfg.samples]
    x_te, y_te = test_xy
    spec = spec or cfg.measure_spec()
    blocks = block_signals(model, x_tr, y_tr, cfg, spec)
    lesionable = [b["index"] for b in blocks if b["lesionable"]]
    if not lesionable:
        raise ValueError(
            f"{type(model).__name__} has no lesionable block (none has a shortcut of the right "
            "shape); the lesion study needs residual blocks or equal-width hidden layers."
        )
    cache = AccuracyCache(cache_path, fingerprint(model, x_te, y_te))

    def acc_of(idx: Sequence[int]) -> float:
        key = ",".join(map(str, sorted(idx)))
        v = cache.get(key)
        if v is None:
            with model.lesioned(list(idx)):
                v = signals.accuracy(model, x_te, y_te, cfg.eval_batch_size)
            cache.put(key, v)
        return v

    base = acc_of([])
    bars = progress and progress_enabled()  # bars only on a terminal, never when piped
    max_k = min(cfg.max_k or len(lesionable), len(lesionable))
    for b in tqdm(blocks, desc="single-block lesions", disable=not bars, leave=False):
        if b["lesionable"]:
            b["single_acc"] = acc_of([b["index"]])
            b["single_harm"] = base - b["single_acc"]
        else:
            b["single_acc"] = b["single_harm"] = None

    todo = plans(blocks, lesionable, cfg)
    total = sum(p.max_k(max_k) for p in todo) * cfg.repeats
    curves = []
    bar = tqdm(total=total, desc="lesion sets", disable=not bars, leave=False)
    for p in todo:
        for k in range(1, p.max_k(max_k) + 1):
            sets, dist = plan_sets(p, k, cfg)
            accs = []
            for s in sets:
                accs.append(acc_of(s))
                bar.update()
            curves.append(
                {
                    "criterion": p.criterion,
                    "group": p.group.value,
                    "k": k,
                    "fraction_of_blocks": k / len(blocks),
                    "test_acc_mean": float(np.mean(accs)),
                    "test_acc_std": float(np.std(accs)),
                    "loss_mean": base - float(np.mean(accs)),
                    "n_sets": len(accs),
                    "n_distinct_sets": len({tuple(s) for s in sets}),
                    "group_size": len(p.members),
                    "match_distance_mean": float(np.mean(dist)) if dist else None,
                }
            )
    bar.close()
    # The blocks whose lesion alone costs less than the tolerance, lesioned together: are the
    # individually harmless blocks also jointly removable?
    harmless = [b["index"] for b in blocks if b["lesionable"] and b["single_harm"] < cfg.tolerance]
    joint = acc_of(harmless) if harmless else base
    cache.save()
    corr = correlations(blocks, cfg)
    summary = summarize(base, blocks, curves, corr, cfg, len(y_te))
    w = blocks[0]["w_max"] if blocks else None  # the model's, as block_signals measured
    summary["measure"] = {**spec.to_dict(), "w_max": w, "source": cfg.measure_source("default")}
    summary["individually_harmless"] = {
        "blocks": [blocks[i]["block"] for i in harmless],
        "k": len(harmless),
        "fraction_of_blocks": len(harmless) / len(blocks),
        "joint_test_acc": joint,
        "joint_loss": base - joint,
    }
    return LesionResult(base, blocks, curves, corr, summary)
