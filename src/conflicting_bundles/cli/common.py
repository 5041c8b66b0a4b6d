"""Helpers shared by the command modules: errors, model options, output-folder checks.

    from .common import error, fail, model_kwargs

    raise error("--samples must be >= 1.")       # prints "error: ..." to stderr, exit 1
    fail("...")                                   # the same, raising directly
    kw = model_kwargs("fnn", width, depth, blocks, layers, width_mult, args)

Messages are printed without rich markup, so paths such as ``runs/[/x]`` print as they are.
"""

from __future__ import annotations

import contextlib
import json
import signal
from fractions import Fraction
from typing import NoReturn

import typer

from ..console import escape, make_console

FNN_MODELS = ("fnn",)
CONV_MODELS = ("plain", "resnet")

# One wording of the values every command's help lists (the defaults are added per command).
CRITERIA = "reference (the paper's), raw, coarse:K, tol:G, rel:R or calibrated"
PROBE_KINDS = "hidden (fnn), block (plain), branch or block-output (resnet)"
CHECKPOINTS = "last, best or an epoch number"
DEVICES = "auto (cuda if available), cpu, cuda or cuda:N"
DATA_DIR = "Data directory (default $CBUNDLES_DATA, else ~/.cache/conflicting-bundles)"


def error(msg: str, code: int = 1) -> typer.Exit:
    """Print ``error: msg`` to stderr and return the typer.Exit(code) to raise."""
    make_console(stderr=True).print(f"[red]error:[/red] {escape(msg)}", highlight=False)
    return typer.Exit(code)


def fail(msg: str, code: int = 1) -> NoReturn:
    """Print ``error: msg`` to stderr and exit with ``code``."""
    raise error(msg, code)


def os_error_message(e: OSError, what: str | None = None) -> str:
    """A one-line 'cannot write WHAT (disk full): ...' for an OSError, with what to do; WHAT
    defaults to the file the error names."""
    from ..rundir import describe_os_error

    what = what or (str(e.filename) if e.filename else "the output")
    return (
        f"cannot write {what} ({describe_os_error(e)}): free some space or choose a writable --out."
    )


def parse_number(text: str, what: str) -> float:
    """A float, also written as a fraction: "0.125" or "1/8"."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise error(f"{what} must be a number such as 0.25 or 1/4, got {text!r}.") from None


def parse_blocks(text: str) -> list[int]:
    """'3,12,41,3' -> [3, 12, 41, 3] (four non-negative counts)."""
    try:
        blocks = [int(b) for b in text.split(",")]
    except ValueError:
        blocks = []
    if len(blocks) != 4 or min(blocks) < 0:
        raise error(f"--blocks must be four counts a,b,c,d (e.g. 3,12,41,3), got {text!r}.")
    return blocks


def model_args(pairs: list[str]) -> dict:
    """--arg KEY=VALUE (VALUE parsed as JSON when it is JSON, else kept as a string)."""
    out = {}
    for p in pairs:
        key, sep, val = p.partition("=")
        if not sep or not key:
            raise error(f"--arg must look like KEY=VALUE, got {p!r}.")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def fnn_defaults() -> dict:
    """The fnn factory's own default width and depth (read from the model registry)."""
    from ..models import model_signature

    params = model_signature("fnn").parameters
    return {k: params[k].default for k in ("width", "depth")}


