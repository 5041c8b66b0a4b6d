"""The width x depth map of FNNs (METHOD.md §7): train every net of a grid, record its test
accuracy and where it forms conflicting bundles, draw the map.

    cfg = GridConfig(widths=(5, 10, 25), depths=(1, 5, 20), dataset="mnist", epochs=3,
                     out="runs/grid")
    result = run_grid(cfg)          # trains the cells not yet done, in parallel processes

Each cell is a normal training run directory ``out/cells/w<width>-d<depth>`` (train.py), plus
measure.csv (``train.measure_run``: every hidden layer of the final model, with the margin).
A cell with summary.json for the same number of epochs is done and never retrained; a cell with
a checkpoint but no summary (interrupted) resumes with ``train(resume=True)``; anything else
starts over. Cells run in ``workers`` processes with one torch thread each, largest nets first.

Outputs in ``out``: grid.csv (one row per cell; accuracies in percent, ``*_pct``),
grid_summary.json, grid.png (heat map of test accuracy with the conflict boundary drawn over it),
report.html.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import runs
from .train import TrainConfig, measure_run, train

__all__ = [
    "GridConfig",
    "GridResult",
    "cell_config",
    "cell_dir",
    "cell_row",
    "plot_grid",
    "print_grid",
    "run_grid",
    "train_or_resume",
]


@dataclass
class GridConfig:
    """The grid and the training recipe shared by every cell."""

    widths: tuple[int, ...] = (5, 10, 25, 50, 100)
    depths: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
    dataset: str = "mnist"
    epochs: int = 5
    out: str = "runs/grid"
    workers: int | None = None  # processes; None = os.cpu_count()
    seed: int = 0
    samples: int = 64  # training samples for the bundle metric
    train_limit: int | None = None
    test_limit: int | None = None
    augment: bool = True
    lr: float = 1e-3
    batch_size: int = 64
    criterion: str = "reference"
    data_dir: str | None = None
    keep_checkpoints: bool = True  # False: delete a finished cell's checkpoints/ (disk space)

    def __post_init__(self) -> None:
        for name in ("widths", "depths"):
            vals = getattr(self, name)
            if not vals or any(not isinstance(v, int) or isinstance(v, bool) for v in vals):
                raise ValueError(f"{name} must be a non-empty list of integers, got {vals!r}.")
            if min(vals) < 1:
                raise ValueError(f"{name} must be >= 1, got {list(vals)}.")
            setattr(self, name, tuple(sorted(set(vals))))
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}.")


@dataclass
class GridResult:
    """rows: one dict per cell (grid.csv); actions: {(width, depth): "trained" | "resumed" |
    "skipped" | "error: ..."} of this call; summary: grid_summary.json."""

    out: Path
    rows: list[dict]
    actions: dict[tuple[int, int], str]
    summary: dict = field(default_factory=dict)


def cell_dir(out: str | Path, width: int, depth: int) -> Path:
    return Path(out) / "cells" / f"w{width}-d{depth}"


def cell_config(cfg: GridConfig, width: int, depth: int) -> TrainConfig:
    """The TrainConfig of one cell (one torch thread, CPU, no TensorBoard, quiet)."""
    return TrainConfig(
        model="fnn",
        model_kwargs={"width": width, "depth": depth},
        dataset=cfg.dataset,
        data_dir=cfg.data_dir,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        train_limit=cfg.train_limit,
        test_limit=cfg.test_limit,
        augment=cfg.augment,
        measure_samples=cfg.samples,
        criterion=cfg.criterion,
        threads=1,
        device="cpu",
        out=str(cell_dir(cfg.out, width, depth)),
        tensorboard=False,
        progress=False,
    )


def _is_done(run_dir: Path, epochs: int) -> bool:
    if not (run_dir / runs.SUMMARY).is_file():
        return False
    try:
        s = runs.load_summary(run_dir)
    except runs.RunDirError:
        return False  # unreadable: train again
    return s.get("epochs") == epochs or s.get("status") == "diverged"


def train_or_resume(tc: TrainConfig) -> str:
    """Train ``tc`` into ``tc.out`` unless it is done: "skipped" (summary.json for the same
    number of epochs, or a diverged run), "resumed" (a checkpoint without a finished summary,
    or fewer epochs than asked: ``train(resume=True)``), else "trained" (from scratch, replacing
    any partial files). A finished run trained with another configuration is an error, never
    silently reused."""
    from .train import _check_resume_config

    run_dir = Path(tc.out)
    if runs.is_run_dir(run_dir):
        _check_resume_config(runs.load_config(run_dir), _resolved(tc))
    if _is_done(run_dir, tc.epochs):
        return "skipped"
    if runs.is_run_dir(run_dir) and runs.checkpoint_path(run_dir, "last").is_file():
        train(tc, resume=True)
        return "resumed"
    train(tc, force=True)
    return "trained"


def _resolved(tc: TrainConfig) -> TrainConfig:
    """``tc`` with the model arguments filled in as train() stores them (for comparisons)."""
    from .data import dataset_info
    from .train import _jsonable, _resolve_model_kwargs

    kw = _resolve_model_kwargs(tc.model, dict(tc.model_kwargs), dataset_info(tc.dataset))
    return TrainConfig(**{**tc.to_dict(), "model_kwargs": _jsonable(kw)})


def _finish_cell(run_dir: Path, samples: int, keep_checkpoints: bool) -> None:
    """measure.csv of the final model (every hidden layer) unless it is already there for the
    last epoch; then optionally drop the checkpoints."""
    import shutil

    ckpts = run_dir / runs.CHECKPOINTS
    m = run_dir / runs.MEASURE_CSV
    done_epoch = runs.load_summary(run_dir).get("epochs_completed")
    fresh = m.is_file() and (runs.read_csv(m) or [{}])[0].get("epoch") == done_epoch
    if not fresh and runs.checkpoint_path(run_dir, "last").is_file():
        try:
            measure_run(run_dir, all_layers=True, n_samples=samples, margin=True)
        except ValueError as e:  # NaN/Inf activations of a diverged net: no per-layer figures
            runs.write_json(run_dir / "measure_error.json", {"error": str(e)})
    if not keep_checkpoints and ckpts.is_dir():
        shutil.rmtree(ckpts)


def _cell_job(tc_dict: dict, samples: int, keep_checkpoints: bool) -> str:
    """One cell in a worker process (top level, so that it pickles)."""
    torch.set_num_threads(1)
    tc = TrainConfig.from_dict(tc_dict)
    action = train_or_resume(tc)
    _finish_cell(Path(tc.out), samples, keep_checkpoints)
    return action


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def cell_row(run_dir: str | Path, width: int, depth: int) -> dict:
    """The grid.csv row of a finished cell: accuracy (percent), bundle entropy of the last
    hidden layer at initialisation and at the end, the first conflicting hidden layer."""
    run_dir = Path(run_dir)
    s = runs.load_summary(run_dir)
    layers = (
        runs.read_csv(run_dir / runs.MEASURE_CSV) if (run_dir / runs.MEASURE_CSV).is_file() else []
    )
    conflicting = [int(r["layer"].split(".")[-1]) for r in layers if r.get("conflicting")]
    last = layers[-1] if layers else {}
    ent = s.get("bundle_entropy_final")
    ent0 = s.get("bundle_entropy_init")
    return {
        "width": width,
        "depth": depth,
        "params": s.get("params"),
        "status": s.get("status"),
        "epochs": s.get("epochs_completed"),
        "test_acc_pct": _pct(s.get("test_acc")),
        "best_test_acc_pct": _pct(s.get("best_test_acc")),
        "train_acc_pct": _pct(s.get("final_train_acc")),
        "entropy_last": ent,
        "bundles_last": s.get("num_bundles_final"),
        "conflicting": None if ent is None else ent > 0,
        "entropy_last_init": ent0,
        "bundles_last_init": s.get("num_bundles_init"),
        "conflicting_init": None if ent0 is None else ent0 > 0,
        "margin_last": last.get("margin"),
        "first_conflicting_layer": conflicting[0] if conflicting else None,
        "num_conflicting_layers": len(conflicting) if layers else None,
        "criterion": s.get("criterion"),
        "train_time_s": s.get("train_time"),
        "run_dir": str(Path("cells") / run_dir.name),
    }


def run_grid(cfg: GridConfig, *, progress: bool = True, report: bool = True) -> GridResult:
    """Train (or resume) every cell, then write grid.csv, grid_summary.json, grid.png and
    report.html into ``cfg.out`` and print the map."""
    from .data import load_dataset

    out = Path(cfg.out)
    load_dataset(cfg.dataset, "train", cfg.data_dir, limit=1)  # a clear error before any worker
    cells = [(w, d) for d in cfg.depths for w in cfg.widths]
    tcs = {c: cell_config(cfg, *c) for c in cells}
    actions: dict[tuple[int, int], str] = {}
    todo = []
    for c, tc in tcs.items():
        run_dir = Path(tc.out)
        if runs.is_run_dir(run_dir):
            from .train import _check_resume_config

            _check_resume_config(runs.load_config(run_dir), _resolved(tc))
        if _is_done(run_dir, cfg.epochs):
            actions[c] = "skipped"
            _finish_cell(run_dir, cfg.samples, cfg.keep_checkpoints)
        else:
            todo.append(c)
    todo.sort(key=lambda c: -(c[0] * (c[0] * c[1] + 784)))  # largest first: better packing
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    bar = tqdm(total=len(todo), desc=f"grid cells ({workers} processes)", disable=not progress)
    if workers == 1:
        for c in todo:
            try:
                actions[c] = _cell_job(tcs[c].to_dict(), cfg.samples, cfg.keep_checkpoints)
            except Exception as e:  # a failed cell is reported, the grid goes on
                actions[c] = f"error: {type(e).__name__}: {e}"
            bar.update()
    elif todo:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(_cell_job, tcs[c].to_dict(), cfg.samples, cfg.keep_checkpoints): c
                for c in todo
            }
            try:
                for f in as_completed(futures):
                    c = futures[f]
                    try:
                        actions[c] = f.result()
                    except Exception as e:  # a failed cell is reported, the grid goes on
                        actions[c] = f"error: {type(e).__name__}: {e}"
                    bar.update()
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()

    rows = []
    for w, d in cells:
        run_dir = cell_dir(out, w, d)
        if (run_dir / runs.SUMMARY).is_file():
            rows.append(cell_row(run_dir, w, d))
        else:
            rows.append({"width": w, "depth": d, "status": actions.get((w, d), "missing")})
    summary = summarize_grid(rows, cfg, actions)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_csv(out / "grid.csv", rows)
    runs.write_json(out / "grid_summary.json", summary)
    plot_grid(
        rows,
        out / "grid.png",
        title=f"FNN width x depth on {cfg.dataset}, "
        f"{cfg.epochs} epochs (criterion {cfg.criterion})",
    )
    if progress:
        print_grid(rows, summary)
    if report:
        from .report import build_report

        build_report(out)
    return GridResult(out, rows, actions, summary)


def summarize_grid(rows: list[dict], cfg: GridConfig, actions: dict) -> dict:
    """Counts, mean accuracy on each side of the conflict boundary, the best net, and per
    width the smallest depth at which the net is conflicting (the boundary)."""
    done = [r for r in rows if r.get("test_acc_pct") is not None]
    conf = [r for r in done if r.get("conflicting")]
    free = [r for r in done if r.get("conflicting") is False]

    def mean(rs: list[dict]) -> float | None:
        return float(np.mean([r["test_acc_pct"] for r in rs])) if rs else None

    best = max(done, key=lambda r: r["test_acc_pct"], default=None)
    boundary = {}
    for w in cfg.widths:
        ds = [r["depth"] for r in conf if r["width"] == w]
        boundary[str(w)] = min(ds) if ds else None
    errors = {f"w{w}-d{d}": a for (w, d), a in actions.items() if a.startswith("error")}
    return {
        "units": "test_acc_pct in percent; entropies of the last hidden layer",
        "num_cells": len(rows),
        "num_finished": len(done),
        "num_conflicting": len(conf),
        "num_conflicting_init": sum(bool(r.get("conflicting_init")) for r in done),
        "mean_test_acc_pct_conflicting": mean(conf),
        "mean_test_acc_pct_not_conflicting": mean(free),
        "best": None
        if best is None
        else {k: best[k] for k in ("width", "depth", "test_acc_pct", "conflicting")},
        "first_conflicting_depth_by_width": boundary,
        "conflicting_cells": [f"w{r['width']}-d{r['depth']}" for r in conf],
        "errors": errors,
        "actions": {
            k: sum(a == k for a in actions.values()) for k in ("trained", "resumed", "skipped")
        },
        "config": asdict(cfg),
    }


def _matrix(rows: list[dict], key: str, widths: list[int], depths: list[int]) -> np.ndarray:
    m = np.full((len(depths), len(widths)), np.nan)
    for r in rows:
        v = r.get(key)
        if v is not None and r["width"] in widths and r["depth"] in depths:
            m[depths.index(r["depth"]), widths.index(r["width"])] = float(v)
    return m


def _boundary_segments(flags: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Edges between neighbouring cells whose flag differs (cell (i, j) spans j-0.5..j+0.5,
    i-0.5..i+0.5); unknown (nan) cells draw no edge."""
    segs = []
    n_i, n_j = flags.shape
    for i in range(n_i):
        for j in range(n_j):
            a = flags[i, j]
            if j + 1 < n_j and not np.isnan(a) and not np.isnan(flags[i, j + 1]):
                if a != flags[i, j + 1]:
                    segs.append(((j + 0.5, i - 0.5), (j + 0.5, i + 0.5)))
            if i + 1 < n_i and not np.isnan(a) and not np.isnan(flags[i + 1, j]):
                if a != flags[i + 1, j]:
                    segs.append(((j - 0.5, i + 0.5), (j + 0.5, i + 0.5)))
    return segs


