"""run_grid: every cell of the grid trained (or resumed) on the shared executors, then
grid.csv, grid_summary.json, grid.png and report.html."""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import rundir, runs
from ..console import progress_enabled
from ..pool import run_pool
from ..report import pct, plural
from .cells import (
    GridConfig,
    GridResult,
    cell_config,
    cell_dir,
    cell_job,
    cell_row,
    check_cell,
    finish_cell,
    is_done,
)
from .plot import plot_grid, print_grid

SETTINGS = "grid.json"  # the settings every cell shares (checked on a rerun)
# May differ on a rerun: which cells, how long, how it runs (cells outside the old grid are
# added, more epochs continue every cell from its checkpoint).
RERUN_FIELDS = ("widths", "depths", "epochs", "out", "workers", "keep_checkpoints", "data_dir")


def settings(cfg: GridConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in RERUN_FIELDS}


def check_settings(cfg: GridConfig, out: Path) -> None:
    """Refuse a rerun into ``out`` with other shared settings: its cells would be mixed."""
    path = out / SETTINGS
    if not path.is_file():
        return
    stored = runs.read_json(path)
    diff = [
        f"{k}: grid has {stored.get(k)!r}, given {v!r}"
        for k, v in settings(cfg).items()
        if k in stored and stored[k] != v
    ]
    if diff:
        raise ValueError(
            f"{out} holds a grid trained with other settings ({'; '.join(diff)}); its cells "
            "would be mixed with the new ones. Use the same settings (widths, depths and "
            "epochs may change), or another --out."
        )


def run_grid(cfg: GridConfig, *, progress: bool = True, report: bool = True) -> GridResult:
    """Train (or resume) every cell, then write grid.csv, grid_summary.json, grid.png and
    report.html into ``cfg.out`` and print the map. The folder is locked for the run; a rerun
    with other shared settings is refused (ValueError naming them)."""
    from ..data import load_dataset

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise runs.RunDirError(f"--out {out} is a file, not a directory.")
    check_settings(cfg, out)
    load_dataset(cfg.dataset, "train", cfg.data_dir, limit=1)  # a clear error before any worker
    with rundir.locked(out, "cbundles grid"):
        runs.write_json(out / SETTINGS, settings(cfg))
        return _run(cfg, out, progress, report)


def _run(cfg: GridConfig, out: Path, progress: bool, report: bool) -> GridResult:
    cells = [(w, d) for d in cfg.depths for w in cfg.widths]
    tcs = {c: cell_config(cfg, *c) for c in cells}
    actions: dict[tuple[int, int], str] = {}
    todo = []
    for c, tc in tcs.items():
        check_cell(tc)
        if is_done(Path(tc.out), cfg.epochs):
            actions[c] = "skipped"
            finish_cell(Path(tc.out), cfg.samples, cfg.keep_checkpoints)
        else:
            todo.append(c)
    todo.sort(key=lambda c: -(c[0] * (c[0] * c[1] + 784)))  # largest first: better packing
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    bars = progress and progress_enabled()  # a bar on a terminal, else one line per cell
    desc = f"grid cells ({workers} process{'' if workers == 1 else 'es'})"
    bar = tqdm(total=len(todo), desc=desc, disable=not bars)
    finished = []

    def done(c, action, error) -> None:  # a failed cell is reported, the grid goes on
        actions[c] = action if error is None else f"error: {type(error).__name__}: {error}"
        bar.update()
        finished.append(c)
        if progress and not bars:
            print(cell_line(out, c, actions[c], len(finished), len(todo)), flush=True)

    jobs = [(c, (tcs[c].to_dict(), cfg.samples, cfg.keep_checkpoints)) for c in todo]
    run_pool(cell_job, jobs, workers, done)
    bar.close()

    rows = []
    for w, d in cells:
        run_dir = cell_dir(out, w, d)
        if (run_dir / runs.SUMMARY).is_file():
            rows.append(cell_row(run_dir, w, d))
        else:
            rows.append({"width": w, "depth": d, "status": actions.get((w, d), "missing")})
    summary = summarize_grid(rows, cfg, actions)
    runs.write_csv(out / "grid.csv", rows)
    runs.write_json(out / "grid_summary.json", summary)
    plot_grid(
        rows,
        out / "grid.png",
        title=f"FNN width x depth on {cfg.dataset}, "
        f"{plural(cfg.epochs, 'epoch')} (criterion {cfg.criterion})",
    )
    if progress:
        print_grid(rows, summary)
    if report:
        from ..runreport import build_report

        build_report(out)
    return GridResult(out, rows, actions, summary)


def cell_line(out: Path, cell: tuple[int, int], action: str, n: int, total: int) -> str:
    """The plain line of a finished cell when no bar is drawn:
    "grid cell 3/8 w10-d2: trained, test 88.6%, conflicting no" (a failed cell: its error)."""
    w, d = cell
    text = f"grid cell {n}/{total} w{w}-d{d}: {action}"
    try:
        row = cell_row(cell_dir(out, w, d), w, d)
    except (OSError, ValueError, KeyError, runs.RunDirError):  # a failed cell: no summary
        return text
    conflicting = {True: "yes", False: "no"}.get(row.get("conflicting"), "n/a")
    return f"{text}, test {pct(row.get('test_acc'))}, conflicting {conflicting}"


def summarize_grid(rows: list[dict], cfg: GridConfig, actions: dict) -> dict:
    """Counts, mean accuracy on each side of the conflict boundary, the best net, and per
    width the smallest depth at which the net is conflicting (the boundary)."""
    done = [r for r in rows if r.get("test_acc") is not None]
    conf = [r for r in done if r.get("conflicting")]
    free = [r for r in done if r.get("conflicting") is False]

    def mean(rs: list[dict]) -> float | None:
        return float(np.mean([r["test_acc"] for r in rs])) if rs else None

    best = max(done, key=lambda r: r["test_acc"], default=None)
    boundary = {}
    for w in cfg.widths:
        ds = [r["depth"] for r in conf if r["width"] == w]
        boundary[str(w)] = min(ds) if ds else None
    errors = {f"w{w}-d{d}": a for (w, d), a in actions.items() if a.startswith("error")}
    return {
        "units": "accuracies are fractions in 0..1; entropies of the last hidden layer",
        "num_cells": len(rows),
        "num_finished": len(done),
        "num_conflicting": len(conf),
        "num_conflicting_init": sum(bool(r.get("conflicting_init")) for r in done),
        "mean_test_acc_conflicting": mean(conf),
        "mean_test_acc_not_conflicting": mean(free),
        "best": None
        if best is None
        else {k: best[k] for k in ("width", "depth", "test_acc", "conflicting")},
        "first_conflicting_depth_by_width": boundary,
        "conflicting_cells": [f"w{r['width']}-d{r['depth']}" for r in conf],
        "errors": errors,
        "actions": {
            k: sum(a == k for a in actions.values()) for k in ("trained", "resumed", "skipped")
        },
        "config": asdict(cfg),
    }