def model_kwargs(model, width, depth, blocks, layers, width_mult, args, base=None) -> dict:
    """The model factory's keyword arguments from the shape options of `train`/`autotune`, on
    top of ``base`` (a config file's model_kwargs)."""
    kw: dict = dict(base or {})
    given = {"--width": width, "--depth": depth}
    if width is not None and width < 1 or depth is not None and depth < 0:
        raise error(f"--width must be >= 1 and --depth >= 0, got {width} and {depth}.")
    if model in FNN_MODELS:  # without --width/--depth the model's own defaults (10 x 25),
        kw.update({k: v for k, v in (("width", width), ("depth", depth)) if v is not None})
        for k, v in fnn_defaults().items():  # written into config.json
            kw.setdefault(k, v)
    elif any(v is not None for v in given.values()):
        raise error(f"--width/--depth apply to fnn only; {model} uses --layers or --blocks.")
    conv = {"--blocks": blocks, "--layers": layers, "--width-mult": width_mult}
    if model in CONV_MODELS:
        if blocks is not None or layers is not None:  # the command line's shape wins
            kw.pop("blocks", None)
            kw.pop("layers", None)
        if blocks is not None:
            kw["blocks"] = parse_blocks(blocks)
        if layers is not None:
            kw["layers"] = layers
        if width_mult is not None:
            kw["width_mult"] = parse_number(width_mult, "--width-mult")
        if kw.get("blocks") is None and kw.get("layers") is None:
            raise error(
                f"model {model} needs --layers N (4, 10, 20, 30, 50, 76, 100, 120) or "
                "--blocks a,b,c,d."
            )
    elif any(v is not None for v in conv.values()):
        raise error(f"--blocks/--layers/--width-mult apply to plain and resnet, not {model}.")
    kw.update(model_args(args))
    return kw


# ------------------------------------------------------------------------- config files
def config_help(command: str, results: str) -> str:
    """The --config help of ``cbundles COMMAND``, naming the results file it also reads."""
    return (
        f"YAML/JSON file of `{command}` fields: what `cbundles {command} --print-config` "
        f"prints, or {results} of an earlier {command}. Options given here override it."
    )


PRINT_CONFIG_HELP = "Print the resolved config as YAML and exit without running (validate only)."


def default(cls, name: str) -> str:
    """' (default X)' for a help text, X read from the config dataclass: the one source."""
    from ..configfile import field_default

    v = field_default(cls, name)
    if v is None or isinstance(v, bool):
        v = {None: "none", True: "yes", False: "no"}[v]
    elif isinstance(v, (tuple, list)):
        v = ",".join(map(str, v))
    return f" (default {v})"


def config_values(path, cls, *, nested=None, extra=(), renamed=None) -> dict:
    """The fields of config file ``path`` (None: {}), checked against dataclass ``cls`` and
    converted to their types (configfile.check_fields)."""
    from ..configfile import ConfigFileError, check_fields, read_config_file

    if path is None:
        return {}
    try:
        values = read_config_file(path)
        return check_fields(values, cls, str(path), nested=nested, extra=extra, renamed=renamed)
    except ConfigFileError as e:
        raise error(str(e)) from None


def file_model_kwargs(file: dict, model: str | None, where: str) -> dict:
    """A config file's ``model_kwargs`` for the run's ``model``: {} when the command line names
    another model than the one the file names (its arguments belong to that model); without
    the in_shape/num_classes a run's config.json records when they are its own dataset's
    (they are filled in again from the dataset, so the file works with another one); checked
    against the model's arguments (an unknown one or a wrong type is an error here)."""
    from ..data import DatasetError, dataset_info
    from ..factory import is_factory_path
    from ..models import check_model_kwargs

    kw = file.get("model_kwargs") or {}
    named = file.get("model")
    if model is not None and named is not None and model != named:
        return {}
    model = model or named or "fnn"
    if not isinstance(kw, dict):
        raise error(f"{where}: model_kwargs must be a mapping (width: 8, ...), got {kw!r}.")
    try:
        info = dataset_info(file.get("dataset", "mnist"))
        own = {"in_shape": list(info.in_shape), "num_classes": info.num_classes}
    except (DatasetError, ValueError, KeyError):
        own = {}
    kw = {k: v for k, v in kw.items() if not (k in own and _same(v, own[k]))}
    if is_factory_path(model):
        return kw
    try:
        return check_model_kwargs(model, kw)
    except ValueError as e:
        raise error(f"{where}: {e}") from None


def _same(a, b) -> bool:
    return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b


def print_config(values: dict) -> NoReturn:
    """Print a resolved config as YAML to stdout and exit 0."""
    from ..configfile import to_yaml

    typer.echo(to_yaml(values), nl=False)
    raise typer.Exit(0)


def given(**options) -> dict:
    """The options given on the command line (every config option defaults to None)."""
    return {k: v for k, v in options.items() if v is not None}


@contextlib.contextmanager
def sigterm_as_interrupt():
    """`kill PID` (SIGTERM) stops a long command as cleanly as Ctrl-C: finished work stays
    saved and the resume hint is printed."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
