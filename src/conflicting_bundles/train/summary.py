"""Metric rows, summary.json, and what a run prints (one plain ``epoch`` line per epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from .. import distributed
from ..console import escape, make_console, progress_enabled
from ..metric import Criterion
from .config import LAST_EPOCHS, TrainConfig

ROW_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "num_bundles",
    "bundle_entropy",
    "bundle_layer",
    "w_max",
    "lr",
    "steps",
    "train_time",
    "measure_time",
    "epoch_time",
)


def new_row(epoch: int) -> dict:
    """An empty metrics row; a fixed column order for metrics.csv (callbacks may add more
    columns after these)."""
    return {**dict.fromkeys(ROW_COLUMNS), "epoch": epoch}


def summarize(
    metrics: list[dict], model: nn.Module, config: TrainConfig, status: str, message: str
) -> dict:
    """summary.json: reported test (and validation) accuracy = mean over the last (up to) 5
    evaluated epochs; bundle metrics at init, at the end and averaged over every measured row
    (init included). Without test_eval every test field is None."""
    epochs = [r for r in metrics if r["epoch"] >= 1]
    tested = [r for r in epochs if r.get("test_acc") is not None][-LAST_EPOCHS:]
    accs = [r["test_acc"] for r in tested]
    validated = [r["val_acc"] for r in epochs if r.get("val_acc") is not None]
    measured = [r for r in metrics if r.get("num_bundles") is not None]
    init = metrics[0] if metrics and metrics[0]["epoch"] == 0 else {}
    evaluated = [r for r in epochs if r.get("test_acc") is not None]
    best = max(evaluated, key=lambda r: r["test_acc"], default=None)

    def mean(xs):
        return float(np.mean(xs)) if xs else None

    return {
        "status": status,
        "message": message,
        "epochs_completed": epochs[-1]["epoch"] if epochs else 0,
        "epochs": config.epochs,
        "model": config.model,
        "dataset": config.dataset,
        "optimizer": config.optimizer,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "test_acc": mean(accs),
        "test_acc_std": float(np.std(accs)) if accs else None,
        "test_acc_epochs": [r["epoch"] for r in tested] if config.test_eval else None,
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "val_acc": mean(validated[-LAST_EPOCHS:]),
        "val_acc_last": validated[-1] if validated else None,
        "val_split": config.val_split,
        "val_seed": config.val_seed,
        "final_train_acc": epochs[-1]["train_acc"] if epochs else None,
        "criterion": Criterion.parse(config.criterion).name,
        "measure_samples": config.measure_samples,
        "bundle_layer": measured[-1].get("bundle_layer") if measured else None,
        "num_bundles_init": init.get("num_bundles"),
        "bundle_entropy_init": init.get("bundle_entropy"),
        "num_bundles_final": measured[-1]["num_bundles"] if measured else None,
        "bundle_entropy_final": measured[-1]["bundle_entropy"] if measured else None,
        "num_bundles_mean": mean([r["num_bundles"] for r in measured]),
        "bundle_entropy_mean": mean([r["bundle_entropy"] for r in measured]),
        "measured_epochs": [r["epoch"] for r in measured],
        "train_time": sum(r.get("train_time") or 0.0 for r in epochs),
        "wall_time": sum(r.get("epoch_time") or 0.0 for r in metrics),
    }


def log(config: TrainConfig, text: str) -> None:
    """One plain line (rank 0, unless config.progress is False), above any progress bar."""
    if not (config.progress and distributed.is_main()):
        return
    if progress_enabled():
        from tqdm import tqdm

        tqdm.write(text)
    else:
        print(text, flush=True)


def epoch_line(row: dict, epochs: int) -> str:
    """'epoch   3/10  loss ...  acc 91.20%  val ...  test ...  bundles ...  w_max ...  1.2s'
    (accuracies are fractions in the row, shown in %)."""
    parts = [f"epoch {row['epoch']:>3}/{epochs}"]
    if row.get("train_loss") is not None:
        parts.append(f"loss {row['train_loss']:.4f}  acc {100 * row['train_acc']:.2f}%")
    if row.get("val_acc") is not None:
        parts.append(f"val {100 * row['val_acc']:.2f}%")
    if row.get("test_acc") is not None:
        parts.append(f"test {100 * row['test_acc']:.2f}%")
    if row.get("num_bundles") is not None:
        parts.append(f"bundles {row['num_bundles']}  H {row['bundle_entropy']:.4f}")
    parts.append(f"w_max {row['w_max']:.4g}")
    if row.get("epoch_time") is not None:
        parts.append(f"{row['epoch_time']:.1f}s")
    return "  ".join(parts)


SUMMARY_KEYS = (
    "epochs_completed",
    "optimizer",
    "params",
    "val_acc",
    "test_acc",
    "test_acc_std",
    "best_test_acc",
    "final_train_acc",
    "bundle_layer",
    "num_bundles_init",
    "num_bundles_final",
    "num_bundles_mean",
    "bundle_entropy_init",
    "bundle_entropy_final",
    "bundle_entropy_mean",
    "criterion",
    "train_time",
)


def summary_value(key: str, v) -> str:
    """A summary.json value as the final table shows it: accuracies in %, their spread in
    points (both with 2 decimals), times in seconds/minutes, None as "not measured"."""
    from ..report import duration, fmt_column, table_decimals

    if v is None:
        return "not measured"
    if key.endswith("_time"):
        return duration(v)
    return fmt_column(key, v, table_decimals(SUMMARY_KEYS))


def print_summary(summary: dict, run_dir: Path) -> None:
    """The final table of a run (summary.json's SUMMARY_KEYS; the file keeps fractions)."""
    from rich.table import Table

    table = Table(title=f"Run {escape(str(run_dir))} ({summary['status']})")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    for k in SUMMARY_KEYS:
        table.add_row(k, escape(summary_value(k, summary.get(k))))
    make_console().print(table)
