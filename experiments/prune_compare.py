"""Depth pruning on a CPU-sized residual net: conflict scores beside the baselines.

Trains a small resnet on MNIST with conflicting_bundles.train (or reuses a trained run dir with
--run), then for k = 1..K removed blocks records the test accuracy of
every scorer (one-shot: scores computed once on the trained net), and measures parameters and
forward time before and after removing ``--remove`` blocks (the "real removal" evidence).

    .venv/bin/python experiments/prune_compare.py --out runs/prune-compare        # ~10+ min CPU
    .venv/bin/python experiments/prune_compare.py --epochs 1 --train-limit 4096 --test-limit 1000

Writes to --out: run/ (the training run directory), compare/compare.csv + compare.png,
speed.json (params and median forward ms of the full and pruned nets per scorer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from conflicting_bundles.prune import count_params, prune_model, time_forward
from conflicting_bundles.prune.command import PruneConfig, run_compare
from conflicting_bundles.prune.inputs import load_batches
from conflicting_bundles.prune.loading import load_model
from conflicting_bundles.prune.runner import SCORERS


def train_project(args, run_dir: Path) -> Path:
    """Train with the reference recipe into run_dir."""
    from conflicting_bundles.train import TrainConfig, train

    cfg = TrainConfig(
        model="resnet",
        model_kwargs={"blocks": args.blocks, "width_mult": args.width_mult},
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        seed=args.seed,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        measure_samples=64,
        tensorboard=False,
        device="cpu",
        out=str(run_dir),
    )
    result = train(cfg, force=True)
    print(f"trained: {result.status}, test accuracy {result.test_acc}")
    return result.run_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/prune-compare")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--blocks", type=int, nargs=4, default=[2, 2, 3, 2], help="blocks per stage")
    p.add_argument("--width-mult", type=float, default=0.25, help="0.25: 16-128 channels")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--max-remove", type=int, default=None, help="largest k (default: all blocks)")
    p.add_argument("--remove", type=int, default=3, help="blocks removed for the speed check")
    p.add_argument("--random-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default=None, help="reuse this trained run dir (no training)")
    p.add_argument("--skip-train", action="store_true", help="reuse OUT/run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    out = Path(args.out)
    run_dir = out / "run"
    if args.run:
        run_dir = Path(args.run)
    elif not args.skip_train:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir = train_project(args, run_dir)

    cfg = PruneConfig(
        model=str(run_dir),
        dataset=args.dataset,
        data_dir=args.data_dir,
        out=str(out / "compare"),
        compare=True,
        max_remove=args.max_remove,
        test_limit=args.test_limit,
        scorers=SCORERS,
        random_repeats=args.random_repeats,
        seed=args.seed,
    )
    rows = run_compare(
        cfg, progress=lambda m: print(m, flush=True), force=True
    )  # a rerun replaces it
    print(f"compare: {len(rows)} rows -> {out / 'compare'}")

    # Real removal: parameters and forward time of the pruned nets.
    model, _ = load_model(str(run_dir))
    score = load_batches(args.dataset, "train", 256, args.data_dir, limit=256)
    example = load_batches(args.dataset, "test", 256, args.data_dir, limit=256)[0][0]
    speed = {
        "full": {"params": count_params(model), "forward_ms": 1e3 * time_forward(model, example)}
    }
    for name in SCORERS:
        res = prune_model(model, score, name, args.remove, scorer_kwargs={"seed": args.seed})
        speed[name] = {
            "removed": res.removed,
            "params": res.params_after,
            "forward_ms": 1e3 * time_forward(res.model, example),
        }
    (out / "speed.json").write_text(json.dumps(speed, indent=2))
    print(json.dumps(speed, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
