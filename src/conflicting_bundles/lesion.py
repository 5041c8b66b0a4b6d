"""Lesion study (METHOD.md §6) on a trained net, with the position control the small-scale
trials call for (§9).

Lesioning a block at inference replaces it by its shortcut (``model.lesioned``: the identity, or
the projection of a stride-2 block). The study measures, on the first ``samples`` non-augmented
training samples in eval mode:

- per block: the bundle entropy (and number of bundles, flag) under every criterion of
  ``criteria`` (reference, raw, coarse:K, rel:R ...), the margin diagnostic of §9
  (``metric.conflict_margin``: smallest max-norm distance of two differently labelled samples
  over the reference resolution q), and the test accuracy with that block alone lesioned;
- for every flag criterion and k = 1..K: ``repeats`` random sets of k blocks drawn from the
  flagged ("conflicting") blocks, the unflagged ones, all blocks, and a position-matched control
  (each flagged block of the set replaced by the unflagged block nearest to it in forward order),
  lesioned together; mean and std of the test accuracy;
- the rank correlation of each block's conflict signal with its single-lesion harm, with and
  without controlling for the block index (partial Spearman), since lesion harm depends strongly
  on position.

Units: every accuracy of this module is in percent (columns ``*_pct``) and every harm/loss in
accuracy points (``*_pts``); train.py's ``test_acc`` is a fraction.

Outputs (``write_outputs``): lesion_blocks.csv, lesion_curves.csv, lesion_corr.csv,
lesion_summary.json, lesion.png (the group curves with std bands, one panel per flag criterion),
lesion_single.png (single-block harm beside entropy and margin). Accuracies of lesion sets are
cached in lesion_cache.json (atomic writes, tagged with the model and test set they belong to),
so an interrupted study resumes without re-evaluating and criteria that flag the same blocks
share evaluations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import runs
from .metric import Criterion, conflict_margin, weight_amplitude
from .probes import probe

__all__ = [
    "DEFAULT_CRITERIA",
    "GROUPS",
    "LesionConfig",
    "LesionResult",
    "accuracy",
    "block_signals",
    "lesion_run",
    "lesion_study",
    "matched_controls",
    "partial_spearman",
    "plot_lesion",
    "print_lesion",
    "spearman",
    "write_outputs",
]

# Every criterion is computed for every block (cheap at N = 64); only ``flag_criteria`` also get
# the group curves (a few hundred forward passes each). METHOD.md §9 names these resolutions.
DEFAULT_CRITERIA = (
    "reference",
    "raw",
    "coarse:16",
    "coarse:256",
    "coarse:1024",
    "rel:0.001",
    "rel:0.01",
)
GROUPS = ("conflicting", "non-conflicting", "all", "position-matched")
ALL = "-"  # the criterion column of the "all" group, which does not depend on any criterion


@dataclass
class LesionConfig:
    """What the study measures. ``flag_criteria`` decide the groups (the reference criterion by
    default; "all" = every criterion in ``criteria``); every output names its criterion."""

    repeats: int = 15
    samples: int = 64  # first N non-augmented training samples for the bundle metric
    max_k: int | None = None  # largest lesion set; None = every lesionable block
    seed: int = 0
    criteria: tuple[str, ...] = DEFAULT_CRITERIA
    flag_criteria: tuple[str, ...] = ("reference",)
    kind: str | None = None  # probe kind; None = the model's default (resnet: "branch")
    lr: float = 1e-3  # the training lr and batch size enter the reference transform
    batch_size: int = 64
    eval_batch_size: int = 500
    tolerance_pts: float = 1.0  # "no significant loss": less than this many accuracy points
    test_limit: int | None = None  # first n test samples (lesion_run); None = the whole split

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.samples < 2:
            raise ValueError(
                f"repeats must be >= 1 and samples >= 2, got {self.repeats}, {self.samples}."
            )
        if self.max_k is not None and self.max_k < 1:
            raise ValueError(f"max_k must be >= 1 (or None for all blocks), got {self.max_k}.")
        if not self.tolerance_pts > 0:
            raise ValueError(f"tolerance_pts must be > 0 points, got {self.tolerance_pts}.")
        crits = [Criterion.parse(c).name for c in self.criteria]
        flags = list(self.flag_criteria)
        if flags == ["all"]:
            flags = crits
        flags = [Criterion.parse(c).name for c in flags]  # ValueError names a bad one
        if not flags:
            raise ValueError("flag_criteria is empty: give at least one criterion, e.g. reference.")
        # A flag criterion needs its per-block entropies: add it to the measured criteria.
        self.criteria = tuple(dict.fromkeys(crits + flags))
        self.flag_criteria = tuple(dict.fromkeys(flags))


@dataclass
class LesionResult:
    """base_acc_pct: test accuracy (%) of the intact model; blocks: one row per block; curves:
    one row per (criterion, group, k); corr: one row per conflict signal; summary: the JSON."""

    base_acc_pct: float
    blocks: list[dict]
    curves: list[dict]
    corr: list[dict]
    summary: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- statistics
def _ranks(v: Sequence[float]) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(np.asarray(v, dtype=np.float64))


def _pvalue(r: float, df: int) -> float:
    """Two-sided p of a (partial) correlation r with df degrees of freedom (t-test)."""
    from scipy.stats import t as student_t

    if not math.isfinite(r) or df < 1:
        return float("nan")
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt(df / (1.0 - r * r))
    return float(2.0 * student_t.sf(abs(t), df))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def partial_spearman(x: Sequence[float], y: Sequence[float], z) -> float:
    """Spearman correlation of x and y controlling for z (one control (n,) or several (n, m)):
    the Pearson correlation of the residuals of rank(x) and rank(y) after a least-squares fit
    on an intercept and the ranks of each control. nan when a residual is constant (x or y
    fully explained by the controls)."""
    zc = np.asarray(z, dtype=np.float64)
    zc = zc[:, None] if zc.ndim == 1 else zc  # (n, m)
    rx, ry = _ranks(x), _ranks(y)
    design = np.column_stack([np.ones(len(rx))] + [_ranks(c) for c in zc.T])  # (n, 1 + m)

    def resid(r: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(design, r, rcond=None)
        return r - design @ coef

    ex, ey = resid(rx), resid(ry)
    scale = max(1.0, float(np.abs(rx).max()))
    if ex.std() < 1e-9 * scale or ey.std() < 1e-9 * scale:
        return float("nan")
    return float(np.corrcoef(ex, ey)[0, 1])


# ------------------------------------------------------------------------- block signals
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


# ------------------------------------------------------------------------------ the study
class _AccCache:
    """Test accuracy (%) per lesion set, persisted atomically; ``tag`` identifies the model and
    test set, and a file with another tag is ignored (started over)."""

    def __init__(self, path: Path | None, tag: str):
        self.path, self.tag, self.acc = path, tag, {}
        self._unsaved = 0
        if path is not None and path.is_file():
            try:
                d = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                d = {}
            if d.get("tag") == tag:
                self.acc = {k: float(v) for k, v in d.get("acc", {}).items()}

    def get(self, key: str) -> float | None:
        return self.acc.get(key)

    def put(self, key: str, value: float) -> None:
        self.acc[key] = value
        self._unsaved += 1
        if self._unsaved >= 25:
            self.save()

    def save(self) -> None:
        if self.path is not None and self._unsaved:
            runs.write_json(self.path, {"tag": self.tag, "acc": self.acc})
        self._unsaved = 0


def _tag(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """A fingerprint of the weights and the test set (so a stale cache is never reused)."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _draws(members: list[int], k: int, repeats: int, seed: int) -> list[list[int]]:
    """``repeats`` random k-subsets of ``members``, seeded by the seed, k and the member set
    only: groups with the same members (e.g. "non-conflicting" when nothing is flagged, and
    "all") draw the same sets and share cached results; the position-matched group is paired
    with the conflicting group's draws."""
    rng = random.Random(f"{seed}|{k}|{','.join(map(str, members))}")
    return [sorted(rng.sample(members, k)) for _ in range(repeats)]


