"""Reading a file that someone handed on, within bounds (issue 23: a handed-on file is a trust
boundary). Every config file and run-folder file the tool reads back goes through
:func:`read_bounded`: it never follows a symbolic link, reads only a regular file (not a FIFO,
a device such as /dev/zero, or a folder), and refuses a file larger than the caller's limit
before reading it, so no input hangs or exhausts memory. :func:`check_nesting` bounds the
depth of a parsed mapping (a 100,000-deep file would otherwise raise RecursionError in any
code that walks it) and :func:`json_loads_strict` refuses a JSON key given twice.

This module is the bottom layer: it imports nothing from the package.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "UnsafeFileError",
    "check_nesting",
    "check_path_names",
    "json_loads_strict",
    "read_bounded",
]

MAX_CONFIG_BYTES = 4 * 2**20  # a config is a few KB; a results file with one a few hundred
MAX_NESTING = 32  # a config nests 2-3 levels deep


class UnsafeFileError(ValueError):
    """A file that is a link, not a regular file, too large, or nested too deep; the message
    names the file and what to do."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit`` of them). UnsafeFileError
    for a symbolic link, a folder/FIFO/device, or a larger file; FileNotFoundError and other
    OSErrors pass through for the caller to word."""
    p = Path(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFileError(
                f"{what} {p} is a symbolic link; a handed-on file is read only as a regular "
                "file (never through a link): copy the file it points to in its place."
            ) from None
        if e.errno == errno.EISDIR:
            raise UnsafeFileError(f"{what} {p} is a folder, not a file.") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file.")
        if st.st_size > limit:
            raise UnsafeFileError(_too_large(p, what, st.st_size, limit))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # grew while being read
            raise UnsafeFileError(_too_large(p, what, size, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(p: Path, what: str, size: int, limit: int) -> str:
    return (
        f"{what} {p} is {size:,} bytes, more than the {limit:,} such a file can hold; "
        "pass the right file."
    )


def check_nesting(data, where: str, limit: int = MAX_NESTING, max_nodes: int = 100_000) -> None:
    """UnsafeFileError when lists/mappings in ``data`` nest deeper than ``limit`` (walked
    without recursion). Stops after ``max_nodes`` values: YAML aliases can make a small file
    expand to billions (the caller's size check refuses those)."""
    stack, seen = [(data, 0)], 0
    while stack and seen < max_nodes:
        x, depth = stack.pop()
        seen += 1
        if depth > limit:
            raise UnsafeFileError(
                f"{where} nests more than {limit} levels deep; a config is a flat mapping of "
                "fields (a few levels at most)."
            )
        if isinstance(x, dict):
            stack.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend((v, depth + 1) for v in x)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} is given twice in one object; keep one")
        out[k] = v
    return out


def json_loads_strict(text: str):
    """json.loads refusing a key given twice in one object (ValueError) and reporting a
    nesting too deep for the parser as ValueError instead of RecursionError."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deep to parse") from None


NAME_MAX = 255  # bytes of one path component on Linux/macOS file systems


def check_path_names(path: str | os.PathLike | None, what: str) -> None:
    """ValueError naming ``what`` when a component of ``path`` is longer than the file
    system allows (the OS would fail later, inside another error's handling)."""
    if path is None:
        return
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(
                f"{what}: the path component {part[:40]}... is {len(os.fsencode(part))} bytes "
                f"long, more than the {NAME_MAX} a file name may have; choose a shorter name."
            )
