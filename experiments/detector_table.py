"""Detector table (issue 10 §4): which criterion flags the degraded nets of the width x depth map.

    .venv/bin/python experiments/detector_table.py train --grids mnist:0          # tuning grid
    .venv/bin/python experiments/detector_table.py train                          # every grid
    .venv/bin/python experiments/detector_table.py eval                           # the tables

``train`` trains a 6 x 6 FNN grid (widths 5..100, depths 1..50; GridConfig, resumable) per
dataset and seed with the checkpoints kept. ``eval`` loads each cell's final model, takes the
last hidden layer's activations on the first ``--samples`` (64, as auto-tune) non-augmented
training samples, applies every criterion, and measures the validation accuracy on the last
5000 training samples (never trained on: the grid trains on the first ``--train-limit``).

A net is *degraded* when its accuracy is more than 5 points below the best net of the same
width (same dataset and seed). Tuning (MNIST seed 0) uses validation accuracy; held-out grids
(MNIST seeds 1-2, Fashion-MNIST seeds 0-2) use test accuracy (issue 10 §4). For each criterion:
degraded nets flagged (recall), false alarms (flagged among healthy nets), misses.

Outputs: experiments/results/detector/cells.csv (one row per cell x criterion),
tuning.csv / heldout.csv (one row per criterion), detector.json, report.html.
Work directories (checkpoints) under --work (not committed). Every step is resumable: cells
already in cells.csv are not measured again unless --force.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from conflicting_bundles.grid import GridConfig, run_grid

WIDTHS = (5, 10, 15, 25, 50, 100)
DEPTHS = (1, 2, 5, 10, 20, 50)
GRIDS = ("mnist:0", "mnist:1", "mnist:2", "fashion-mnist:0", "fashion-mnist:1", "fashion-mnist:2")
TUNING = ("mnist:0",)
CRITERIA = ("reference", "raw", "coarse:16", "coarse:256", "rel:0.001", "rel:0.01", "calibrated")
VAL_SAMPLES = 5000  # the last 5000 training samples: validation, never trained on
DEGRADED_POINTS = 5.0


def grid_config(dataset: str, seed: int, args: argparse.Namespace) -> GridConfig:
    return GridConfig(
        widths=WIDTHS,
        depths=DEPTHS,
        dataset=dataset,
        epochs=args.epochs,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        workers=args.workers,
        seed=seed,
        out=str(Path(args.work) / f"grid-{dataset}-s{seed}"),
        keep_checkpoints=True,
    )


def parse_grids(text: str) -> list[tuple[str, int]]:
    out = []
    for g in text.split(","):
        ds, _, s = g.strip().partition(":")
        if not ds or not s.isdigit():
            raise SystemExit(f"--grids: expected dataset:seed[,dataset:seed...], got {g!r}.")
        out.append((ds, int(s)))
    return out


def cmd_train(args: argparse.Namespace) -> None:
    for ds, seed in parse_grids(args.grids):
        t0 = time.perf_counter()
        res = run_grid(grid_config(ds, seed, args), progress=True, report=False)
        print(f"[{ds} seed {seed}] {res.summary['actions']} in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("train", "eval"))
    ap.add_argument("--grids", default=",".join(GRIDS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--test-limit", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--work", default="runs/detector")
    ap.add_argument("--results", default="experiments/results/detector")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.command == "train":
        cmd_train(args)
    else:
        cmd_eval(args)


def cmd_eval(args: argparse.Namespace) -> None:  # filled in below
    raise NotImplementedError


if __name__ == "__main__":
    main()