def lesion_study(
    model: nn.Module,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    test_xy: tuple[torch.Tensor, torch.Tensor],
    cfg: LesionConfig,
    cache_path: Path | None = None,
    progress: bool = True,
) -> LesionResult:
    """The whole study on a model with ``block_info()`` and ``lesioned()`` (this project's
    models). train_xy: non-augmented training samples x (N, ...), y (N,) (the first
    ``cfg.samples`` are measured); test_xy: the preprocessed test set x (M, ...), y (M,)."""
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
    x_tr, y_tr = train_xy[0][: cfg.samples], train_xy[1][: cfg.samples]
    x_te, y_te = test_xy
    if len(y_te) == 0:
        raise ValueError("the test set is empty: the study needs test samples to score lesions.")
    blocks = block_signals(model, x_tr, y_tr, cfg)
    lesionable = [b["index"] for b in blocks if b["lesionable"]]
    if not lesionable:
        raise ValueError(
            f"{type(model).__name__} has no lesionable block (none has a shortcut of the right "
            "shape); the lesion study needs residual blocks or equal-width hidden layers."
        )
    cache = _AccCache(cache_path, _tag(model, x_te, y_te))

    def acc_of(idx: Sequence[int]) -> float:
        key = ",".join(map(str, sorted(idx)))
        v = cache.get(key)
        if v is None:
            with model.lesioned(list(idx)):
                v = accuracy(model, x_te, y_te, cfg.eval_batch_size)
            cache.put(key, v)
        return v

    base = acc_of([])
    max_k = min(cfg.max_k or len(lesionable), len(lesionable))
    for b in tqdm(blocks, desc="single-block lesions", disable=not progress, leave=False):
        if b["lesionable"]:
            b["single_acc_pct"] = acc_of([b["index"]])
            b["single_harm_pts"] = base - b["single_acc_pct"]
        else:
            b["single_acc_pct"] = b["single_harm_pts"] = None

    # Group members per flag criterion; the "all" group is the same for every criterion.
    plans: list[tuple[str, str, list[int], list[int]]] = [(ALL, "all", lesionable, [])]
    for c in cfg.flag_criteria:
        flagged = [i for i in lesionable if blocks[i][f"flag[{c}]"]]
        unflagged = [i for i in lesionable if i not in flagged]
        plans += [(c, "conflicting", flagged, []), (c, "non-conflicting", unflagged, [])]
        if flagged and unflagged:
            plans.append((c, "position-matched", flagged, unflagged))
    total = 0
    for _, g, m, others in plans:
        total += min(max_k, len(m), len(others) if g == "position-matched" else len(m))
    curves = []
    bar = tqdm(total=total * cfg.repeats, desc="lesion sets", disable=not progress, leave=False)
    for crit, group, members, others in plans:
        limit = min(max_k, len(members), len(others) if group == "position-matched" else max_k)
        for k in range(1, limit + 1):
            sets = _draws(members, k, cfg.repeats, cfg.seed)
            dist = []
            if group == "position-matched":
                rng = random.Random(f"{cfg.seed}|match|{k}|{members}|{others}")
                matched = [matched_controls(s, others, rng) for s in sets]
                dist = [
                    np.mean([abs(a - b) for a, b in zip(s, m, strict=True)])
                    for s, m in zip(sets, matched, strict=True)
                ]
                sets = [sorted(m) for m in matched]
            accs = []
            for s in sets:
                accs.append(acc_of(s))
                bar.update()
            curves.append(
                {
                    "criterion": crit,
                    "group": group,
                    "k": k,
                    "fraction_of_blocks": k / len(blocks),
                    "test_acc_pct_mean": float(np.mean(accs)),
                    "test_acc_pct_std": float(np.std(accs)),
                    "loss_pts_mean": base - float(np.mean(accs)),
                    "n_sets": len(accs),
                    "n_distinct_sets": len({tuple(s) for s in sets}),
                    "group_size": len(members),
                    "match_distance_mean": float(np.mean(dist)) if dist else None,
                }
            )
    bar.close()
    # The blocks whose lesion alone costs less than the tolerance, lesioned together: are the
    # individually harmless blocks also jointly removable?
    harmless = [
        b["index"] for b in blocks if b["lesionable"] and b["single_harm_pts"] < cfg.tolerance_pts
    ]
    joint = acc_of(harmless) if harmless else base
    cache.save()
    corr = correlations(blocks, cfg)
    summary = summarize(base, blocks, curves, corr, cfg, len(y_te))
    summary["individually_harmless"] = {
        "blocks": [blocks[i]["block"] for i in harmless],
        "k": len(harmless),
        "fraction_of_blocks": len(harmless) / len(blocks),
        "joint_test_acc_pct": joint,
        "joint_loss_pts": base - joint,
    }
    return LesionResult(base, blocks, curves, corr, summary)


