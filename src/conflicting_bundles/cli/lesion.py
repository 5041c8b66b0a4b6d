"""`cbundles lesion` (the lesion study of a trained run) and `cbundles grid` (the FNN width x
depth map)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from ..console import make_console
from ..data import DatasetError
from ..grid.cells import GridConfig
from ..runs import RunDirError
from ..train.config import check_names
from .common import (
    CHECKPOINTS,
    CRITERIA,
    DATA_DIR,
    DEVICES,
    PRINT_CONFIG_HELP,
    PROBE_KINDS,
    config_help,
    config_values,
    default,
    error,
    given,
    os_error_message,
    print_config,
)


def G(name: str) -> str:
    return default(GridConfig, name)


def L(name: str) -> str:
    from ..lesion import LesionConfig

    return default(LesionConfig, name)


def _criteria(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def register(app: typer.Typer) -> None:
    @app.command("lesion")
    def lesion_cmd(
        run_dir: Path = typer.Argument(
            ...,
            help="A run directory (cbundles train), or an auto-tune folder (its final step).",
        ),
        config: Path = typer.Option(
            None, "--config", "-c", help=config_help("lesion", "its lesion_summary.json")
        ),
        print_config_: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
        repeats: int = typer.Option(
            None, help="Random lesion sets per k and group" + L("repeats") + "."
        ),
        samples: int = typer.Option(
            None, help="Non-augmented training samples for the metric" + L("samples") + "."
        ),
        max_k: int = typer.Option(None, help="Largest lesion set (default: every block)."),
        seed: int = typer.Option(None, help="Seed of the random lesion sets" + L("seed") + "."),
        criteria: str = typer.Option(
            None, help="Criteria measured per block, comma-separated" + L("criteria") + "."
        ),
        flag_criterion: str = typer.Option(
            None,
            help="Criteria that form the groups, comma-separated; 'all' = every measured one. "
            "The first is the primary one" + L("flag_criteria") + ".",
        ),
        test_limit: int = typer.Option(
            None,
            help="Evaluate on the first N test samples; 0 = the whole split (default: the "
            "run's own --test-limit, else the whole split). The first line names the one used.",
        ),
        tolerance: float = typer.Option(
            None,
            help="'No significant loss' = an accuracy loss below this fraction (0.01 = 1 point)"
            + L("tolerance")
            + ".",
        ),
        lr: float = typer.Option(
            None, help="The training lr the metric assumes (its eta; default: the run's)."
        ),
        batch_size: int = typer.Option(
            None, help="The training batch size the metric assumes (its beta; default: the run's)."
        ),
        checkpoint: str = typer.Option("last", help=CHECKPOINTS + "."),
        kind: str = typer.Option(
            None,
            help=f"Probe kind: {PROBE_KINDS}; default: the run's.",
        ),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder (RUN_DIR/lesion)."),
        data_dir: Path = typer.Option(None, help="Data directory (default: the run's)."),
        threads: int = typer.Option(1, help="torch threads."),
        device: str = typer.Option("auto", help=DEVICES + "."),
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="No headline, progress lines, bars or tables."
        ),
    ) -> None:
        """Lesion study (docs/method.md §6): remove blocks of a trained net, see what it costs.

        Which blocks can be replaced by their shortcut: flagged (conflicting) vs unflagged vs
        all vs position-matched blocks.

        Accuracies and losses are fractions in the files (0.01 = 1 point), shown in % and points.

        Settings: the LesionConfig defaults, then --config FILE, then the options given here.

        Progress: one line per evaluated lesion set when piped ("lesion 3/12 sets  elapsed ..
        eta .."), at least one every ~10 s of work; on a terminal a bar and a line every ~10 s.

        Example:

          cbundles lesion runs/resnet50 --repeats 15 --samples 64 --test-limit 2000
        """
        from ..autotune import final_run_dir
        from ..lesion import LesionConfig, lesion_run

        file = config_values(config, LesionConfig)
        try:
            cli = given(
                repeats=repeats,
                samples=samples,
                max_k=max_k,
                seed=seed,
                criteria=None if criteria is None else _criteria(criteria),
                flag_criteria=None if flag_criterion is None else _criteria(flag_criterion),
                kind=kind,
                lr=lr,
                batch_size=batch_size,
                tolerance=tolerance,
                test_limit=test_limit,
            )
            cfg = LesionConfig(**{**file, **cli})  # it makes tuples of a file's lists
            if print_config_:
                print_config(asdict(cfg))
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
        config: Path = typer.Option(
            None, "--config", "-c", help=config_help("grid", "its grid_summary.json")
        ),
        print_config_: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
        widths: str = typer.Option(
            None, help="Hidden-layer widths, comma-separated" + G("widths") + "."
        ),
        depths: str = typer.Option(
            None, help="Numbers of hidden layers, comma-separated" + G("depths") + "."
        ),
        dataset: str = typer.Option(
            None, "--dataset", "-d", help="A name of `cbundles datasets`" + G("dataset") + "."
        ),
        epochs: int = typer.Option(None, help="Epochs per net" + G("epochs") + "."),
        workers: int = typer.Option(
            None, help="Parallel processes, 1 torch thread each (default: all cores)."
        ),
        samples: int = typer.Option(
            None, help="Training samples for the bundle metric" + G("samples") + "."
        ),
        criterion: str = typer.Option(
            None,
            help=CRITERIA + G("criterion") + ".",
        ),
        seed: int = typer.Option(
            None, help="Seed of weights, data order and augmentation" + G("seed") + "."
        ),
        lr: float = typer.Option(
            None, help="Learning rate (also the metric's eta)" + G("lr") + "."
        ),
        batch_size: int = typer.Option(
            None, help="Batch size (also the metric's beta)" + G("batch_size") + "."
        ),
        train_limit: int = typer.Option(None, help="Use only the first N training samples."),
        test_limit: int = typer.Option(None, help="Use only the first N test samples."),
        augment: bool = typer.Option(
            None,
            "--augment/--no-augment",
            help="Training augmentation (docs/method.md §4)" + G("augment") + ".",
        ),
        keep_checkpoints: bool = typer.Option(
            None,
            "--keep-checkpoints/--drop-checkpoints",
            help="Keep each cell's checkpoints" + G("keep_checkpoints") + ".",
        ),
        data_dir: Path = typer.Option(None, help=DATA_DIR + "."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder" + G("out") + "."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables."),
    ) -> None:
        """Width x depth map of FNNs (docs/method.md §7): accuracy and the conflict boundary.

        Trains every net and records its test accuracy and whether it conflicts; resumable
        (finished cells are not retrained). Exits 1 when a cell failed. Settings: the
        GridConfig defaults, then --config FILE, then these options.

        Example:

          cbundles grid --widths 5,10,25,50,100 --depths 1,2,5,10,20,50,100 \\
            --dataset mnist --epochs 5 --out runs/grid
        """
        from ..grid import parse_ints, run_grid

        file = config_values(config, GridConfig)
        cfg = None
        try:
            cli = given(
                widths=None if widths is None else parse_ints(widths, "--widths"),
                depths=None if depths is None else parse_ints(depths, "--depths"),
                dataset=dataset,
                epochs=epochs,
                out=None if out is None else str(out),
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
            cfg = GridConfig(**{**file, **cli})
            check_names(cfg.dataset)
            if print_config_:
                print_config(asdict(cfg))
            res = run_grid(cfg, progress=not quiet)
            failed = res.summary.get("errors", {})
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e)) from e
        except KeyboardInterrupt:
            make_console(stderr=True).print(
                f"interrupted; finished cells are kept. Run the same command again to continue "
                f"(--out {cfg.out if cfg else out}).",
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
