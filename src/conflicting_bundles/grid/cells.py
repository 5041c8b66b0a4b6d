"""One cell of the FNN width x depth grid: its TrainConfig, train-or-resume, its per-layer
figures (measure.csv) and its row of grid.csv. The sweep's grid-cell kind runs the same code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import runs
from ..train import (
    TrainConfig,
    check_resume_config,
    jsonable,
    measure_run,
    resolve_model_kwargs,
    train,
)

MEASURE_ERROR = "measure_error.json"  # why a (diverged) cell has no measure.csv


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
        for name in ("epochs", "samples", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")


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


def is_done(run_dir: Path, epochs: int) -> bool:
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
    run_dir = Path(tc.out)
    check_cell(tc)
    if is_done(run_dir, tc.epochs):
        return "skipped"
    if runs.is_run_dir(run_dir) and runs.checkpoint_path(run_dir, "last").is_file():
        train(tc, resume=True)
        return "resumed"
    train(tc, force=True)
    return "trained"


def resolved(tc: TrainConfig) -> TrainConfig:
    """``tc`` with the model arguments filled in as train() stores them (for comparisons)."""
    from ..data import dataset_info

    kw = resolve_model_kwargs(tc.model, dict(tc.model_kwargs), dataset_info(tc.dataset))
    return TrainConfig(**{**tc.to_dict(), "model_kwargs": jsonable(kw)})


def check_cell(tc: TrainConfig) -> None:
    """A cell trained with another configuration is an error (ValueError naming the keys)."""
    if runs.is_run_dir(tc.out):
        check_resume_config(runs.load_config(tc.out), resolved(tc))


def finish_cell(run_dir: Path, samples: int, keep_checkpoints: bool) -> None:
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
            runs.write_json(run_dir / MEASURE_ERROR, {"error": str(e)})
    if not keep_checkpoints and ckpts.is_dir():
        shutil.rmtree(ckpts)


def cell_job(tc_dict: dict, samples: int, keep_checkpoints: bool) -> str:
    """One cell in a worker process (top level, so that it pickles)."""
    torch.set_num_threads(1)
    tc = TrainConfig.from_dict(tc_dict)
    action = train_or_resume(tc)
    finish_cell(Path(tc.out), samples, keep_checkpoints)
    return action


def cell_row(run_dir: str | Path, width: int, depth: int) -> dict:
    """The grid.csv row of a finished cell: accuracy (a fraction), bundle entropy of the last
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
        "test_acc": s.get("test_acc"),
        "best_test_acc": s.get("best_test_acc"),
        "train_acc": s.get("final_train_acc"),
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


def cell_finished(run_dir: str | Path) -> bool:
    """summary.json and the per-layer figures (measure.csv, or why there are none)."""
    d = Path(run_dir)
    return (d / runs.SUMMARY).is_file() and any(
        (d / n).is_file() for n in (runs.MEASURE_CSV, MEASURE_ERROR)
    )


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
