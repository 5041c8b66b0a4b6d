"""Depth search: auto-tune against the alternatives (issue 10, docs/search.md).

    python benchmarks/bench_search.py            # full: ~30-40 min on 2 cores, 2 workers
    python benchmarks/bench_search.py --quick    # a few minutes: one start, one seed, small data

Every method of conflicting_bundles.search runs from the same starts (FNN 100x25, FNN 60x60,
plain-30 at width 1/8), on MNIST and Fashion-MNIST, seeds 0-2 (the conv start: seed 0 only, for
time), with the same budget per training. Rows (one per method x dataset x start x seed) go to
benchmarks/results/bench_search.json, which is also the resume file: rows already there are
skipped, and each job's trainings are cached under runs/bench_search/. MNIST seed 0 rows are
the *tuning* rows (the calibrated criterion was tuned there); all others are *held-out*. The
issue's targets are computed on held-out rows, means over seeds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench_search"
METHODS = [
    "autotune",
    "autotune-warm",
    "autotune-calibrated",
    "oracle-depth",
    "naswot",
    "conflict-at-init",
    "fixed",
    "random",
    "conflict-at-init@calibrated",
]
FIELDS = (
    "method",
    "dataset",
    "start",
    "seed",
    "split",
    "criterion",
    "size",
    "params",
    "start_params",
    "latency_ms_b1",
    "latency_ms_b64",
    "val_acc",
    "test_acc",
    "epochs",
    "trainings",
    "wall_s",
)


def starts(quick: bool) -> dict[str, dict]:
    """Start name -> SearchStart keyword arguments and budget (one training's)."""
    if quick:
        fnn = {"epochs": 3, "check_epochs": 1, "train_limit": 10000, "val_split": 2000}
        return {"fnn-100x25": {"family": "fnn", "width": 25, "depth": 100, "budget": fnn}}
    fnn = {"epochs": 5, "check_epochs": 2, "train_limit": 25000, "val_split": 5000}
    conv = {"epochs": 5, "check_epochs": 2, "train_limit": 15000, "val_split": 5000}
    conv["test_limit"] = 5000
    return {
        "fnn-100x25": {"family": "fnn", "width": 25, "depth": 100, "budget": fnn},
        "fnn-60x60": {"family": "fnn", "width": 60, "depth": 60, "budget": fnn},
        "plain-30-w1/8": {
            "family": "plain",
            "blocks": (3, 3, 5, 3),
            "width_mult": 0.125,
            "budget": conv,
        },
    }


def split_of(dataset: str, seed: int) -> str:
    return "tuning" if dataset == "mnist" and seed == 0 else "held-out"


def jobs(args) -> list[tuple[str, str, int]]:
    """(start, dataset, seed): seed 0 of every start first, then the other seeds start by
    start, so a run cut short misses the last start's last seeds, never a start."""
    out = []
    names = list(starts(args.quick))
    for name in names:
        seeds = [0] if (args.quick or name.startswith("plain")) else args.seeds
        for ds in args.datasets:
            out.extend((name, ds, s) for s in seeds)
    return sorted(out, key=lambda j: (j[2] > 0, names.index(j[0]), j[2], args.datasets.index(j[1])))


def run_job(job: tuple[str, str, int], methods: list[str], quick: bool) -> list[dict]:
    """All methods from one (start, dataset, seed); returns the table rows."""
    import torch

    torch.set_num_threads(1)
    from conflicting_bundles.search import Budget, SearchStart, run_methods

    name, dataset, seed = job
    kw = dict(starts(quick)[name])
    budget = Budget(**kw.pop("budget"))
    start = SearchStart(dataset=dataset, seed=seed, budget=budget, threads=1, **kw)
    work = WORK / ("quick" if quick else "full") / dataset / name.replace("/", "_") / f"s{seed}"
    results = run_methods(start, methods, work, log=lambda s: print(s, flush=True))
    rows = []
    for r in results:
        d = r.row()
        d.update(start=name, split=split_of(dataset, seed))
        rows.append({k: d.get(k) for k in FIELDS} | {"details": r.details})
    return rows


def _key(r: dict) -> tuple:
    return (r["method"], r["dataset"], r["start"], r["seed"])


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def summarise(rows: list[dict], epochs_of: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """Means over seeds per (split, dataset, start, method), and the issue's targets per
    held-out (dataset, start)."""
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["split"], r["dataset"], r["start"], r["method"]), []).append(r)
    means = []
    for (split, ds, st, m), rs in sorted(groups.items()):
        means.append(
            {
                "split": split,
                "dataset": ds,
                "start": st,
                "method": m,
                "seeds": len(rs),
                "test_acc": float(np.mean([r["test_acc"] for r in rs])),
                "test_acc_std": float(np.std([r["test_acc"] for r in rs])),
                "val_acc": float(np.mean([r["val_acc"] or 0.0 for r in rs])),
                "params": float(np.mean([r["params"] for r in rs])),
                "param_ratio": float(np.mean([r["start_params"] / r["params"] for r in rs])),
                "epochs": float(np.mean([r["epochs"] for r in rs])),
                "wall_s": float(np.mean([r["wall_s"] for r in rs])),
                "sizes": [r["size"] for r in rs],
            }
        )
    targets = []
    for (split, ds, st, m), rs in sorted(groups.items()):
        oracle = groups.get((split, ds, st, "oracle-depth"))
        if split != "held-out" or not m.startswith(("autotune", "naswot")) or not oracle:
            continue
        common = sorted({r["seed"] for r in rs} & {r["seed"] for r in oracle})
        if not common:
            continue
        mine = [r for r in rs if r["seed"] in common]
        orc = [r for r in oracle if r["seed"] in common]
        acc = float(np.mean([r["test_acc"] for r in mine]))
        oracle_acc = float(np.mean([r["test_acc"] for r in orc]))
        gap = 100 * (oracle_acc - acc)
        ratio = float(np.mean([r["epochs"] for r in mine])) / epochs_of[st]
        pr = float(np.mean([r["start_params"] / r["params"] for r in mine]))
        targets.append(
            {
                "dataset": ds,
                "start": st,
                "method": m,
                "seeds": common,
                "test_acc": acc,
                "oracle_test_acc": oracle_acc,
                "gap_points": gap,
                "epochs_over_one_training": ratio,
                "param_ratio": pr,
                "within_1_point": gap <= 1.0,
                "epochs_le_1.5x": ratio <= 1.5,
                "params_3x_fewer": pr >= 3.0,
            }
        )
    return means, targets


