"""`cbundles autotune` (the search) and `cbundles report` (regenerate a report.html)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..autotune.config import AutotuneConfig
from ..autotune.rules import VARIANTS
from ..console import make_console
from ..data import DatasetError
from ..runs import RunDirError
from ..train import OPTIMIZERS, TrainConfig
from .common import (
    CONV_MODELS,
    CRITERIA,
    DATA_DIR,
    DEVICES,
    PRINT_CONFIG_HELP,
    config_help,
    config_values,
    default,
    error,
    file_model_kwargs,
    given,
    model_kwargs,
    os_error_message,
    print_config,
    sigterm_as_interrupt,
)

PAPER_START = "3,12,41,3"  # the paper's plain-120 / resnet-120 start (docs/method.md §5)
STEP_OUT = "steps/step_NNN"  # each step's training run, inside the search's --out


def _check_train_out(value: str | None, config) -> None:
    """A file's train.out can only be what the search sets it to: every step trains in
    OUT/steps/step_NNN."""
    if value is None or value == TrainConfig.out or value.endswith(STEP_OUT):
        return
    raise error(
        f"{config} (train): out {value!r} is not used by autotune: every step trains in "
        f"OUT/{STEP_OUT}. Set the search's folder with the top-level out: or --out."
    )


def T(name: str) -> str:
    return default(TrainConfig, name)


def A(name: str) -> str:
    return default(AutotuneConfig, name)


def register(app: typer.Typer) -> None:
    @app.command("autotune")
    def autotune_cmd(
        config: Path = typer.Option(
            None,
            "--config",
            "-c",
            help=config_help("autotune", "its autotune.json (the training recipe under train:)"),
        ),
        print_config_: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
        dataset: str = typer.Option(
            None,
            "--dataset",
            "-d",
            help="A name of `cbundles datasets` or folder:PATH" + T("dataset") + ".",
        ),
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="fnn, plain, resnet or package.module:function" + T("model") + ".",
        ),
        start_blocks: str = typer.Option(
            None,
            help=f"plain/resnet: start blocks a,b,c,d (default {PAPER_START}, the paper's "
            "120 layers).",
        ),
        layers: int = typer.Option(None, help="plain/resnet: start depth from the table."),
        width_mult: str = typer.Option(None, help="plain/resnet: channel multiplier, e.g. 1/8."),
        width: int = typer.Option(None, help="fnn: units per hidden layer."),
        depth: int = typer.Option(None, help="fnn: start number of hidden layers."),
        epochs: int = typer.Option(None, help="Epoch budget of the final run" + T("epochs") + "."),
        check_epochs: int = typer.Option(
            None, help="Check for conflicts while epoch < this" + A("check_epochs") + "."
        ),
        samples: int = typer.Option(
            None, help="Training samples for the bundle metric" + A("samples") + "."
        ),
        variant: str = typer.Option(None, help=f"{', '.join(VARIANTS)}" + A("variant") + "."),
        restart: str = typer.Option(
            None, help="fresh (the paper) or warm (keep weights)" + A("restart") + "."
        ),
        criterion: str = typer.Option(
            None,
            help=f"The search's decision criterion: {CRITERIA} (train.criterion in a file: what "
            "each step's training run logs per epoch)" + T("criterion") + ".",
        ),
        seed: int = typer.Option(
            None, help="Seed of weights, data order and augmentation" + T("seed") + "."
        ),
        lr: float = typer.Option(
            None, help="Learning rate (also the metric's eta)" + T("lr") + "."
        ),
        batch_size: int = typer.Option(
            None, help="Batch size (also the metric's beta)" + T("batch_size") + "."
        ),
        optimizer: str = typer.Option(
            None, help=f"{', '.join(OPTIMIZERS)}" + T("optimizer") + ", the paper's recipe."
        ),
        train_limit: int = typer.Option(None, help="Use only the first N training samples."),
        test_limit: int = typer.Option(None, help="Use only the first N test samples."),
        val_split: int = typer.Option(
            None, help="Hold out N training samples as validation" + T("val_split") + "."
        ),
        augment: bool = typer.Option(
            None,
            "--augment/--no-augment",
            help="Training augmentation (docs/method.md §4)" + T("augment") + ".",
        ),
        data_dir: Path = typer.Option(None, help=DATA_DIR + "."),
        threads: int = typer.Option(None, help="torch threads" + T("threads") + "."),
        device: str = typer.Option(None, help=DEVICES + T("device") + "."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder" + A("out") + "."),
        resume: bool = typer.Option(False, help="Continue the search in --out."),
        force: bool = typer.Option(False, help="Start over, replacing the search in --out."),
        amp: str = typer.Option(None, help="bf16: mixed-precision training (default float32)."),
        channels_last: bool = typer.Option(
            None, "--channels-last/--no-channels-last", help="NHWC memory format (GPUs)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-epoch output."),
    ) -> None:
        """Auto-tune (docs/method.md §5): remove conflicting layers, retrain, repeat.

        Removes the layers that form conflicting bundles early in training and retrains,
        until no layer conflicts. Exits 1 when a step's training diverged.

        Settings: the AutotuneConfig/TrainConfig defaults, then --config FILE (an
        AutotuneConfig mapping with the training recipe under `train`), then these options.

        Example:

          cbundles autotune -d cifar10 -m plain --start-blocks 3,12,41,3 \\
            --epochs 120 --check-epochs 10 --samples 64 --out runs/at0
        """
        from ..autotune import AutotuneConfig, SearchDidNotConverge, autotune

        file = config_values(config, AutotuneConfig, nested={"train": TrainConfig})
        file_train = dict(file.pop("train", None) or {})
        file_kw = file_model_kwargs(file_train, model, f"{config} (train)") if config else {}
        file_train.pop("model_kwargs", None)
        _check_train_out(file_train.pop("out", None), config)
        model = model or file_train.get("model") or TrainConfig.model
        if model in CONV_MODELS and start_blocks is None and layers is None:
            if not ({"blocks", "layers"} & set(file_kw)):
                start_blocks = PAPER_START
        kw = model_kwargs(model, width, depth, start_blocks, layers, width_mult, [], base=file_kw)
        train_given = given(
            dataset=dataset,
            data_dir=None if data_dir is None else str(data_dir),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            seed=seed,
            train_limit=train_limit,
            test_limit=test_limit,
            val_split=val_split,
            augment=augment,
            measure_samples=samples,
            threads=threads,
            device=device,
            amp=amp,
            channels_last=channels_last,
            progress=False if quiet else None,
        )
        search_given = given(
            out=None if out is None else str(out),
            variant=variant,
            restart=restart,
            check_epochs=check_epochs,
            samples=samples,
            criterion=criterion,
        )
        # A file's samples sets the steps' per-epoch measurement too, as --samples does,
        # unless its train section names measure_samples.
        if "samples" in file and "measure_samples" not in file_train:
            train_given.setdefault("measure_samples", file["samples"])
        train_cfg = {**file_train, **train_given, "model": model, "model_kwargs": kw}
        try:
            train_cfg = TrainConfig.from_dict(train_cfg).to_dict()  # every field resolved
            cfg = AutotuneConfig.from_dict({**file, **search_given, "train": train_cfg})
            cfg.train["out"] = str(Path(cfg.out) / STEP_OUT)  # where each step trains
            if print_config_:
                TrainConfig.from_dict(cfg.train).validate()
                print_config(cfg.to_dict())
            with sigterm_as_interrupt():  # `kill PID` stops as cleanly as Ctrl-C
                res = autotune(cfg, resume=resume, force=force)
        except (ValueError, TypeError, RunDirError, DatasetError, SearchDidNotConverge) as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e)) from e
        except KeyboardInterrupt:
            make_console(stderr=True).print(
                f"interrupted; finished steps and epochs are saved. Continue with the same "
                f"command and --resume (--out {cfg.out}).",
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
        from ..runreport import build_report

        try:
            path = build_report(run_dir)
        except FileNotFoundError as e:
            raise error(str(e)) from e
        except OSError as e:
            raise error(os_error_message(e, f"{run_dir}/report.html")) from e
        make_console().print(f"wrote {path}", markup=False)
        bad = damaged_json(run_dir)
        if bad:  # the report is written without them, but the run folder is not whole
            raise error(
                f"{', '.join(str(run_dir / b) for b in bad)}: not valid JSON (damaged); "
                "report.html was written without them."
            )


def damaged_json(d: Path) -> list[str]:
    """Names of the run folder's JSON / JSON-lines files that do not parse."""
    import json

    bad = []
    for p in sorted([*d.glob("*.json"), *d.glob("*.jsonl")]):
        try:
            text = p.read_text()
            if p.suffix == ".jsonl":
                for line in text.splitlines():
                    if line.strip():
                        json.loads(line)
            else:
                json.loads(text)
        except (OSError, ValueError):
            bad.append(p.name)
    return bad
