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

from ..measurespec import MeasureSpec
from ..report import plural
from . import signals
from .cache import AccuracyCache, fingerprint
from .config import ALL, Group, LesionConfig, LesionResult
from .progress import StudyProgress
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


class _Scorer:
    """Test accuracy of lesion sets: from the cache, else evaluated (and counted by the
    progress lines)."""

    def __init__(self, model, test_xy, cfg: LesionConfig, cache: AccuracyCache, prog):
        self.model, (self.x, self.y), self.cfg = model, test_xy, cfg
        self.cache, self.prog, self.known = cache, prog, set()

    @staticmethod
    def key(idx: Sequence[int]) -> str:
        return ",".join(map(str, sorted(idx)))

    def plan(self, sets: list[list[int]]) -> None:
        """The sets the study will score: the progress total is the uncached ones (the
        jointly lesioned harmless blocks are added when known, after the single lesions)."""
        self.known = {self.key(s) for s in sets}
        self.prog.total = sum(self.cache.get(k) is None for k in self.known)
        cached = len(self.known) - self.prog.total
        where = f"; {cached} already in {self.cache.path.name}" if cached else ""
        self.prog.say(
            f"lesion: {plural(self.prog.total, 'lesion set')} to evaluate on "
            f"{len(self.y)} test samples (the intact model, single blocks, random sets{where})"
        )

    def joint(self, idx: list[int]) -> float | None:
        """The individually harmless blocks lesioned together (None when there are none);
        counted in the progress total when it is a set of its own, not yet evaluated."""
        if not idx:
            return None
        key = self.key(idx)
        if key not in self.known and self.cache.get(key) is None:
            self.known.add(key)
            self.prog.total += 1
        return self(idx)

    def __call__(self, idx: Sequence[int]) -> float:
        key = self.key(idx)
        v = self.cache.get(key)
        if v is None:
            self.prog.begin()
            with self.model.lesioned(list(idx)):
                v = signals.accuracy(
                    self.model, self.x, self.y, self.cfg.eval_batch_size, on_batch=self.prog.batch
                )
            self.cache.put(key, v)
            self.prog.end()
        return v


def _singles(blocks: list[dict], base: float, score: _Scorer, bars: bool) -> None:
    """Each lesionable block lesioned alone: single_acc and single_harm (None otherwise)."""
    for b in tqdm(blocks, desc="single-block lesions", disable=not bars, leave=False):
        if b["lesionable"]:
            b["single_acc"] = score([b["index"]])
            b["single_harm"] = base - b["single_acc"]
        else:
            b["single_acc"] = b["single_harm"] = None


def _curves(grid: list[tuple], n_blocks: int, base: float, score: _Scorer, bars: bool):
    """One row per (plan, k): mean and std of the test accuracy of its lesion sets."""
    curves = []
    total = sum(len(g[2]) for g in grid)
    bar = tqdm(total=total, desc="lesion sets", disable=not bars, leave=False)
    for p, k, sets, dist in grid:
        accs = []
        for s in sets:
            accs.append(score(s))
            bar.update()
        curves.append(
            {
                "criterion": p.criterion,
                "group": p.group.value,
                "k": k,
                "fraction_of_blocks": k / n_blocks,
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
    return curves


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
    progress: plain progress lines (lesion.progress: one per evaluated lesion set when piped)
    and progress bars, drawn only where console.progress_enabled() (a terminal, no
    --no-progress or TQDM_DISABLE); False: silent."""
    _check_inputs(model, train_xy, test_xy, cfg)
    x_tr, y_tr = train_xy[0][: cfg.samples], train_xy[1][: cfg.samples]
    prog = StudyProgress(progress)
    spec = spec or cfg.measure_spec()
    blocks = block_signals(model, x_tr, y_tr, cfg, spec)
    lesionable = [b["index"] for b in blocks if b["lesionable"]]
    if not lesionable:
        raise ValueError(
            f"{type(model).__name__} has no lesionable block (none has a shortcut of the right "
            "shape); the lesion study needs residual blocks or equal-width hidden layers."
        )
    prog.say(
        f"lesion: conflict signals of {len(blocks)} blocks ({len(lesionable)} lesionable) "
        f"measured on {len(y_tr)} training samples"
    )
    max_k = min(cfg.max_k or len(lesionable), len(lesionable))
    grid = [
        (p, k, *plan_sets(p, k, cfg))
        for p in plans(blocks, lesionable, cfg)
        for k in range(1, p.max_k(max_k) + 1)
    ]
    cache = AccuracyCache(cache_path, fingerprint(model, *test_xy))
    score = _Scorer(model, test_xy, cfg, cache, prog)
    score.plan([[], *([i] for i in lesionable), *(s for g in grid for s in g[2])])
    base = score([])
    _singles(blocks, base, score, prog.bars)
    # The blocks whose lesion alone costs less than the tolerance, lesioned together: are the
    # individually harmless blocks also jointly removable?
    harmless = [b["index"] for b in blocks if b["lesionable"] and b["single_harm"] < cfg.tolerance]
    joint = score.joint(harmless)
    curves = _curves(grid, len(blocks), base, score, prog.bars)
    score.cache.save()
    prog.finish()
    joint = base if joint is None else joint
    return _result(base, blocks, curves, harmless, joint, cfg, spec, len(test_xy[1]))


def _result(base, blocks, curves, harmless, joint, cfg, spec, n_test: int) -> LesionResult:
    """The correlations and the summary (lesion_summary.json) of the measured study."""
    corr = correlations(blocks, cfg)
    summary = summarize(base, blocks, curves, corr, cfg, n_test)
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
