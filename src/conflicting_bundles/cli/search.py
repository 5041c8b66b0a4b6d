"""`cbundles search`: several depth-search methods from one start, one comparison table."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import typer
from rich.console import Console

from ..data import DatasetError
from ..runs import RunDirError

DEFAULT_METHODS = (
    "autotune,autotune-warm,autotune-calibrated,oracle-depth,naswot,conflict-at-init,fixed,random"
)


def _fail(msg: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {msg}", highlight=False)
    return typer.Exit(1)


def _parse_blocks(text: str) -> tuple[int, ...]:
    try:
        blocks = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise _fail(
            f"--start-blocks must be 4 integers a,b,c,d (e.g. 3,3,5,3), got {text!r}."
        ) from None
    return blocks


def _parse_width_mult(text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise _fail(
            f"--width-mult must be a number or fraction such as 1/8, got {text!r}."
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search_cmd(
        dataset: str = typer.Option("mnist", "--dataset", "-d", help="mnist, fashion-mnist..."),
        model: str = typer.Option("fnn", "--model", "-m", help="fnn, plain or resnet."),
        width: int = typer.Option(25, help="fnn: units per hidden layer."),
        depth: int = typer.Option(100, help="fnn: start number of hidden layers."),
        start_blocks: str = typer.Option("3,3,5,3", help="plain/resnet: start blocks a,b,c,d."),
        width_mult: str = typer.Option("1/8", help="plain/resnet: channel multiplier."),
        methods: str = typer.Option(
            DEFAULT_METHODS, help="Comma-separated methods (name or name@criterion)."
        ),
        epochs: int = typer.Option(5, help="Epochs of every training (the same for all)."),
        check_epochs: int = typer.Option(2, help="auto-tune: check while epoch < this."),
        train_limit: int = typer.Option(None, help="First N training samples (split included)."),
        val_split: int = typer.Option(
            None, help="Training samples held out for validation (default 5000 on MNIST/Fashion)."
        ),
        val_seed: int = typer.Option(0, help="Seed of the validation split."),
        test_limit: int = typer.Option(None, help="First N test samples (final evaluation)."),
        samples: int = typer.Option(64, help="Samples of the bundle metric."),
        seed: int = typer.Option(0),
        data_dir: Path = typer.Option(None, help="Data directory."),
        threads: int = typer.Option(1, help="torch threads."),
        device: str = typer.Option("auto", help="auto, cpu, cuda."),
        out: Path = typer.Option(Path("runs/search"), "--out", "-o"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-epoch output."),
    ) -> None:
        """Compare depth searches from one start (docs/search.md): auto-tune (reference,
        warm, calibrated), oracle-depth, naswot, conflict-at-init, fixed and random.

        Every choice uses the validation split; the test set is evaluated once per final
        network. Finished methods in --out are reused (same start), so a rerun resumes.

        Example: cbundles search --dataset mnist --model fnn --width 25 --depth 100
        --methods autotune,autotune-calibrated,fixed --epochs 5 --out runs/search
        """
        from ..search import (
            VAL_SPLIT_DEFAULTS,
            Budget,
            SearchStart,
            print_comparison,
            run_methods,
            write_outputs,
        )

        if val_split is None:
            if dataset not in VAL_SPLIT_DEFAULTS:
                raise _fail(
                    f"--val-split is required for dataset {dataset!r}: the number of training "
                    "samples held out for validation (e.g. --val-split 500)."
                )
            val_split = VAL_SPLIT_DEFAULTS[dataset]
        specs = [m.strip() for m in methods.split(",") if m.strip()]
        if not specs:
            raise _fail("--methods is empty; name at least one method.")
        console = Console()
        try:
            budget = Budget(
                epochs=epochs,
                check_epochs=check_epochs,
                train_limit=train_limit,
                val_split=val_split,
                val_seed=val_seed,
                test_limit=test_limit,
                samples=samples,
            )
            fnn = model == "fnn"
            start = SearchStart(
                family=model,
                width=width if fnn else None,
                depth=depth if fnn else None,
                blocks=None if fnn else _parse_blocks(start_blocks),
                width_mult=1.0 if fnn else _parse_width_mult(width_mult),
                dataset=dataset,
                budget=budget,
                seed=seed,
                data_dir=None if data_dir is None else str(data_dir),
                threads=threads,
                device=device,
                progress=not quiet,
            )
            results = run_methods(start, specs, out, log=console.print)
            report = write_outputs(out, start, results)
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise _fail(str(e)) from e
        except KeyboardInterrupt:
            Console(stderr=True).print(
                f"interrupted; finished methods and epochs are saved in {out}: rerun the same "
                "command to continue."
            )
            raise typer.Exit(130) from None
        print_comparison(start, results, console=console)
        console.print(f"results: {out / 'search.json'}, {out / 'search.csv'}; report: {report}")
