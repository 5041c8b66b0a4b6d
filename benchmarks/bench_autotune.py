"""Auto-tune with the paper's restart (fresh weights) against ``--restart warm``.

    python benchmarks/bench_autotune.py [--quick] [--out runs/bench_autotune]

Same start architecture and seed for both; printed side by side: total training epochs and wall
time until the final architecture, number of prunes, final accuracy, and their ratios (warm /
fresh), all measured in this run. Cases: a deep narrow FNN on MNIST, and a narrow plain conv
net (width_mult 1/8) on a few thousand MNIST samples with the reference criterion and, because
the reference trigger rarely fires on small conv nets (docs/method.md §9), also with a coarser
criterion, labelled as such. Each search resumes if interrupted (re-run the same command).
Target for warm: the same accuracy within 0.5 points with at most half the epochs.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from outputs import RESULTS  # benchmarks/outputs.py


def cases(quick: bool) -> list[dict]:
    fnn = dict(
        model="fnn",
        model_kwargs={"width": 25, "depth": 100},
        dataset="mnist",
        epochs=4 if quick else 10,
        train_limit=10000,
        test_limit=5000,
    )
    conv = dict(
        model="plain",
        model_kwargs={"blocks": [3, 3, 5, 3], "width_mult": 0.125},
        dataset="mnist",
        epochs=3 if quick else 6,
        train_limit=4000,
        test_limit=2000,
    )
    return [
        {
            "name": "fnn-100x25 (reference)",
            "train": fnn,
            "criterion": "reference",
            "check_epochs": fnn["epochs"],
        },
        {
            "name": "plain-30 w1/8 (reference)",
            "train": conv,
            "criterion": "reference",
            "check_epochs": conv["epochs"],
        },
        {
            "name": "plain-30 w1/8 (coarse:16, NOT the reference criterion)",
            "train": conv,
            "criterion": "coarse:16",
            "check_epochs": conv["epochs"],
        },
    ]


def run_one(job: dict) -> dict:
    import torch

    from conflicting_bundles.autotune import AutotuneConfig, autotune

    torch.set_num_threads(1)
    out = Path(job["out"])
    resume = (out / "autotune_state.json").exists()
    cfg = AutotuneConfig(
        out=str(out),
        variant="all",
        restart=job["restart"],
        check_epochs=job["check_epochs"],
        samples=64,
        criterion=job["criterion"],
        train={**job["train"], "seed": 0, "threads": 1, "progress": False, "tensorboard": False},
    )
    res = autotune(cfg, resume=resume)
    return {
        "case": job["name"],
        "restart": job["restart"],
        "epochs": res.total_epochs,
        "wall_s": res.wall_time,
        "prunes": len(res.steps) - 1,
        "final_blocks": res.summary["final_blocks"],
        "test_acc": res.test_acc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_autotune", help="run directories")
    ap.add_argument("--update-results", action="store_true",
                    help="write the committed benchmarks/results/bench_autotune.json")  # fmt: skip
    args = ap.parse_args()
    jobs = []
    for i, c in enumerate(cases(args.quick)):
        for restart in ("fresh", "warm"):
            jobs.append({**c, "restart": restart, "out": f"{args.out}/case{i}-{restart}"})
    with ProcessPoolExecutor(args.jobs) as ex:
        results = list(ex.map(run_one, jobs))
    console = Console()
    t = Table(title="auto-tune: fresh restart (paper) vs warm restart, variant all")
    for c in ("case", "restart", "prunes", "final blocks", "epochs", "wall s", "test acc %"):
        t.add_column(c, justify="right")
    rows = []
    for i in range(0, len(results), 2):
        f, w = results[i], results[i + 1]
        for r in (f, w):
            t.add_row(
                r["case"],
                r["restart"],
                str(r["prunes"]),
                str(r["final_blocks"]),
                str(r["epochs"]),
                f"{r['wall_s']:.0f}",
                f"{100 * (r['test_acc'] or 0):.2f}",
            )
        ratio = {
            "case": f["case"],
            "epochs_ratio": w["epochs"] / max(1, f["epochs"]),
            "wall_ratio": w["wall_s"] / max(1e-9, f["wall_s"]),
            "acc_diff_points": 100 * ((w["test_acc"] or 0) - (f["test_acc"] or 0)),
        }
        ok = ratio["epochs_ratio"] <= 0.5 and abs(ratio["acc_diff_points"]) <= 0.5
        ratio["meets_target"] = ok
        rows.append(ratio)
        t.add_row(
            "",
            "warm/fresh",
            "",
            "",
            f"{ratio['epochs_ratio']:.2f}x",
            f"{ratio['wall_ratio']:.2f}x",
            f"{ratio['acc_diff_points']:+.2f} pt",
            end_section=True,
        )
    console.print(t)
    for r in rows:
        console.print(
            f"{r['case']}: target (<= 0.5x epochs, |acc diff| <= 0.5 pt) "
            f"{'met' if r['meets_target'] else 'NOT met'}"
        )
    path = (RESULTS if args.update_results else Path(args.out)) / "bench_autotune.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": results, "ratios": rows}, indent=2))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
