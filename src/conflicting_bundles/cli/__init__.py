"""The `cbundles` command line: parse arguments, call the library, print. No logic here.

Each command group lives in its own module exposing ``register(app)``.
"""

from __future__ import annotations

import importlib

import typer

from .. import __version__

app = typer.Typer(
    name="cbundles",
    help="Find layers that form conflicting bundles, and remove them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, in the order they appear in --help.
_COMMANDS = ["train", "measure", "datasets", "prune", "autotune", "search", "sweep", "lesion"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cbundles {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    progress: bool = typer.Option(
        None,
        "--progress/--no-progress",
        help="Progress bars for every command (default: only on a terminal; TQDM_DISABLE=1 "
        "turns them off).",
    ),
) -> None:
    """Conflicting bundles: measure, train, auto-tune, lesion and prune."""
    from ..console import set_progress

    set_progress(progress)


for _name in _COMMANDS:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    app()