def plot_grid(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Heat map of test accuracy (%) over width (x) and depth (y, deeper upwards); cells whose
    last hidden layer is conflicting at the end are hatched, the boundary between conflicting
    and non-conflicting cells is drawn in red (solid: end of training; dashed: at init)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    widths = sorted({r["width"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    acc = _matrix(rows, "test_acc_pct", widths, depths)
    conf = _matrix(rows, "conflicting", widths, depths)
    conf0 = _matrix(rows, "conflicting_init", widths, depths)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(widths) + 2.5), 0.6 * len(depths) + 2.4))
    im = ax.imshow(acc, origin="lower", cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(len(depths)):
        for j in range(len(widths)):
            if not np.isnan(acc[i, j]):
                ax.text(
                    j,
                    i,
                    f"{acc[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if acc[i, j] < 60 else "k",
                )
            if conf[i, j] == 1:
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="r", lw=0)
                )
    ax.add_collection(LineCollection(_boundary_segments(conf), colors="r", linewidths=2.5))
    ax.add_collection(
        LineCollection(_boundary_segments(conf0), colors="orange", linewidths=1.5, linestyles="--")
    )
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("width (units per hidden layer)")
    ax.set_ylabel("depth (hidden layers)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    ax.legend(
        handles=[
            Patch(fill=False, hatch="//", edgecolor="r", label="conflicting (end)"),
            Line2D([], [], color="r", lw=2.5, label="boundary (end of training)"),
            Line2D([], [], color="orange", lw=1.5, ls="--", label="boundary (at init)"),
        ],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=3,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def print_grid(rows: list[dict], summary: dict, console=None) -> None:
    """The map as a rich table: depth rows x width columns, test accuracy (%), '*' marking a
    conflicting last hidden layer."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    widths = sorted({r["width"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    by = {(r["width"], r["depth"]): r for r in rows}
    t = Table(title="test accuracy (%) by depth x width; * = conflicting last hidden layer")
    t.add_column("depth \\ width")
    for w in widths:
        t.add_column(str(w), justify="right")
    for d in reversed(depths):
        cells = []
        for w in widths:
            r = by.get((w, d), {})
            a = r.get("test_acc_pct")
            cells.append("-" if a is None else f"{a:.1f}" + ("*" if r.get("conflicting") else ""))
        t.add_row(str(d), *cells)
    console.print(t)
    console.print(
        f"{summary['num_conflicting']} of {summary['num_finished']} nets conflicting; mean test "
        f"accuracy {_f(summary['mean_test_acc_pct_conflicting'])} % (conflicting) vs "
        f"{_f(summary['mean_test_acc_pct_not_conflicting'])} % (not); best {summary['best']}",
        highlight=False,
    )
    for cell, err in summary["errors"].items():
        console.print(f"[red]{cell}[/red]: {err}", highlight=False)


def _f(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def parse_ints(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """ "5,10,25" -> (5, 10, 25) with a clear error."""
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"{what} must be comma-separated integers such as 5,10,25; got {text!r}."
        ) from None
    if not vals:
        raise ValueError(f"{what} is empty; give comma-separated integers such as 5,10,25.")
    return vals
