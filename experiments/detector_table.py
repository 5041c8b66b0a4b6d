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
Work directories (checkpoints) under --work (not committed). Every step is resumable: trained
cells are skipped (run_grid), measured cells are cached in cells.json and not measured again
unless --force. The recipe is the seed-0 map's (5 epochs, first 20,000 training samples, first
5,000 test samples); seed 0 is retrained here only to keep its checkpoints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console

from conflicting_bundles import runs
from conflicting_bundles.calibrated import RADIUS, angular_margin
from conflicting_bundles.data import ArrayDataset, iterate, load_dataset
from conflicting_bundles.grid import GridConfig, cell_dir, run_grid
from conflicting_bundles.metric import Criterion, weight_amplitude
from conflicting_bundles.probes import Probe, resolve_points
from conflicting_bundles.report import html_table, print_table, write_html
from conflicting_bundles.train import evaluate

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


def split_of(dataset: str, seed: int) -> str:
    return "tuning" if f"{dataset}:{seed}" in TUNING else "held-out"


def measure_cell(run_dir: Path, x: torch.Tensor, y: torch.Tensor, val, num_classes: int) -> dict:
    """Accuracies of one cell and every criterion on its last hidden layer (x: (N, 1, 28, 28)
    training samples, y: (N,) labels)."""
    model, _ = runs.load_model(run_dir)
    s = runs.load_summary(run_dir)
    cfg = runs.load_config(run_dir)
    _, val_acc = evaluate(model, val, "cpu")
    point = resolve_points(model, None, None)[-1]
    acts: dict[str, torch.Tensor] = {}
    with torch.no_grad(), Probe(model, [point], on_activation=acts.__setitem__):
        model(x)
    a = acts[point.name].reshape(len(y), -1).float()  # (N, width)
    w_max = weight_amplitude(model)
    out = {
        "test_acc_pct": 100.0 * s["test_acc"],
        "val_acc_pct": 100.0 * val_acc,
        "layer": point.name,
        "angular_margin": angular_margin(a, y),
        "criteria": {},
    }
    for c in CRITERIA:
        st = Criterion.parse(c).stats(
            a, y, num_classes=num_classes, w_max=w_max, lr=cfg["lr"], batch_size=cfg["batch_size"]
        )
        out["criteria"][c] = {"entropy": st.entropy, "num_bundles": st.num_bundles}
    return out


def label_degraded(cells: list[dict], acc_key: str) -> None:
    """degraded: accuracy more than DEGRADED_POINTS below the best net of the same width."""
    best: dict[int, float] = {}
    for c in cells:
        best[c["width"]] = max(best.get(c["width"], -1.0), c[acc_key])
    for c in cells:
        c["accuracy_used"] = acc_key
        c["best_same_width_pct"] = best[c["width"]]
        c["degraded"] = c[acc_key] < best[c["width"]] - DEGRADED_POINTS


def name(c: dict) -> str:
    ds = {"mnist": "M", "fashion-mnist": "F"}.get(c["dataset"], c["dataset"])
    return f"{ds}{c['seed']}:w{c['width']}-d{c['depth']}"


def detector_rows(cells: list[dict]) -> list[dict]:
    """One row per criterion: flagged degraded nets, false alarms, misses."""
    rows = []
    for crit in CRITERIA:
        deg = [c for c in cells if c["degraded"]]
        ok = [c for c in cells if not c["degraded"]]
        hit = sum(c["criteria"][crit]["entropy"] > 0 for c in deg)
        fa = sum(c["criteria"][crit]["entropy"] > 0 for c in ok)
        rows.append(
            {
                "criterion": crit,
                "nets": len(cells),
                "degraded": len(deg),
                "flagged_degraded": hit,
                "flagged_pct": 100.0 * hit / len(deg) if deg else None,
                "misses": len(deg) - hit,
                "healthy": len(ok),
                "false_alarms": fa,
                "false_alarm_pct": 100.0 * fa / len(ok) if ok else None,
                "meets_target": bool(deg and ok and hit / len(deg) >= 0.9 and fa / len(ok) <= 0.1),
                "missed": " ".join(name(c) for c in deg if not c["criteria"][crit]["entropy"] > 0),
                "false_alarm_nets": " ".join(
                    name(c) for c in ok if c["criteria"][crit]["entropy"] > 0
                ),
            }
        )
    return rows


