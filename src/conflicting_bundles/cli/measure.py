"""`cbundles measure RUN_DIR`: bundle metrics of every layer of a trained run's model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..data import DatasetError
from ..runs import MEASURE_CSV, RunDirError
from ..train import measure_run
from .train import _error


def register(app: typer.Typer) -> None:
    @app.command("measure")
    def measure_cmd(
        run_dir: Path = typer.Argument(..., help="A run directory written by `cbundles train`."),
        all_layers: bool = typer.Option(
            True, "--all-layers/--last-layer", help="Every probe point, or only the last."
        ),
        samples: int = typer.Option(512, help="First N non-augmented training samples."),
        criterion: str = typer.Option(None, help="Default: the run's (reference)."),
        checkpoint: str = typer.Option("last", help="last, best, or an epoch number."),
        kind: str = typer.Option(None, help="Probe kind (default: the run's)."),
        margin: bool = typer.Option(True, "--margin/--no-margin", help="Compute the margin."),
        data_dir: Path = typer.Option(None, help="Data directory (default: the run's)."),
        device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
        threads: int = typer.Option(None, help="torch threads."),
    ) -> None:
        """Bundle metrics and conflict margin of each layer of a trained run.

        Uses the run's lr, batch size and the checkpoint's w_max; writes measure.csv in RUN_DIR.
        """
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        if samples < 1:
            raise _error("--samples must be >= 1.")
        try:
            rows = measure_run(
                run_dir,
                checkpoint=checkpoint,
                all_layers=all_layers,
                n_samples=samples,
                criterion=criterion,
                kind=kind,
                margin=margin,
                data_dir=None if data_dir is None else str(data_dir),
                device=device,
            )
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise _error(str(e)) from e
        r0 = rows[0]
        table = Table(
            title=f"{run_dir} checkpoint {checkpoint} (epoch {r0['epoch']}): "
            f"{r0['num_samples']} samples, criterion {r0['criterion']}, w_max {r0['w_max']:.4g}"
        )
        for col in ("layer", "num_bundles", "entropy", "conflicting", "margin"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        for r in rows:
            m = r["margin"]
            table.add_row(
                r["layer"],
                str(r["num_bundles"]),
                f"{r['entropy']:.4f}",
                "[red]yes[/red]" if r["conflicting"] else "no",
                "-" if m is None else f"{m:.3g}",
            )
        console = Console()
        console.print(table)
        n_conf = sum(r["conflicting"] for r in rows)
        console.print(
            f"{n_conf} of {len(rows)} layers conflicting; written to {Path(run_dir) / MEASURE_CSV}",
            highlight=False,
        )
