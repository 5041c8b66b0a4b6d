"""`cbundles train`: train one network with the reference recipe into a run directory."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import typer
from rich.console import Console

from ..data import DatasetError
from ..runs import RunDirError, load_config
from ..train import TrainConfig, train

_FNN = ("fnn",)
_CONV = ("plain", "resnet")


def _error(msg: str, code: int = 1) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {msg}", highlight=False)
    return typer.Exit(code)


def _number(text: str, what: str) -> float:
    """A float, also written as a fraction: "0.125" or "1/8"."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise _error(f"{what} must be a number such as 0.25 or 1/4, got {text!r}.") from None


def _blocks(text: str) -> list[int]:
    try:
        blocks = [int(b) for b in text.split(",")]
    except ValueError:
        blocks = []
    if len(blocks) != 4 or min(blocks) < 0:
        raise _error(f"--blocks must be four counts a,b,c,d (e.g. 3,12,41,3), got {text!r}.")
    return blocks


def _model_args(pairs: list[str]) -> dict:
    """--arg KEY=VALUE (VALUE parsed as JSON when it is JSON, else kept as a string)."""
    out = {}
    for p in pairs:
        key, sep, val = p.partition("=")
        if not sep or not key:
            raise _error(f"--arg must look like KEY=VALUE, got {p!r}.")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def _model_kwargs(model, width, depth, blocks, layers, width_mult, args) -> dict:
    kw: dict = {}
    given = {"--width": width, "--depth": depth}
    if model in _FNN:
        if width is None or depth is None:
            raise _error("model fnn needs --width and --depth (hidden layers and their units).")
        kw.update(width=width, depth=depth)
    elif any(v is not None for v in given.values()):
        raise _error(f"--width/--depth apply to fnn only; {model} uses --layers or --blocks.")
    conv = {"--blocks": blocks, "--layers": layers, "--width-mult": width_mult}
    if model in _CONV:
        if blocks is None and layers is None:
            raise _error(
                f"model {model} needs --layers N (4, 10, 20, 30, 50, 76, 100, 120) or "
                "--blocks a,b,c,d."
            )
        if blocks is not None:
            kw["blocks"] = _blocks(blocks)
        if layers is not None:
            kw["layers"] = layers
        if width_mult is not None:
            kw["width_mult"] = _number(width_mult, "--width-mult")
    elif any(v is not None for v in conv.values()):
        raise _error(f"--blocks/--layers/--width-mult apply to plain and resnet, not {model}.")
    kw.update(_model_args(args))
    return kw


