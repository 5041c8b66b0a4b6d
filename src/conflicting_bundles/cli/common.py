"""Helpers shared by the command modules: errors, model options, output-folder checks.

    from .common import error, fail, model_kwargs

    raise error("--samples must be >= 1.")       # prints "error: ..." to stderr, exit 1
    fail("...")                                   # the same, raising directly
    kw = model_kwargs("fnn", width, depth, blocks, layers, width_mult, args)

Messages are printed without rich markup, so paths such as ``runs/[/x]`` print as they are.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import NoReturn

import typer

from ..console import escape, make_console

FNN_MODELS = ("fnn",)
CONV_MODELS = ("plain", "resnet")


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


def model_kwargs(model, width, depth, blocks, layers, width_mult, args) -> dict:
    """The model factory's keyword arguments from the shape options of `train`/`autotune`."""
    kw: dict = {}
    given = {"--width": width, "--depth": depth}
    if model in FNN_MODELS:
        if width is None or depth is None:
            raise error("model fnn needs --width and --depth (hidden layers and their units).")
        kw.update(width=width, depth=depth)
    elif any(v is not None for v in given.values()):
        raise error(f"--width/--depth apply to fnn only; {model} uses --layers or --blocks.")
    conv = {"--blocks": blocks, "--layers": layers, "--width-mult": width_mult}
    if model in CONV_MODELS:
        if blocks is None and layers is None:
            raise error(
                f"model {model} needs --layers N (4, 10, 20, 30, 50, 76, 100, 120) or "
                "--blocks a,b,c,d."
            )
        if blocks is not None:
            kw["blocks"] = parse_blocks(blocks)
        if layers is not None:
            kw["layers"] = layers
        if width_mult is not None:
            kw["width_mult"] = parse_number(width_mult, "--width-mult")
    elif any(v is not None for v in conv.values()):
        raise error(f"--blocks/--layers/--width-mult apply to plain and resnet, not {model}.")
    kw.update(model_args(args))
    return kw