def correlations(blocks: list[dict], cfg: LesionConfig) -> list[dict]:
    """Per conflict signal (each criterion's entropy, -margin): Spearman correlation with the
    single-lesion harm over the lesionable blocks, and partial Spearman given the block index
    and given (index, projecting); p-values from the t-distribution."""
    les = [b for b in blocks if b["lesionable"]]
    n = len(les)
    harm = [b["single_harm_pts"] for b in les]
    idx = [b["index"] for b in les]
    proj = [float(b["projecting"]) for b in les]
    signals = {f"entropy[{c}]": [b[f"entropy[{c}]"] for b in les] for c in cfg.criteria}
    signals["-margin"] = [-b["margin"] for b in les]  # ranks only: larger = closer to a conflict
    rows = []
    for name, vals in signals.items():
        r = spearman(vals, harm) if n > 2 else float("nan")
        pi = partial_spearman(vals, harm, idx) if n > 3 else float("nan")
        # projecting (stride-2) blocks are lesioned to their projection, a different operation:
        # a second control; when every block is alike the first partial is repeated
        if n > 4 and len(set(proj)) > 1:
            pp, dfp = partial_spearman(vals, harm, np.column_stack([idx, proj])), n - 4
        else:
            pp, dfp = pi, n - 3
        rows.append(
            {
                "signal": name,
                "n_blocks": n,
                "distinct_values": len(set(vals)),
                "spearman": r,
                "p": _pvalue(r, n - 2),
                "partial_given_index": pi,
                "p_given_index": _pvalue(pi, n - 3),
                "partial_given_index_projecting": pp,
                "p_given_index_projecting": _pvalue(pp, dfp),
            }
        )
    r = spearman(idx, harm) if n > 2 else float("nan")
    rows.append(
        {
            "signal": "index",
            "n_blocks": n,
            "distinct_values": n,
            "spearman": r,
            "p": _pvalue(r, n - 2),
        }
    )
    return rows


