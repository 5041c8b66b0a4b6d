"""Terminal output shared by every command: progress bars only on a terminal, plain lines and
untruncated tables when piped, markup-safe printing of user text (paths, names).

    from conflicting_bundles.console import make_console, progress_enabled, escape

    console = make_console()               # stdout; make_console(stderr=True) for errors
    console.print(table)                   # piped: as wide as it needs, never cut to 80 columns
    console.print(f"written to {escape(str(path))}")   # a path like runs/[/x] cannot break markup
    for x in tqdm(items, disable=not progress_enabled()): ...

``progress_enabled()``: False when ``TQDM_DISABLE`` is set to anything but "" / "0" / "false",
else the value given to :func:`set_progress` (the CLI's ``--progress/--no-progress``), else
whether stderr (where tqdm draws) is a terminal. Every bar (train, autotune, search, lesion,
grid) is drawn only when it is True. Long commands print exactly one plain line per epoch when
bars are off (train's lines start with ``epoch ``, so ``grep '^epoch'`` finds them); grid prints
one ``grid cell i/n ...`` line per finished cell instead of its bar.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

__all__ = [
    "PIPE_WIDTH",
    "escape",
    "is_terminal",
    "make_console",
    "progress_enabled",
    "set_progress",
]

PIPE_WIDTH = 10_000  # columns of a console that is not a terminal: tables take what they need
_progress_override: bool | None = None


def is_terminal(stream=None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on or off for this process (None: decide by the terminal)."""
    global _progress_override
    _progress_override = enabled


def _env_disabled() -> bool:
    v = os.environ.get("TQDM_DISABLE")
    return v is not None and v.strip().lower() not in ("", "0", "false", "no")


def progress_enabled() -> bool:
    """Whether to draw progress bars (see the module docstring)."""
    if _env_disabled():
        return False
    if _progress_override is not None:
        return _progress_override
    return is_terminal(sys.stderr)


def make_console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """A rich Console: on a terminal the usual one; piped, no colours or wrapping and a very
    wide line, so tables keep whole names and each print is one plain line."""
    stream = sys.stderr if stderr else sys.stdout
    if is_terminal(stream):
        return Console(stderr=stderr, quiet=quiet, soft_wrap=True)
    return Console(
        stderr=stderr,
        quiet=quiet,
        width=PIPE_WIDTH,
        no_color=True,
        highlight=False,
        soft_wrap=True,
        emoji=False,
    )