def cmd_eval(args: argparse.Namespace) -> None:
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    cache_path = res / "cells.json"
    cache = {} if args.force or not cache_path.is_file() else runs.read_json(cache_path)
    for ds, seed in parse_grids(args.grids):
        gcfg = grid_config(ds, seed, args)
        full = load_dataset(ds, "train")
        val = ArrayDataset(
            full.images[-VAL_SAMPLES:], full.labels[-VAL_SAMPLES:], full.num_classes, full.name
        )
        x, y = next(iterate(full, args.samples, shuffle=False, augment=False))
        for w in WIDTHS:
            for d in DEPTHS:
                key = f"{ds}:{seed}:w{w}-d{d}"
                run_dir = cell_dir(gcfg.out, w, d)
                if key in cache or not (run_dir / runs.SUMMARY).is_file():
                    continue
                m = measure_cell(run_dir, x, y, val, full.num_classes)
                cache[key] = {"dataset": ds, "seed": seed, "width": w, "depth": d, **m}
                runs.write_json(cache_path, cache)  # after every cell: resumable
        print(f"[{ds} seed {seed}] measured", flush=True)
    write_tables(list(cache.values()), res, args)


def write_tables(cells: list[dict], res: Path, args: argparse.Namespace) -> None:
    samples = args.samples
    flat, tables = [], {}
    for split, acc_key in (("tuning", "val_acc_pct"), ("held-out", "test_acc_pct")):
        part = [c for c in cells if split_of(c["dataset"], c["seed"]) == split]
        for ds, seed in sorted({(c["dataset"], c["seed"]) for c in part}):
            label_degraded([c for c in part if (c["dataset"], c["seed"]) == (ds, seed)], acc_key)
        tables[split] = detector_rows(part) if part else []
        for c in part:
            for crit, st in c["criteria"].items():
                flat.append(
                    {
                        "split": split,
                        **{k: v for k, v in c.items() if k != "criteria"},
                        "criterion": crit,
                        "entropy": st["entropy"],
                        "num_bundles": st["num_bundles"],
                        "flagged": st["entropy"] > 0,
                    }
                )
        by_ds = {}
        for ds in sorted({c["dataset"] for c in part}):
            by_ds[ds] = detector_rows([c for c in part if c["dataset"] == ds])
        tables[f"{split}-by-dataset"] = by_ds
    runs.write_csv(res / "cells.csv", flat)
    runs.write_csv(res / "tuning.csv", tables["tuning"])
    runs.write_csv(res / "heldout.csv", tables["held-out"])
    meta = {
        "samples": samples,
        "degraded": f"accuracy < best net of the same width - {DEGRADED_POINTS} points "
        "(tuning: validation accuracy; held-out: test accuracy)",
        "tuning_grids": list(TUNING),
        "grid": {
            "widths": WIDTHS,
            "depths": DEPTHS,
            "epochs": args.epochs,
            "train_limit": args.train_limit,
            "test_limit": args.test_limit,
            "validation": f"the last {VAL_SAMPLES} training samples",
        },
        "calibrated_radius": RADIUS,
        "tables": tables,
    }
    runs.write_json(res / "detector.json", meta)
    cols = ["criterion", "degraded", "flagged_degraded", "misses", "healthy", "false_alarms"]
    for split in ("tuning", "held-out"):
        print_table(
            tables[split],
            cols + ["meets_target"],
            title=f"detector table, {split} nets ({samples} samples)",
            console=Console(width=120),
        )
    cal = next((r for r in tables["held-out"] if r["criterion"] == "calibrated"), None)
    headline = "No held-out nets measured yet."
    if cal:
        headline = (
            f"calibrated on held-out nets: {cal['flagged_degraded']}/{cal['degraded']} degraded "
            f"nets flagged, {cal['false_alarms']}/{cal['healthy']} false alarms "
            f"(target >= 90% flagged, <= 10% false alarms: "
            f"{'met' if cal['meets_target'] else 'NOT met'})."
        )
    sections = [
        ("Held-out nets (test accuracy)", html_table(tables["held-out"])),
        ("Tuning nets: MNIST seed 0 (validation accuracy)", html_table(tables["tuning"])),
    ]
    for ds, rows in tables["held-out-by-dataset"].items():
        sections.append((f"Held-out, {ds} only", html_table(rows)))
    write_html(res / "report.html", "Detector table", sections, headline=headline, raw=meta)
    md = [f"## tuning (MNIST seed 0, validation accuracy)\n\n{markdown(tables['tuning'])}"]
    md.append(f"## held-out (test accuracy)\n\n{markdown(tables['held-out'])}")
    for ds, rows in tables["held-out-by-dataset"].items():
        md.append(f"## held-out, {ds}\n\n{markdown(rows)}")
    runs.atomic_write_text(res / "tables.md", "\n\n".join(md) + "\n")


def markdown(rows: list[dict]) -> str:
    """criterion | degraded flagged | false alarms | misses, as a Markdown table."""
    out = ["| criterion | degraded nets flagged | false alarms | misses |", "|---|---|---|---|"]
    for r in rows:
        fl = f"{r['flagged_degraded']}/{r['degraded']} ({r['flagged_pct'] or 0:.0f}%)"
        fa = f"{r['false_alarms']}/{r['healthy']} ({r['false_alarm_pct'] or 0:.0f}%)"
        out.append(f"| {r['criterion']} | {fl} | {fa} | {r['misses']} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