def _removable(base: float, curves: list[dict], crit: str, group: str, tol: float) -> int:
    """Largest k such that every k' <= k loses less than ``tol`` points on average."""
    best = 0
    for c in sorted(
        (c for c in curves if c["criterion"] == crit and c["group"] == group), key=lambda c: c["k"]
    ):
        if base - c["test_acc_pct_mean"] < tol and c["k"] == best + 1:
            best = c["k"]
        else:
            break
    return best


def summarize(base, blocks, curves, corr, cfg: LesionConfig, n_test: int) -> dict:
    """lesion_summary.json: per flag criterion the flagged blocks and, per group, the largest
    fraction of blocks lesionable with less than ``tolerance_pts`` loss; the correlations."""
    n = len(blocks)
    les = [b for b in blocks if b["lesionable"]]

    def removable(crit: str, group: str, size: int) -> dict:
        k = _removable(base, curves, crit, group, cfg.tolerance_pts)
        return {
            "k": k,
            "fraction_of_blocks": k / n,
            "group_size": size,
            "fraction_of_group": k / size if size else None,
        }

    def mean(bs: list[dict]) -> float | None:
        return float(np.mean([b["single_harm_pts"] for b in bs])) if bs else None

    per_crit = {}
    for c in cfg.flag_criteria:
        flagged = [b for b in les if b[f"flag[{c}]"]]
        unflagged = [b for b in les if not b[f"flag[{c}]"]]
        ctrl, dist = [], []
        if flagged and len(unflagged) >= len(flagged):
            # the single-lesion harm of each flagged block's nearest unflagged block, averaged
            # over tie draws (deterministic given the seed)
            rng = random.Random(f"{cfg.seed}|single-match|{c}")
            for _ in range(cfg.repeats):
                m = matched_controls(
                    [b["index"] for b in flagged], [b["index"] for b in unflagged], rng
                )
                ctrl.append(np.mean([blocks[i]["single_harm_pts"] for i in m]))
                dist.append(np.mean([abs(i - b["index"]) for i, b in zip(m, flagged, strict=True)]))
        groups = {"conflicting": len(flagged), "non-conflicting": len(unflagged)}
        if any(x["criterion"] == c and x["group"] == "position-matched" for x in curves):
            groups["position-matched"] = len(flagged)
        note = ""
        if not flagged:
            note = (
                f"the {c} criterion flags no lesionable block: the conflicting vs "
                "non-conflicting comparison cannot be formed (non-conflicting = all blocks)."
            )
        elif not unflagged:
            note = f"the {c} criterion flags every lesionable block: there is no control group."
        elif len(unflagged) < len(flagged):
            note = "fewer unflagged than flagged blocks: position-matched sets stop at k = " + str(
                len(unflagged)
            )
        per_crit[c] = {
            "flagged_blocks": [b["block"] for b in flagged],
            "num_flagged": len(flagged),
            "single_harm_pts_mean": {
                "conflicting": mean(flagged),
                "non-conflicting": mean(unflagged),
                "position-matched": float(np.mean(ctrl)) if ctrl else None,
            },
            # how far (in blocks) the matched controls are from the flagged blocks: large when
            # the flagged blocks crowd one end of the net and the matching runs out of neighbours
            "match_distance_mean": float(np.mean(dist)) if dist else None,
            "removable": {g: removable(c, g, s) for g, s in groups.items()},
            "note": note,
        }
    return {
        "units": "accuracies in percent (test_acc_pct), losses/harm in accuracy points (pts)",
        "base_test_acc_pct": base,
        "num_blocks": n,
        "num_lesionable": len(les),
        "num_test_samples": n_test,
        "tolerance_pts": cfg.tolerance_pts,
        "removable_all_blocks": removable(ALL, "all", len(les)),
        "primary_criterion": cfg.flag_criteria[0],
        "no_block_flagged": not per_crit[cfg.flag_criteria[0]]["flagged_blocks"],
        "by_criterion": per_crit,
        "flags_by_criterion": {
            c: [b["block"] for b in blocks if b[f"flag[{c}]"]] for c in cfg.criteria
        },
        "correlation_with_single_harm": {r["signal"]: r for r in corr},
        "config": asdict(cfg),
    }


