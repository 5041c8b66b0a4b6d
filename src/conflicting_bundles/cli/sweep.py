"""`cbundles sweep`: many independent runs (auto-tune, training, FNN grid cells, lesion studies)
as Ray tasks, described by one YAML file (see conflicting_bundles.sweep)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from ..data import DatasetError
from ..runs import RunDirError
from .common import error, os_error_message


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_cmd(
        spec: Path = typer.Argument(..., help="The sweep YAML (kind, base, grid, resources...)."),
        ray_address: str = typer.Option(
            None,
            help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (default: a "
            "local Ray instance for this sweep).",
        ),
        num_cpus: int = typer.Option(None, help="CPUs of the local Ray instance (default: all)."),
        out: Path = typer.Option(None, "--out", "-o", help="Override the spec's out."),
        retries: int = typer.Option(None, help="Override the spec's retries per trial."),
        serial: bool = typer.Option(
            False, help="Run the trials one after the other in this process, without Ray."
        ),
        dry_run: bool = typer.Option(False, help="List the trials and which are done; run none."),
    ) -> None:
        """Run a sweep: one trial per grid point, finished trials skipped (rerun to resume).

        Example:

          cbundles sweep experiments/sweep_example.yaml --ray-address auto
        """
        from ..sweep import load_spec, run_sweep

        try:
            s = load_spec(spec)
            if out is not None:
                s.out = str(out)
            if retries is not None:
                if retries < 0:
                    raise ValueError(f"--retries must be >= 0, got {retries}.")
                s.retries = retries
            result = run_sweep(
                s, ray_address=ray_address, num_cpus=num_cpus, serial=serial, dry_run=dry_run
            )
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e)) from e
        except KeyboardInterrupt:
            make_console(stderr=True).print(
                "interrupted; finished trials are kept. Run the same command again to resume."
            )
            raise typer.Exit(130) from None
        if result.failed:
            raise typer.Exit(1)
