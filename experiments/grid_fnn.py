"""Width x depth map of FNNs (docs/method.md §7) on MNIST and Fashion-MNIST, CPU-sized.

    .venv/bin/python experiments/grid_fnn.py                    # ~25 min on one core
    .venv/bin/python experiments/grid_fnn.py --workers 2        # when both cores are free
    .venv/bin/python experiments/grid_fnn.py --datasets mnist --widths 5,25 --depths 1,20 \\
        --epochs 1 --train-limit 2000 --work /tmp/grid-smoke --results /tmp/grid-smoke-res

An 8 x 8 grid (widths 3..100, depths 1..100 hidden layers) per dataset, each net trained with
the reference recipe (RAdam + Lookahead, batch 64, augmentation) for --epochs on the first
--train-limit samples; the bundle entropy of the last hidden layer (64 training samples,
reference criterion) at initialisation and at the end, and the first conflicting hidden layer
of the final net. Resumable: ``run_grid`` skips finished cells and resumes interrupted ones.
Work directories go under --work (not committed); grid.csv, grid_summary.json and grid.png
are copied to --results/grid-<dataset>/.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from conflicting_bundles.grid import GridConfig, parse_ints, run_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="mnist,fashion-mnist")
    ap.add_argument("--widths", default="3,5,8,10,15,25,50,100")
    ap.add_argument("--depths", default="1,2,3,5,10,20,50,100")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--test-limit", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/experiments")
    ap.add_argument("--results", default="experiments/results")
    args = ap.parse_args()
    for ds in args.datasets.split(","):
        t0 = time.perf_counter()
        cfg = GridConfig(
            widths=parse_ints(args.widths, "--widths"),
            depths=parse_ints(args.depths, "--depths"),
            dataset=ds,
            epochs=args.epochs,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
            workers=args.workers,
            seed=args.seed,
            out=str(Path(args.work) / f"grid-{ds}"),
        )
        res = run_grid(cfg)
        dest = Path(args.results) / f"grid-{ds}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("grid.csv", "grid_summary.json", "grid.png"):
            shutil.copy2(res.out / name, dest / name)
        print(f"[{ds}] {res.summary['actions']} in {time.perf_counter() - t0:.0f} s -> {dest}")


if __name__ == "__main__":
    main()
