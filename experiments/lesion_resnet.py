"""Lesion study (docs/method.md §6) on CPU-sized residual nets, on MNIST and Fashion-MNIST.

    .venv/bin/python experiments/lesion_resnet.py                       # ~35 min on one core
    .venv/bin/python experiments/lesion_resnet.py --datasets mnist --epochs 1 \\
        --train-limit 2000 --repeats 3 --work runs/experiments-smoke --results /tmp/smoke

Per dataset: train resnet-50 (blocks [3, 6, 12, 3] = 24 blocks) with width_mult 1/8 by the
reference recipe (RAdam + Lookahead, batch 64, augmentation) on the first --train-limit training
samples; then ``lesion_run`` with 15 repeats, 64 measuring samples, --test-limit test samples.
Every criterion of lesion.DEFAULT_CRITERIA (the reference criterion, raw equality, the
reference resolution made 16x, 256x, 1024x coarser, tolerances of 0.1 % and 1 % of the
activation scale) is measured per block and correlated with single-lesion harm. Group curves
are formed for the reference criterion (primary) and for one calibrated criterion,
``coarse:K`` with K = the median margin of the blocks (in units of q), which flags about half
of the blocks. K is computed from the margins alone, before any lesion is evaluated, so it is
calibrated to flag half the blocks, never to a lesion outcome.

Resumable: a finished training run is skipped and an interrupted one resumed; the lesion study
reuses its cache of evaluated lesion sets. Work directories go under --work (not committed);
the small result files (CSV, JSON, PNG) are copied to --results/lesion-<dataset>/.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from conflicting_bundles.grid import train_or_resume
from conflicting_bundles.lesion import DEFAULT_CRITERIA, LesionConfig, block_signals, lesion_run
from conflicting_bundles.train import TrainConfig

RESULT_FILES = (
    "lesion_blocks.csv",
    "lesion_curves.csv",
    "lesion_corr.csv",
    "lesion_summary.json",
    "lesion.png",
    "lesion_single.png",
)


def median_margin_criterion(run_dir: Path, samples: int) -> str:
    """coarse:K with K the median margin (units of q, 3 significant digits) of the lesionable
    blocks: flags about half of them. Reads only the model and training samples."""
    from conflicting_bundles import runs
    from conflicting_bundles.data import iterate, load_dataset

    tc = TrainConfig.from_dict(runs.load_config(run_dir))
    model, _ = runs.load_model(run_dir)
    ds = load_dataset(tc.dataset, "train", tc.data_dir, limit=tc.train_limit)
    x, y = next(iterate(ds, samples, shuffle=False, augment=False))
    cfg = LesionConfig(criteria=("reference",), lr=tc.lr, batch_size=tc.batch_size)
    margins = [b["margin"] for b in block_signals(model, x, y, cfg) if b["lesionable"]]
    return f"coarse:{float(f'{np.median(margins):.3g}'):g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="mnist,fashion-mnist")
    ap.add_argument("--blocks", default="3,6,12,3", help="resnet blocks per stage")
    ap.add_argument("--width-mult", type=float, default=0.125)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--test-limit", type=int, default=2000, help="test samples per lesion eval")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/experiments")
    ap.add_argument("--results", default="experiments/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    blocks = [int(b) for b in args.blocks.split(",")]

    for ds in args.datasets.split(","):
        t0 = time.perf_counter()
        work = Path(args.work) / f"lesion-{ds}"
        tc = TrainConfig(
            model="resnet",
            model_kwargs={"blocks": blocks, "width_mult": args.width_mult},
            dataset=ds,
            epochs=args.epochs,
            seed=args.seed,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
            measure_samples=args.samples,
            threads=1,
            device="cpu",
            tensorboard=False,
            out=str(work / "run"),
        )
        action = train_or_resume(tc)
        print(f"[{ds}] training: {action} ({time.perf_counter() - t0:.0f} s)", flush=True)
        calibrated = median_margin_criterion(work / "run", args.samples)
        print(f"[{ds}] calibrated criterion: {calibrated}", flush=True)
        cfg = LesionConfig(
            repeats=args.repeats,
            samples=args.samples,
            seed=args.seed,
            criteria=(*DEFAULT_CRITERIA, calibrated),
            flag_criteria=("reference", calibrated),
            test_limit=args.test_limit,
        )
        lesion_run(work / "run", cfg, out=work / "lesion", threads=1)
        dest = Path(args.results) / f"lesion-{ds}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in RESULT_FILES:
            shutil.copy2(work / "lesion" / name, dest / name)
        shutil.copy2(work / "run" / "summary.json", dest / "train_summary.json")
        shutil.copy2(work / "run" / "metrics.csv", dest / "train_metrics.csv")
        print(f"[{ds}] done in {time.perf_counter() - t0:.0f} s -> {dest}", flush=True)


if __name__ == "__main__":
    main()