def _default_out(model: str, kw: dict, dataset: str, seed: int) -> str:
    if model in _FNN:
        shape = f"{kw['depth']}x{kw['width']}"
    elif "blocks" in kw:
        shape = "-".join(map(str, kw["blocks"]))
    else:
        shape = str(kw.get("layers", ""))
    return f"runs/{model}{shape}-{dataset}-seed{seed}"


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        model: str = typer.Option(None, "--model", "-m", help="fnn, plain or resnet."),
        width: int = typer.Option(None, help="fnn: units per hidden layer."),
        depth: int = typer.Option(None, help="fnn: number of hidden layers."),
        layers: int = typer.Option(None, help="plain/resnet: depth 4,10,20,30,50,76,100,120."),
        blocks: str = typer.Option(None, help="plain/resnet: blocks per stage, e.g. 3,12,41,3."),
        width_mult: str = typer.Option(None, help="plain/resnet: channel multiplier, e.g. 1/16."),
        arg: list[str] = typer.Option([], "--arg", help="Other model argument KEY=VALUE."),
        dataset: str = typer.Option(None, "--dataset", "-d", help="mnist, cifar10, synthetic..."),
        epochs: int = typer.Option(None, help="Epochs (default 120)."),
        lr: float = typer.Option(None, help="Learning rate (default 1e-3)."),
        batch_size: int = typer.Option(None, help="Batch size (default 64)."),
        seed: int = typer.Option(None, help="Seed of init, data order, augmentation (default 0)."),
        train_limit: int = typer.Option(None, help="Use only the first N training samples."),
        test_limit: int = typer.Option(None, help="Use only the first N test samples."),
        augment: bool = typer.Option(None, "--augment/--no-augment", help="Augmentation."),
        eval_every: int = typer.Option(None, help="Test accuracy every k epochs (+ last 5)."),
        samples: int = typer.Option(None, help="Samples for the bundle metric (default 64)."),
        all_layers: bool = typer.Option(
            None, "--all-layers/--last-layer", help="Measure every probe point (layers.csv)."
        ),
        measure_every: int = typer.Option(None, help="Bundle metric every k epochs."),
        kind: str = typer.Option(None, help="Probe kind (default: the model's)."),
        criterion: str = typer.Option(
            None, help="reference (default), raw, coarse:K, tol:G or rel:R."
        ),
        data_dir: Path = typer.Option(None, help="Data directory."),
        out: Path = typer.Option(None, "--out", "-o", help="Run directory."),
        resume: bool = typer.Option(False, help="Continue the run in --out."),
        force: bool = typer.Option(False, help="Overwrite the run in --out."),
        threads: int = typer.Option(None, help="torch threads (default 1)."),
        device: str = typer.Option(None, help="auto (default), cpu, cuda, cuda:N."),
        keep_checkpoints: bool = typer.Option(
            None, "--keep-checkpoints/--last-checkpoint-only", help="Keep one per epoch."
        ),
        tensorboard: bool = typer.Option(None, "--tensorboard/--no-tensorboard"),
        amp: str = typer.Option(None, help="bf16: mixed-precision training (default float32)."),
        channels_last: bool = typer.Option(
            None, "--channels-last/--no-channels-last", help="NHWC memory format (GPUs)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    ) -> None:
        """Train a network (RAdam + Lookahead, METHOD.md §4) and record bundle metrics per epoch.

        Example: cbundles train --model plain --layers 20 --dataset mnist --epochs 5 --out runs/x
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
        }
        given = {k: v for k, v in fields.items() if v is not None}
        try:
            if resume:
                if out is None:
                    raise _error("--resume needs --out, the run directory to continue.")
                cfg = TrainConfig.from_dict(load_config(out))
                model_kw = dict(cfg.model_kwargs)
                if model is not None or width or depth or layers or blocks or width_mult or arg:
                    # Only to be checked against the stored run: train() refuses differences.
                    name = model or cfg.model
                    new = _model_kwargs(name, width, depth, blocks, layers, width_mult, arg)
                    cfg.model, model_kw = name, {**model_kw, **new}
                # Options given with --resume override the stored config; train() refuses any
                # that change more than the runtime fields and names both values.
                cfg = TrainConfig(
                    **{**cfg.to_dict(), **given, "model_kwargs": model_kw, "out": str(out)}
                )
            else:
                model = model or "plain"
                kw = _model_kwargs(model, width, depth, blocks, layers, width_mult, arg)
                cfg = TrainConfig(model=model, model_kwargs=kw, **given)
                cfg.out = str(out) if out else _default_out(model, kw, cfg.dataset, cfg.seed)
            cfg.progress = not quiet
            result = train(cfg, resume=resume, force=force)
        except (ValueError, TypeError, RunDirError, DatasetError) as e:
            raise _error(str(e)) from e
        except KeyboardInterrupt:
            Console(stderr=True, soft_wrap=True).print(
                f"interrupted; the last completed epoch is saved. Continue with "
                f"`cbundles train --resume --out {out or cfg.out}`."
            )
            raise typer.Exit(130) from None
        from ..distributed import is_main

        console = Console(quiet=not is_main())  # under torchrun only rank 0 prints
        if result.status == "diverged":
            raise _error(result.message)
        if result.status == "stopped":
            console.print(f"stopped: {result.message}")
        console.print(f"run directory: {result.run_dir}", highlight=False)
