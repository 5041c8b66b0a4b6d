"""`cbundles train`: train one network with the reference recipe into a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import escape, make_console, set_progress
from ..data import DatasetError
from ..runs import RunDirError, load_config
from ..train import OPTIMIZERS, TrainConfig, train
from . import common
from .common import (
    CRITERIA,
    DATA_DIR,
    DEVICES,
    FNN_MODELS,
    PRINT_CONFIG_HELP,
    PROBE_KINDS,
    config_help,
    config_values,
    default,
    error,
    file_model_kwargs,
    model_kwargs,
    os_error_message,
    print_config,
    sigterm_as_interrupt,
)


def D(name: str) -> str:
    """' (default X)' from TrainConfig: the help texts never restate a default by hand."""
    return default(TrainConfig, name)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _write_report(run_dir: Path, console) -> None:
    """report.html + accuracy/bundle plots; a failure here never loses the finished run."""
    from ..runreport import build_report

    try:
        path = build_report(run_dir)
    except (OSError, ValueError) as e:
        make_console(stderr=True).print(
            f"warning: no report.html ({escape(str(e))}); the run itself is complete. Retry "
            f"with `cbundles report {escape(str(run_dir))}`.",
            highlight=False,
        )
        return
    console.print(f"report: {escape(str(path))}", highlight=False)


def _default_out(model: str, kw: dict, dataset: str, seed: int) -> str:
    if model in FNN_MODELS:
        shape = f"{kw['depth']}x{kw['width']}"
    elif "blocks" in kw:
        shape = "-".join(map(str, kw["blocks"]))
    else:
        shape = str(kw.get("layers", ""))
    return f"runs/{model}{shape}-{dataset}-seed{seed}"


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Path = typer.Option(
            None, "--config", "-c", help=config_help("train", "a run's config.json")
        ),
        print_config_: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="fnn, plain, resnet, or your own factory as package.module:function "
            "(its arguments via --arg KEY=VALUE)" + D("model") + ".",
        ),
        width: int = typer.Option(None, help="fnn: units per hidden layer."),
        depth: int = typer.Option(None, help="fnn: number of hidden layers."),
        layers: int = typer.Option(None, help="plain/resnet: depth 4,10,20,30,50,76,100,120."),
        blocks: str = typer.Option(None, help="plain/resnet: blocks per stage, e.g. 3,12,41,3."),
        width_mult: str = typer.Option(None, help="plain/resnet: channel multiplier, e.g. 1/16."),
        arg: list[str] = typer.Option([], "--arg", help="Other model argument KEY=VALUE."),
        dataset: str = typer.Option(
            None,
            "--dataset",
            "-d",
            help="A name of `cbundles datasets` or folder:PATH" + D("dataset") + ".",
        ),
        epochs: int = typer.Option(None, help="Epochs" + D("epochs") + "."),
        lr: float = typer.Option(
            None, help="Learning rate (also the metric's eta)" + D("lr") + "."
        ),
        batch_size: int = typer.Option(
            None, help="Batch size (also the metric's beta)" + D("batch_size") + "."
        ),
        seed: int = typer.Option(
            None, help="Seed of init, data order, augmentation" + D("seed") + "."
        ),
        train_limit: int = typer.Option(None, help="Use only the first N training samples."),
        test_limit: int = typer.Option(None, help="Use only the first N test samples."),
        augment: bool = typer.Option(
            None, "--augment/--no-augment", help="Training augmentation" + D("augment") + "."
        ),
        eval_every: int = typer.Option(
            None, help="Test accuracy every k epochs (+ the last 5)" + D("eval_every") + "."
        ),
        samples: int = typer.Option(
            None,
            help="Samples for the bundle metric; 0 = never measure" + D("measure_samples") + ".",
        ),
        all_layers: bool = typer.Option(
            None, "--all-layers/--last-layer", help="Measure every probe point (layers.csv)."
        ),
        measure_every: int = typer.Option(
            None, help="Bundle metric every k epochs" + D("measure_every") + "."
        ),
        kind: str = typer.Option(
            None,
            help=f"Probe kind: {PROBE_KINDS}; default: the model's.",
        ),
        criterion: str = typer.Option(
            None,
            help=CRITERIA + D("criterion") + ".",
        ),
        data_dir: Path = typer.Option(None, help=DATA_DIR + "."),
        out: Path = typer.Option(
            None, "--out", "-o", help="Run directory (default runs/MODEL SHAPE-DATASET-seedN)."
        ),
        resume: bool = typer.Option(False, help="Continue the run in --out."),
        force: bool = typer.Option(False, help="Overwrite the run in --out."),
        threads: int = typer.Option(None, help="torch threads" + D("threads") + "."),
        device: str = typer.Option(None, help=DEVICES + D("device") + "."),
        keep_checkpoints: bool = typer.Option(
            None, "--keep-checkpoints/--last-checkpoint-only", help="Keep one per epoch."
        ),
        tensorboard: bool = typer.Option(
            None, "--tensorboard/--no-tensorboard", help="TensorBoard logs" + D("tensorboard") + "."
        ),
        amp: str = typer.Option(None, help="bf16: mixed-precision training (default float32)."),
        channels_last: bool = typer.Option(
            None, "--channels-last/--no-channels-last", help="NHWC memory format (GPUs)."
        ),
        optimizer: str = typer.Option(
            None,
            help=f"{', '.join(OPTIMIZERS)}: radam-lookahead is the paper's recipe (default), "
            "adam is AdamW, sgd has momentum 0.9 (choose --lr, e.g. 0.05).",
        ),
        val_split: int = typer.Option(
            None,
            help="Hold out N training samples as validation (seeded by --val-seed)"
            + D("val_split")
            + ".",
        ),
        val_seed: int = typer.Option(
            None, help="Seed of the validation subset (independent of --seed)" + D("val_seed") + "."
        ),
        test_eval: bool = typer.Option(
            None, "--test-eval/--no-test-eval", help="Evaluate the test set" + D("test_eval") + "."
        ),
        progress: bool = typer.Option(
            None,
            "--progress/--no-progress",
            help="Progress bars (default: only on a terminal; TQDM_DISABLE=1 turns them off).",
        ),
        report: bool = typer.Option(
            True,
            "--report/--no-report",
            help="Write report.html and plots (default yes).",
            show_default=False,
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    ) -> None:
        """Train a network (RAdam + Lookahead, docs/method.md §4); bundle metrics per epoch.

        Settings: the TrainConfig defaults, then --config FILE, then the options given here.

        Example:

          cbundles train -m plain --layers 20 -d mnist --epochs 5 --out runs/x
        """
        fields = {
            "dataset": dataset,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "train_limit": train_limit,
            "test_limit": test_limit,
            "augment": augment,
            "eval_every": eval_every,
            "measure_samples": samples,
            "measure_all_layers": all_layers,
            "measure_every": measure_every,
            "measure_kind": kind,
            "criterion": criterion,
            "data_dir": None if data_dir is None else str(data_dir),
            "threads": threads,
            "device": device,
            "keep_every_checkpoint": keep_checkpoints,
            "tensorboard": tensorboard,
            "amp": amp,
            "channels_last": channels_last,
            "optimizer": optimizer,
            "val_split": val_split,
            "val_seed": val_seed,
            "test_eval": test_eval,
        }
        given = common.given(**fields)
        file = config_values(config, TrainConfig)
        file_kw = file_model_kwargs(file, model, str(config)) if config is not None else {}
        file.pop("model_kwargs", None)
        try:
            if resume:
                if out is None:
                    raise error("--resume needs --out, the run directory to continue.")
                cfg = TrainConfig.from_dict(load_config(out))
                if ":" in cfg.model and model != cfg.model:
                    raise error(
                        f"{out} was trained with the model factory {cfg.model}: pass --model "
                        f"{cfg.model} to resume it (code named by a run directory is never "
                        "imported on its own)."
                    )
                model_kw = dict(cfg.model_kwargs)
                if model is not None or width or depth or layers or blocks or width_mult or arg:
                    # Only to be checked against the stored run: train() refuses differences.
                    name = model or cfg.model
                    new = model_kwargs(name, width, depth, blocks, layers, width_mult, arg)
                    cfg.model, model_kw = name, {**model_kw, **new}
                if config is not None:  # a file's values count as given: checked like them
                    model_kw = {**model_kw, **file_kw}
                    given = {**{k: v for k, v in file.items() if k != "out"}, **given}
                # Options given with --resume override the stored config; train() refuses any
                # that change more than the runtime fields and names both values.
                cfg = TrainConfig(
                    **{**cfg.to_dict(), **given, "model_kwargs": model_kw, "out": str(out)}
                )
            else:
                model = model or file.get("model") or TrainConfig.model
                kw = model_kwargs(
                    model, width, depth, blocks, layers, width_mult, arg, base=file_kw
                )
                cfg = TrainConfig.from_dict({**file, **given, "model": model, "model_kwargs": kw})
                if out is None and "out" not in file:
                    cfg.out = _default_out(model, kw, cfg.dataset, cfg.seed)
                elif out is not None:
                    cfg.out = str(out)
            if quiet or "progress" not in file:  # a file's `progress: false` is kept
                cfg.progress = not quiet
            if print_config_:
                cfg.validate()
                print_config(cfg.to_dict())
            if progress is not None:  # else keep `cbundles --progress/--no-progress`'s choice
                set_progress(progress)
            with sigterm_as_interrupt():  # `kill PID` stops as cleanly as Ctrl-C
                result = train(cfg, resume=resume, force=force)
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise error(str(e)) from e
        except OSError as e:
            run = Path(out or cfg.out)
            if e.filename and not _inside(Path(str(e.filename)), run):
                raise error(
                    f"{e.filename}: {e.strerror or e}. Check --data-dir and the other paths "
                    "you gave."
                ) from e
            if (run / "checkpoints" / "last.pt").is_file():
                then = f"continue with `cbundles train --resume --out {run}`"
            else:
                then = "no epoch was saved yet: start it again with --force"
            raise error(
                os_error_message(e, f"into the run directory {run}")
                + f" Once there is room, {then}."
            ) from e
        except KeyboardInterrupt:
            run = Path(out or cfg.out)
            saved = (run / "checkpoints" / "last.pt").is_file()
            make_console(stderr=True).print(
                "interrupted; the last completed epoch is saved. Continue with "
                f"`cbundles train --resume --out {escape(str(run))}`."
                if saved
                else "interrupted before the first epoch was saved: nothing to resume; start "
                "the run again (with --force if its folder was created).",
                highlight=False,
            )
            raise typer.Exit(130) from None
        from ..distributed import is_main

        console = make_console(quiet=not is_main())  # under torchrun only rank 0 prints
        if report and is_main():
            _write_report(result.run_dir, console)
        if result.status == "diverged":
            raise error(result.message)
        if result.status == "stopped":
            console.print(f"stopped: {escape(result.message)}", highlight=False)
        console.print(f"run directory: {escape(str(result.run_dir))}", highlight=False)