# ----------------------------------------------------------------------------- from a run
def lesion_run(
    run_dir: str | Path,
    cfg: LesionConfig,
    out: str | Path | None = None,
    *,
    checkpoint: str = "last",
    data_dir: str | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    progress: bool = True,
    report: bool = True,
) -> LesionResult:
    """The study on a training run directory's model (arch.json + checkpoint): the run's
    dataset, training subset (train_limit), lr and batch size; writes every output into ``out``
    (default RUN_DIR/lesion), prints the tables and builds report.html."""
    from .data import iterate, load_dataset
    from .train import TrainConfig, _resolve_device

    run_dir = Path(run_dir)
    tc = TrainConfig.from_dict(runs.load_config(run_dir))
    if threads is not None:
        torch.set_num_threads(threads)
    dev = _resolve_device(device)
    model, ckpt = runs.load_model(run_dir, checkpoint, map_location=dev)
    # the run's lr and batch size, as the metric requires, and its probe kind unless given
    cfg = dataclasses.replace(
        cfg, lr=tc.lr, batch_size=tc.batch_size, kind=cfg.kind or tc.measure_kind
    )
    data_dir = data_dir or tc.data_dir
    train_ds = load_dataset(tc.dataset, "train", data_dir, limit=tc.train_limit)
    test_ds = load_dataset(tc.dataset, "test", data_dir, limit=cfg.test_limit)
    if len(train_ds) < cfg.samples:
        raise ValueError(
            f"the run trained on {len(train_ds)} samples; --samples {cfg.samples} is more."
        )
    train_xy = next(iterate(train_ds, cfg.samples, shuffle=False, augment=False, device=dev))
    test_xy = next(iterate(test_ds, len(test_ds), shuffle=False, augment=False, device=dev))
    out = Path(out) if out is not None else run_dir / "lesion"
    out.mkdir(parents=True, exist_ok=True)
    res = lesion_study(model, train_xy, test_xy, cfg, out / "lesion_cache.json", progress)
    res.summary.update(
        run_dir=str(run_dir),
        checkpoint=checkpoint,
        epoch=int(ckpt["epoch"]),
        dataset=tc.dataset,
        model=runs.load_arch(run_dir),
        # train.py's figure (a fraction, mean of the last epochs on the run's test subset)
        run_test_acc_pct=_pct_or_none(
            runs.load_summary(run_dir).get("test_acc")
            if (run_dir / runs.SUMMARY).exists()
            else None
        ),
    )
    write_outputs(res, out)
    if progress:
        print_lesion(res)
    if report:
        from .report import build_report

        build_report(out)
    return res


