"""What a search writes when its state changes and when it ends: steps.csv/.json, the costs
of start vs final architecture (autotune.json), the plots, the report and the tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from .. import runs
from ..cost import cost_report
from ..models import create_model
from ..report import duration, pct, plot_curves, plural, print_table
from ..train import TrainConfig
from .config import AutotuneConfig
from .state import PRUNE_CSV, STEPS_CSV, STEPS_JSON, SUMMARY, SearchState, arch_blocks


@dataclass
class AutotuneResult:
    """status: "completed", or "diverged" when a step's training diverged (the search stopped
    there; its architecture is not a result)."""

    out: Path
    final_arch: dict
    test_acc: float | None
    steps: list[dict]
    total_epochs: int
    wall_time: float
    summary: dict
    status: str = "completed"


def search_status(steps: list[dict]) -> str:
    return "diverged" if any(s.get("status") == "diverged" for s in steps) else "completed"


def write_steps(out: Path, steps: list[dict]) -> None:
    runs.write_json(out / STEPS_JSON, steps)
    flat = [
        {
            k: (str(v) if isinstance(v, list) else v)
            for k, v in s.items()
            if k not in ("entropies", "block_names")
        }
        for s in steps
    ]
    runs.write_csv(out / STEPS_CSV, flat)
    rows = [
        {"step": s["step"], "block": name, "entropy": e, "removed": name in s.get("removed", [])}
        for s in steps
        for name, e in zip(s.get("block_names", []), s.get("entropies", []), strict=True)
    ]
    if rows:
        runs.write_csv(out / PRUNE_CSV, rows)


def _costs(st: SearchState, base: TrainConfig) -> dict:
    from ..data import dataset_info

    info = dataset_info(base.dataset)
    threads = torch.get_num_threads()
    if base.threads:
        torch.set_num_threads(base.threads)
    try:
        return {
            name: cost_report(create_model(**arch), tuple(info.in_shape), info.num_classes)
            for name, arch in (("start", st.start_arch), ("final", st.arch))
        }
    finally:
        torch.set_num_threads(threads)


def finish(
    cfg: AutotuneConfig, st: SearchState, out: Path, base: TrainConfig, console: Console
) -> AutotuneResult:
    """autotune.json, plots, report.html and the tables of a finished search."""
    from ..runreport import build_report

    costs = _costs(st, base)
    steps = st.steps
    status = search_status(steps)
    summary = {
        "status": status,
        "final_arch": st.arch,
        "final_blocks": arch_blocks(st.arch),
        "start_blocks": arch_blocks(st.start_arch),
        "test_acc": steps[-1].get("test_acc"),
        "num_prunes": len(steps) - 1,
        "total_epochs": sum(s["epochs_trained"] for s in steps),
        "wall_time_s": st.wall_time,
        "variant": cfg.variant,
        "restart": cfg.restart,
        "criterion": cfg.criterion,
        "cost": costs,
        "config": cfg.to_dict(),
    }
    runs.write_json(out / SUMMARY, summary)
    plots(out, steps)
    build_report(out)
    print_table(
        [
            {
                "": name,
                "blocks": arch_blocks(st.start_arch if name == "start" else st.arch),
                "params": c["params"],
                "ms b1": c["latency_ms_b1"],
                "ms b64": c["latency_ms_b64"],
                "train MiB": c["train_memory_mb"],
            }
            for name, c in costs.items()
        ],
        title="auto-tune: start vs final architecture",
        console=console,
    )
    cols = ["step", "num_blocks", "restart", "epochs_trained", "status", "test_acc"]
    print_table(
        [{**s, "removed": len(s.get("removed", []))} for s in steps],
        [*cols, "prune_epoch", "removed"],
        title="auto-tune steps (removed = number of blocks)",
        console=console,
    )
    lead = "[red]the search stopped: a step diverged[/]; " if status == "diverged" else ""
    console.print(
        f"{lead}final blocks {summary['final_blocks']}, test accuracy {pct(summary['test_acc'])}, "
        f"{plural(summary['total_epochs'], 'epoch')}, {duration(summary['wall_time_s'])}; "
        f"report: {escape(str(out / 'report.html'))}"
    )
    return AutotuneResult(
        out,
        st.arch,
        summary["test_acc"],
        steps,
        summary["total_epochs"],
        st.wall_time,
        summary,
        status,
    )


def plots(out: Path, steps: list[dict]) -> None:
    """prune_entropy.png (per-block entropy at each prune), depth.png, accuracy.png."""
    series = {
        f"step {s['step']} (epoch {s.get('prune_epoch')})": (
            list(range(len(s["entropies"]))),
            s["entropies"],
        )
        for s in steps
        if s.get("entropies")
    }
    if series:
        plot_curves(
            series,
            out / "prune_entropy.png",
            xlabel="block index",
            ylabel="bundle entropy",
            title="Per-block bundle entropy at each prune",
        )
    plot_curves(
        {"blocks": ([s["step"] for s in steps], [s["num_blocks"] for s in steps])},
        out / "depth.png",
        xlabel="search step",
        ylabel="number of blocks",
        title="Depth over the search",
    )
    acc = {}
    for s in steps:
        m = runs.read_csv(out / "steps" / f"step_{s['step']:03d}" / "metrics.csv")
        if any(r.get("test_acc") is not None for r in m):
            pct = [None if r.get("test_acc") is None else 100 * r["test_acc"] for r in m]
            acc[f"step {s['step']}"] = ([r["epoch"] for r in m], pct)
    if not acc:  # every step diverged before a test accuracy
        return
    plot_curves(
        acc,
        out / "accuracy.png",
        xlabel="epoch (within step)",
        ylabel="test accuracy (%)",
        title="Accuracy per search step",
    )
