"""`cbundles measure RUN_DIR`: bundle metrics of every layer of a trained run's model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..autotune import final_run_dir
from ..console import escape, make_console
from ..data import DatasetError
from ..runs import MEASURE_CSV, RunDirError, write_csv
from ..train import measure_run
from .common import CHECKPOINTS, CRITERIA, DEVICES, PROBE_KINDS, error, os_error_message


def register(app: typer.Typer) -> None:
    @app.command("measure")
    def measure_cmd(
        run_dir: Path = typer.Argument(
            ..., help="A run directory of `cbundles train`, or an auto-tune folder (final step)."
        ),
        all_layers: bool = typer.Option(
            True, "--all-layers/--last-layer", help="Every probe point, or only the last."
        ),
        samples: int = typer.Option(512, help="First N non-augmented training samples."),
        criterion: str = typer.Option(None, help=f"{CRITERIA}; default: the run's."),
        checkpoint: str = typer.Option("last", help=CHECKPOINTS + "."),
        kind: str = typer.Option(
            None,
            help=f"Probe kind: {PROBE_KINDS}; default: the run's.",
        ),
        margin: bool = typer.Option(True, "--margin/--no-margin", help="Compute the margin."),
        data_dir: Path = typer.Option(None, help="Data directory (default: the run's)."),
        device: str = typer.Option("auto", help=DEVICES + "."),
        threads: int = typer.Option(None, help="torch threads."),
        lr: float = typer.Option(
            None, help="Measure as if trained at this learning rate (default: the run's)."
        ),
        batch_size: int = typer.Option(
            None, help="Measure as if trained at this batch size (default: the run's)."
        ),
        factory: str = typer.Option(
            None,
            help="For a run trained with a user model factory: its import path "
            "package.module:function (never taken from the run directory).",
        ),
        write: bool = typer.Option(
            True,
            "--write/--no-write",
            help="Write measure.csv into RUN_DIR (default yes).",
            show_default=False,
        ),
    ) -> None:
        """Bundle metrics and conflict margin of each layer of a trained run.

        Uses the run's lr and batch size (or --lr / --batch-size) and the checkpoint's w_max;
        writes measure.csv in RUN_DIR.
        The table is printed first, so nothing is lost when RUN_DIR is not writable.
        """
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        if samples < 1:
            raise error("--samples must be >= 1.")
        try:
            run_dir = final_run_dir(run_dir)
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
                write=False,
                factory=factory,
                lr=lr,
                batch_size=batch_size,
            )
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        r0 = rows[0]
        table = Table(
            title=f"{escape(str(run_dir))} checkpoint {escape(checkpoint)} (epoch {r0['epoch']}):"
            f" {r0['num_samples']} samples, criterion {r0['criterion']}, w_max {r0['w_max']:.4g},"
            f" lr {r0['lr']:g} ({r0['lr_source']}), batch {r0['batch_size']}"
            f" ({r0['batch_size_source']})"
        )
        for col in ("layer", "num_bundles", "entropy", "conflicting", "margin"):
            justify = "left" if col == "layer" else "right"
            table.add_column(col, justify=justify, no_wrap=col == "layer")
        for r in rows:
            m = r["margin"]
            table.add_row(
                escape(r["layer"]),
                str(r["num_bundles"]),
                f"{r['entropy']:.4f}",
                "[red]yes[/red]" if r["conflicting"] else "no",
                "-" if m is None else f"{m:.3g}",
            )
        console = make_console()
        console.print(table)
        n_conf = sum(r["conflicting"] for r in rows)
        line = f"{n_conf} of {len(rows)} layers conflicting"
        if not write:
            console.print(line, highlight=False)
            return
        target = Path(run_dir) / MEASURE_CSV
        try:
            write_csv(target, rows)
        except OSError as e:
            console.print(line, highlight=False)
            raise error(
                os_error_message(e, str(target)) + " The table above is the full result; rerun "
                "with --no-write to only print it."
            ) from e
        console.print(f"{line}; written to {escape(str(target))}", highlight=False)