def _pct_or_none(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


# --------------------------------------------------------------------------------- outputs
def _safe(name: str) -> str:
    return name.replace(":", "-").replace("/", "-")


def write_outputs(res: LesionResult, out: str | Path) -> None:
    """CSV + JSON + PNG files of a lesion study into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_csv(out / "lesion_blocks.csv", res.blocks)
    runs.write_csv(out / "lesion_curves.csv", res.curves)
    runs.write_csv(out / "lesion_corr.csv", res.corr)
    runs.write_json(out / "lesion_summary.json", res.summary)
    plot_lesion(res, out)


_COLORS = {"conflicting": "C3", "non-conflicting": "C0", "all": "C7", "position-matched": "C2"}
# "all" is drawn first and wide, so a group equal to it (nothing flagged) stays visible on top
_STYLES = {
    "all": dict(lw=3.5, alpha=0.6),
    "conflicting": dict(marker="o", ms=2.5),
    "non-conflicting": dict(marker="o", ms=2.5, ls="--"),
    "position-matched": dict(marker="s", ms=2.5),
}
_ORDER = ("all", "conflicting", "non-conflicting", "position-matched")


def plot_lesion(res: LesionResult, out: str | Path) -> None:
    """lesion.png: test accuracy vs fraction of blocks lesioned, mean +- std band per group, one
    panel per flag criterion; lesion_single.png: single-block harm, entropy and margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    s = res.summary
    crits = list(s["by_criterion"])
    ncol = min(3, len(crits))
    nrow = math.ceil(len(crits) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 4.3 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, crits, strict=False):
        for g in _ORDER:
            rows = [r for r in res.curves if r["group"] == g and r["criterion"] in (c, ALL)]
            if g != "all":
                rows = [r for r in rows if r["criterion"] == c]
            if not rows:
                continue
            # every curve starts at the intact model (k = 0)
            x = 100 * np.array([0.0] + [r["fraction_of_blocks"] for r in rows])
            m = np.array([res.base_acc_pct] + [r["test_acc_pct_mean"] for r in rows])
            sd = np.array([0.0] + [r["test_acc_pct_std"] for r in rows])
            style = _STYLES[g]
            label = f"{g} (n={rows[0]['group_size']})"
            ax.plot(x, m, color=_COLORS[g], label=label, **style)
            ax.fill_between(x, m - sd, m + sd, color=_COLORS[g], alpha=0.15, lw=0)
        ax.axhline(res.base_acc_pct, color="k", lw=0.8, ls="--", label="no lesion")
        ax.axhline(
            res.base_acc_pct - s["tolerance_pts"],
            color="k",
            lw=0.6,
            ls=":",
            label=f"-{s['tolerance_pts']:g} pt",
        )
        nf = s["by_criterion"][c]["num_flagged"]
        ax.set_title(
            f"groups by the {c} criterion ({nf} of {s['num_lesionable']} flagged)", fontsize=10
        )
        ax.set_xlabel("blocks lesioned (% of all blocks)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlim(0, 100)
        means = [r["test_acc_pct_mean"] for r in res.curves]
        tops = [r["test_acc_pct_mean"] + r["test_acc_pct_std"] for r in res.curves]
        lo = min([res.base_acc_pct - 10, *means])
        ax.set_ylim(max(0.0, lo - 2), min(100.0, max([res.base_acc_pct, *tops]) + 1))
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(crits) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "lesion.png", dpi=110)
    plt.close(fig)

    primary = s["primary_criterion"]
    les = [b for b in res.blocks if b["lesionable"]]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    idx = [b["index"] for b in les]
    ax1.bar(
        idx,
        [b["single_harm_pts"] for b in les],
        color=["C3" if b[f"flag[{primary}]"] else "C0" for b in les],
    )
    for b in les:  # projecting blocks are lesioned to their projection, not to the identity
        if b["projecting"]:
            ax1.bar(b["index"], b["single_harm_pts"], fill=False, hatch="//", edgecolor="k", lw=0)
    ax1.set_ylabel("accuracy loss (points)")
    ax1.set_title(
        f"Single-block lesions (red: flagged by {primary}; hatched: projecting block)",
        fontsize=10,
    )
    ax2.semilogy(idx, [max(b["margin"], 1e-3) for b in les], "k.-", label="margin (units of q)")
    ax2.axhline(1.0, color="k", lw=0.6, ls=":")
    ax2.set_ylabel("margin / q  (log)")
    ax2.set_xlabel("block index (forward order)")
    ax3 = ax2.twinx()
    ax3.plot(
        idx, [b[f"entropy[{primary}]"] for b in les], "C3s", ms=3, label=f"entropy ({primary})"
    )
    ax3.set_ylabel("bundle entropy", color="C3")
    fig.tight_layout()
    fig.savefig(out / "lesion_single.png", dpi=110)
    plt.close(fig)


def print_lesion(res: LesionResult, console=None) -> None:
    """Rich tables: the blocks, the removable fractions per group, the correlations."""
    from rich.console import Console

    from .report import print_table

    console = console or Console()
    s = res.summary
    crits = list(s["config"]["criteria"])
    rows = []
    for b in res.blocks:
        rows.append(
            {
                "block": b["block"],
                "idx": b["index"],
                "margin/q": b["margin"],
                "H ref": b.get("entropy[reference]"),
                "flagged by": ",".join(c for c in crits if b[f"flag[{c}]"]) or "-",
                "single acc %": b["single_acc_pct"],
                "harm pts": b["single_harm_pts"],
            }
        )
    print_table(
        rows, title=f"Blocks (base test accuracy {res.base_acc_pct:.2f} %)", console=console
    )

    def rem_row(c: str, g: str, r: dict, harm: float | None) -> dict:
        return {
            "criterion": c,
            "group": g,
            "size": r["group_size"],
            "k": r["k"],
            "% of blocks": 100 * r["fraction_of_blocks"],
            "mean single harm pts": harm,
        }

    rem = [rem_row(ALL, "all", s["removable_all_blocks"], None)]
    for c, d in s["by_criterion"].items():
        for g, r in d["removable"].items():
            rem.append(rem_row(c, g, r, d["single_harm_pts_mean"].get(g)))
    print_table(
        rem,
        title=f"Largest lesion set losing < {s['tolerance_pts']:g} point (mean over sets)",
        console=console,
    )
    short = {
        "signal": "signal",
        "spearman": "rho",
        "p": "p",
        "partial_given_index": "rho|index",
        "p_given_index": "p|index",
        "partial_given_index_projecting": "rho|index,proj",
        "p_given_index_projecting": "p|index,proj",
    }
    print_table(
        # "entropy[reference]" -> "H reference": rich would read the brackets as markup
        [
            {v: r.get(k) for k, v in short.items()}
            | {"signal": r["signal"].replace("entropy[", "H ").rstrip("]")}
            for r in res.corr
        ],
        title="Rank correlation of each conflict signal with single-lesion harm",
        console=console,
    )
    h = s.get("individually_harmless")
    if h:
        console.print(
            f"{h['k']} of {s['num_blocks']} blocks each cost < {s['tolerance_pts']:g} point alone; "
            f"lesioned together: {h['joint_test_acc_pct']:.2f} % ({h['joint_loss_pts']:+.2f} pts "
            "lost)",
            highlight=False,
        )
    for c, d in s["by_criterion"].items():
        if d["note"]:
            console.print(f"[yellow]note[/yellow] ({c}): {d['note']}", highlight=False)
