"""`cbundles lesion` (the lesion study of a trained run) and `cbundles grid` (the FNN width x
depth map)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from ..data import DatasetError
from ..runs import RunDirError
from .common import error, os_error_message


def _criteria(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def register(app: typer.Typer) -> None:
    @app.command("lesion")
    def lesion_cmd(
        run_dir: Path = typer.Argument(
            ...,
            help="A run directory (cbundles train), or an auto-tune folder (its final step).",
        ),
        repeats: int = typer.Option(15, help="Random lesion sets per k and group."),
        samples: int = typer.Option(64, help="Non-augmented training samples for the metric."),
        max_k: int = typer.Option(None, help="Largest lesion set (default: every block)."),
        seed: int = typer.Option(0, help="Seed of the random lesion sets."),
        criteria: str = typer.Option(
            None,
            help="Criteria measured per block, comma-separated (default: reference, raw, "
            "coarse:16, coarse:256, coarse:1024, rel:0.001, rel:0.01).",
        ),
        flag_criterion: str = typer.Option(
            "reference",
            help="Criteria that form the groups, comma-separated; 'all' = every measured one. "
            "The first is the primary one.",
        ),
        test_limit: int = typer.Option(
            None, help="Evaluate on the first N test samples (default: the whole split)."
        ),
        tolerance: float = typer.Option(
            1.0, help="'No significant loss' = less than this many accuracy points."
        ),
        checkpoint: str = typer.Option("last", help="last, best or an epoch number."),
        kind: str = typer.Option(
            None,
            help="Probe kind: hidden (fnn), block (plain), branch or block-output (resnet); "
            "default: the run's.",
        ),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder (RUN_DIR/lesion)."),
        data_dir: Path = typer.Option(None, help="Data directory."),
        threads: int = typer.Option(1, help="torch threads."),
        device: str = typer.Option("auto", help="auto (cuda if available), cpu, cuda or cuda:N."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables."),
    ) -> None:
        """Lesion study (docs/method.md §6): which blocks of a trained net can be replaced by their
        shortcut, flagged (conflicting) vs unflagged vs all vs position-matched blocks.

        Accuracies are in percent, losses in accuracy points. Example:
        cbundles lesion runs/resnet50 --repeats 15 --samples 64 --test-limit 2000
        """
        from ..autotune import final_run_dir
        from ..lesion import DEFAULT_CRITERIA, LesionConfig, lesion_run

        try:
            cfg = LesionConfig(
                repeats=repeats,
                samples=samples,
                max_k=max_k,
                seed=seed,
                criteria=_criteria(criteria) if criteria else DEFAULT_CRITERIA,
                flag_criteria=_criteria(flag_criterion),
                kind=kind,
                tolerance_pts=tolerance,
                test_limit=test_limit,
            )
            run_dir = final_run_dir(run_dir)  # an auto-tune folder: its final step
            lesion_run(
                run_dir,
                cfg,
                out,
                checkpoint=checkpoint,
                data_dir=None if data_dir is None else str(data_dir),
                device=device,
                threads=threads,
                progress=not quiet,
            )
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e)) from e
        except KeyboardInterrupt:
            make_console(stderr=True).print(
                "interrupted; evaluated lesion sets are cached. Run the same command again "
                "to continue."
            )
            raise typer.Exit(130) from None
        where = out or Path(run_dir) / "lesion"
        make_console().print(
            f"lesion study written to {where} (report.html)", highlight=False, markup=False
        )

    @app.command("grid")
    def grid_cmd(
        widths: str = typer.Option("5,10,25,50,100", help="Hidden-layer widths, comma-separated."),
        depths: str = typer.Option(
            "1,2,5,10,20,50,100", help="Numbers of hidden layers, comma-separated."
        ),
        dataset: str = typer.Option("mnist", "--dataset", "-d", help="mnist, fashion-mnist..."),
        epochs: int = typer.Option(5, help="Epochs per net."),
        workers: int = typer.Option(
            None, help="Parallel processes, 1 torch thread each (default: all cores)."
        ),
        samples: int = typer.Option(64, help="Training samples for the bundle metric."),
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
        keep_checkpoints: bool = typer.Option(
            True, "--keep-checkpoints/--drop-checkpoints", help="Keep each cell's checkpoints."
        ),
        data_dir: Path = typer.Option(None, help="Data directory."),
        out: Path = typer.Option(Path("runs/grid"), "--out", "-o", help="Output folder."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables."),
    ) -> None:
        """Width x depth map of FNNs (docs/method.md §7): train every net, record test accuracy
        and the conflict boundary; resumable (finished cells are not retrained). Exits 1 when a
        cell failed.

        Example: cbundles grid --widths 5,10,25,50,100 --depths 1,2,5,10,20,50,100
        --dataset mnist --epochs 5 --out runs/grid
        """
        from ..grid import GridConfig, parse_ints, run_grid

        try:
            cfg = GridConfig(
                widths=parse_ints(widths, "--widths"),
                depths=parse_ints(depths, "--depths"),
                dataset=dataset,
                epochs=epochs,
                out=str(out),
                workers=workers,
                seed=seed,
                samples=samples,
                train_limit=train_limit,
                test_limit=test_limit,
                augment=augment,
                lr=lr,
                batch_size=batch_size,
                criterion=criterion,
                data_dir=None if data_dir is None else str(data_dir),
                keep_checkpoints=keep_checkpoints,
            )
            res = run_grid(cfg, progress=not quiet)
            failed = res.summary.get("errors", {})
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e)) from e
        except KeyboardInterrupt:
            make_console(stderr=True).print(
                f"interrupted; finished cells are kept. Run the same command again to continue "
                f"(--out {out}).",
                markup=False,
            )
            raise typer.Exit(130) from None
        make_console().print(
            f"grid written to {res.out} (grid.csv, grid.png, report.html)", markup=False
        )
        if failed:
            raise error(
                f"{len(failed)} of {len(res.rows)} cells failed ({', '.join(failed)}; see "
                "above); fix the cause and run the same command again to train them."
            )