def markdown(rows: list[dict], cols: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(cell(r.get(c)) for c in cols) + " |\n" for r in rows)


def plots(rows: list[dict], stem: str) -> None:
    from conflicting_bundles.search.plots import scatter

    for split in ("held-out", "tuning"):
        rs = [r for r in rows if r["split"] == split]
        if not rs:
            continue
        tag = "" if split == "held-out" else "_tuning"
        scatter(
            [(r["method"], r["epochs"], 100 * r["test_acc"]) for r in rs],
            RESULTS / f"{stem}_cost{tag}.png",
            "epochs trained by the method (all its trainings)",
            "test accuracy (%)",
            front=False,
            title=f"Test accuracy vs training cost ({split} rows)",
        )
        scatter(
            [(r["method"], r["params"], 100 * r["test_acc"]) for r in rs],
            RESULTS / f"{stem}_pareto{tag}.png",
            "parameters of the final network",
            "test accuracy (%)",
            logx=True,
            title=f"Accuracy vs parameters, Pareto front dashed ({split} rows)",
        )


def write(path: Path, rows: list[dict], args, wall: float) -> None:
    from conflicting_bundles.runs import write_json

    epochs_of = {k: v["budget"]["epochs"] for k, v in starts(args.quick).items()}
    means, targets = summarise(rows, epochs_of)
    write_json(
        path,
        {
            "benchmark": "bench_search",
            "quick": args.quick,
            "starts": starts(args.quick),
            "methods": args.methods,
            "protocol": "MNIST seed 0 rows are tuning rows; targets use held-out rows only",
            "wall_s_this_invocation": wall,
            "rows": rows,
            "means": means,
            "targets": targets,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="A few-minute version.")
    ap.add_argument("--workers", type=int, default=2, help="Processes (one thread each).")
    ap.add_argument("--methods", default=",".join(METHODS), help="Comma-separated methods.")
    ap.add_argument("--datasets", default="mnist,fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--report-only", action="store_true", help="Tables/plots from the JSON.")
    args = ap.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        args.datasets = ["mnist"]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stem = "bench_search_quick" if args.quick else "bench_search"
    path = RESULTS / f"{stem}.json"
    rows = load_rows(path)
    done = {_key(r) for r in rows}
    todo = [
        j
        for j in jobs(args)
        if any((m, j[1], j[0], j[2]) not in done for m in args.methods) and not args.report_only
    ]
    t0 = time.perf_counter()
    print(f"{len(todo)} jobs to run ({len(done)} rows already in {path.name})", flush=True)
    if todo:
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(1, min(args.workers, len(todo)))) as pool:
            pending = [pool.apply_async(run_job, (j, args.methods, args.quick)) for j in todo]
            for j, p in zip(todo, pending, strict=True):
                try:
                    new = p.get()
                except Exception as e:  # one failing job must not lose the others' rows
                    print(f"job {j} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    continue
                rows = [r for r in rows if _key(r) not in {_key(n) for n in new}] + new
                write(path, rows, args, time.perf_counter() - t0)
                print(f"done {j}: {len(new)} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    write(path, rows, args, time.perf_counter() - t0)
    data = json.loads(path.read_text())
    plots(rows, stem)
    cols = ["dataset", "start", "method", "seeds", "test_acc", "test_acc_std", "val_acc"]
    cols += ["params", "param_ratio", "epochs", "wall_s"]
    for split in ("held-out", "tuning"):
        print(f"\n{split} rows (means over seeds)\n")
        print(markdown([m for m in data["means"] if m["split"] == split], cols))
    print("\ntargets (held-out rows, means over seeds; gap = oracle - method, points)\n")
    tcols = ["dataset", "start", "method", "test_acc", "oracle_test_acc", "gap_points"]
    tcols += ["epochs_over_one_training", "param_ratio", "within_1_point", "epochs_le_1.5x"]
    tcols += ["params_3x_fewer", "seeds"]
    print(markdown(data["targets"], tcols))
    print(f"wrote {path} and {stem}_*.png ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
