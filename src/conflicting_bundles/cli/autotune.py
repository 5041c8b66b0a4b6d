"""`cbundles autotune` (the search) and `cbundles report` (regenerate a report.html)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from ..data import DatasetError
from ..runs import RunDirError
from .common import error, model_kwargs, os_error_message


def register(app: typer.Typer) -> None:
    @app.command("autotune")
    def autotune_cmd(
        dataset: str = typer.Option(
            "mnist", "--dataset", "-d", help="mnist, cifar10, synthetic..."
        ),
        model: str = typer.Option("plain", "--model", "-m", help="plain, resnet or fnn."),
        start_blocks: str = typer.Option(
            None, help="plain/resnet: start blocks a,b,c,d (default 3,12,41,3 = 120 layers)."
        ),
        layers: int = typer.Option(None, help="plain/resnet: start depth from the table."),
        width_mult: str = typer.Option(None, help="plain/resnet: channel multiplier, e.g. 1/8."),
        width: int = typer.Option(None, help="fnn: units per hidden layer."),
        depth: int = typer.Option(None, help="fnn: start number of hidden layers."),
        epochs: int = typer.Option(120, help="Epoch budget of the final run."),
        check_epochs: int = typer.Option(10, help="Check for conflicts while epoch < this."),
        samples: int = typer.Option(64, help="Training samples for the bundle metric."),
        variant: str = typer.Option("all", help="all, first-and-rest or first-stage."),
        restart: str = typer.Option("fresh", help="fresh (the paper) or warm (keep weights)."),
        criterion: str = typer.Option(
            "reference", help="reference (default), raw, coarse:K, tol:G or rel:R."
        ),
        seed: int = typer.Option(0, help="Seed of weights, data order and augmentation."),
        lr: float = typer.Option(1e-3, help="Learning rate (also the metric's eta)."),
        batch_size: int = typer.Option(64, help="Batch size (also the metric's beta)."),
        train_limit: int = typer.Option(None, help="Use only the first N training samples."),
        test_limit: int = typer.Option(None, help="Use only the first N test samples."),
        augment: bool = typer.Option(
            True, "--augment/--no-augment", help="Training augmentation (docs/method.md §4)."
        ),
        data_dir: Path = typer.Option(None, help="Data directory."),
        threads: int = typer.Option(1, help="torch threads."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
        out: Path = typer.Option(Path("runs/autotune"), "--out", "-o", help="Output folder."),
        resume: bool = typer.Option(False, help="Continue the search in --out."),
        force: bool = typer.Option(False, help="Start over, replacing the search in --out."),
        amp: str = typer.Option(None, help="bf16: mixed-precision training (default float32)."),
        channels_last: bool = typer.Option(False, "--channels-last", help="NHWC (GPUs)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-epoch output."),
    ) -> None:
        """Auto-tune: remove conflicting layers early, retrain, until no conflict
        (docs/method.md §5). Exits 1 when a step's training diverged.

        Example: cbundles autotune --dataset cifar10 --model plain --start-blocks 3,12,41,3
        --epochs 120 --check-epochs 10 --samples 64 --variant all --seed 0 --out runs/at0
        """
        from ..autotune import AutotuneConfig, SearchDidNotConverge, autotune

        if model in ("plain", "resnet") and start_blocks is None and layers is None:
            start_blocks = "3,12,41,3"
        kw = model_kwargs(model, width, depth, start_blocks, layers, width_mult, [])
        train_cfg = {
            "model": model,
            "model_kwargs": kw,
            "dataset": dataset,
            "data_dir": None if data_dir is None else str(data_dir),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "train_limit": train_limit,
            "test_limit": test_limit,
            "augment": augment,
            "measure_samples": samples,
            "threads": threads,
            "device": device,
            "progress": not quiet,
            "tensorboard": True,
            "amp": amp,
            "channels_last": channels_last,
        }
        try:
            cfg = AutotuneConfig(
                out=str(out),
                variant=variant,
                restart=restart,
                check_epochs=check_epochs,
                samples=samples,
                criterion=criterion,
                train=train_cfg,
            )
            res = autotune(cfg, resume=resume, force=force)
        except (ValueError, TypeError, RunDirError, DatasetError, SearchDidNotConverge) as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e)) from e
        except KeyboardInterrupt:
            make_console(stderr=True).print(
                f"interrupted; finished steps and epochs are saved. Continue with the same "
                f"command and --resume (--out {out}).",
                markup=False,
            )
            raise typer.Exit(130) from None
        if res.status != "completed":
            diverged = [s["step"] for s in res.steps if s.get("status") == "diverged"]
            raise error(
                f"step {diverged[0]} of the search diverged (its training loss became NaN/Inf), "
                "so its architecture is no result; lower --lr and start a new search (another "
                "--out, or --force)."
            )

    @app.command("report")
    def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
        """Regenerate report.html of a run directory from its files."""
        from ..report import build_report

        try:
            path = build_report(run_dir)
        except FileNotFoundError as e:
            raise error(str(e)) from e
        make_console().print(f"wrote {path}", markup=False)
