"""Run-directory lifecycle: one exclusive lock per folder, and new / resume / overwrite.

Every command that writes into a folder (train, autotune, grid, lesion, sweep, ...) opens it
with :func:`open_run` and keeps the returned :class:`RunDir` open for as long as it writes::

    from conflicting_bundles import rundir, runs

    with rundir.open_run(out, command="cbundles train", resume=resume, force=force,
                         config=cfg.to_dict(), owned=runs.RUN_FILES + runs.RUN_DIRS,
                         runtime_keys=("epochs", "device")) as rd:
        if rd.mode is rundir.RunMode.RESUME: ...   # rd.stored_config: the config.json found
        runs.write_json(rd.path / runs.CONFIG, cfg.to_dict())
        ...

What :func:`open_run` does, in this order (each refusal is a :class:`RunDirError` whose message
says what to do; nothing is deleted or written before all checks passed):

1. ``path`` must be a folder or absent (created, with parents). If it cannot be created or
   written (read-only file system, no permission, disk full), the error says so before any
   work is done.
2. The lock (runlock.RunLock): ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``path/.lock`` (never
   opened through a link, only as a regular file), which then holds
   ``pid``, ``command``, ``since`` (UTC) and ``host`` as JSON. A second process gets
   :class:`RunInUseError`: "RUN_DIR is in use by pid N (cbundles train, since ...): wait for it
   or choose another --out". The kernel releases a flock when its process dies, so the lock of a
   killed process is simply taken over (its stale .lock content is overwritten). A lock is
   per process: under torchrun open it on rank 0 only. Processes forked by the holder inherit
   it (close it in workers that outlive the command, or start them with "spawn").
3. The mode. ``owned`` lists the names (files, folders or glob patterns such as "step_*.json",
   relative to ``path``) that this command writes; only they count as "a run is here".

   - ``resume=True``: ``config_file`` must exist (else "nothing to resume"); when ``config`` is
     given, every key of it outside ``runtime_keys`` must equal the stored value (a key missing
     from the stored file compares against ``defaults``), else :class:`ConfigMismatchError`
     naming each differing key with both values. Mode RESUME.
   - else, if any owned name exists: without ``force`` a refusal ("already holds a run ...:
     pass --resume, --force, or choose another --out"); with ``force`` exactly the owned names
     are deleted (never anything else in the folder; ``defer_clear=True`` leaves that to
     :meth:`RunDir.clear`, e.g. until the new run is about to write). Mode OVERWRITE.
   - else mode NEW.

   A folder is this tool's run only when it carries the marker (runlock.MARKER, written once
   a command accepted the folder): ``--force`` over owned names in an unmarked folder is
   refused, a folder marked by another command is refused, and a run to continue whose owned
   names include a symbolic link is refused (nothing is written through a link).

   Then, and only then, temporary files of interrupted atomic writes are removed: names that
   ``atomic_write_bytes`` gives (``.NAME.XXXXXXXX.tmp``) to an owned name in the folder, or to
   a file of this tool's kinds in an owned sub-folder; nothing else is touched.

:meth:`RunDir.close` (or leaving the ``with`` block) releases the lock; a folder that
open_run created and that holds nothing but the lock file is removed again, so a command that
fails before writing leaves nothing behind. :func:`locked` is the lock alone, as a plain
context manager.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .runlock import (
    LOCK_FILE,
    MARKER,
    RunInUseError,
    RunLock,
    check_writable,
    describe_os_error,
    locked,
    remove_if_bare,
)
from .runs import CONFIG, RunDirError, read_json

__all__ = [
    "LOCK_FILE",
    "MARKER",
    "ConfigMismatchError",
    "RunDir",
    "RunInUseError",
    "RunLock",
    "RunMode",
    "check_writable",
    "config_differences",
    "describe_os_error",
    "existing_owned",
    "locked",
    "open_run",
]


class ConfigMismatchError(RunDirError, ValueError):
    """``--resume`` with a configuration that differs from the stored one."""


class RunMode(enum.Enum):
    NEW = "new"
    RESUME = "resume"
    OVERWRITE = "overwrite"


# ------------------------------------------------------------------------------------ run dir
@dataclass
class RunDir:
    """An open run directory (see the module docstring). ``stored_config``: the config file's
    contents on RESUME (else None); ``created``: open_run created the folder."""

    path: Path
    command: str
    mode: RunMode
    owned: tuple[str, ...]
    stored_config: dict | None = None
    created: bool = False
    lock: RunLock | None = field(default=None, repr=False)
    pending_clear: bool = False

    @property
    def resumed(self) -> bool:
        return self.mode is RunMode.RESUME

    def existing(self) -> list[Path]:
        """The owned names that exist now."""
        return existing_owned(self.path, self.owned)

    def remove_stale_temp(self) -> list[Path]:
        """Delete temporary files of interrupted atomic writes (``.NAME.*.tmp``, see
        runs.atomic_write_bytes) in the folder and its owned sub-folders; safe under the lock,
        since no other process writes here. Returns what was removed."""
        gone = []
        top = [self.path]
        subs = [p for p in self.existing() if p.is_dir() and not p.is_symlink()]
        for folder, own in [(f, self.owns) for f in top] + [(f, _tool_file) for f in subs]:
            for tmp in folder.glob(".*.tmp"):
                m = TEMP_NAME.fullmatch(tmp.name)  # only what atomic_write_bytes names
                if m and own(m["name"]) and tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)
                    gone.append(tmp)
        return gone

    def owns(self, name: str) -> bool:
        """Whether ``name`` (in the top folder) is one this command writes."""
        return name == MARKER or any(fnmatch.fnmatchcase(name, o) for o in self.owned)

    def clear(self) -> None:
        """Delete exactly the owned files and folders (a deferred ``force``)."""
        for p in self.existing():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self.pending_clear = False

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        remove_if_bare(self.path, self.created)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# atomic_write_bytes: tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") -> random characters
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")
TOOL_SUFFIXES = (".pt", ".json", ".jsonl", ".csv", ".png", ".html", ".safetensors", ".txt")


def _tool_file(name: str) -> bool:
    """A name this tool writes inside an owned sub-folder (checkpoints/epoch-003.pt, ...)."""
    return name.endswith(TOOL_SUFFIXES)


def existing_owned(folder: Path, owned: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for name in owned:
        if any(c in name for c in "*?["):
            out.extend(sorted(folder.glob(name)))
        elif (folder / name).exists() or (folder / name).is_symlink():
            out.append(folder / name)
    return out


def config_differences(
    stored: Mapping, given: Mapping, runtime_keys: Sequence[str] = (), defaults: Mapping = {}
) -> list[str]:
    """'key: run has A, given B' for every key of ``given`` (outside ``runtime_keys``) whose
    value differs from ``stored`` (a key missing from ``stored`` compares to ``defaults``)."""
    diff = []
    for k, v in given.items():
        if k in runtime_keys:
            continue
        old = stored[k] if k in stored else defaults.get(k)
        if old != v:
            diff.append(f"{k}: run has {old!r}, given {v!r}")
    return diff


def open_run(
    path: str | os.PathLike,
    *,
    command: str,
    resume: bool = False,
    force: bool = False,
    config: Mapping | None = None,
    owned: Sequence[str] = (),
    config_file: str = CONFIG,
    runtime_keys: Sequence[str] = (),
    defaults: Mapping = {},
    describe: str | None = None,
    defer_clear: bool = False,
) -> RunDir:
    """Lock and open run directory ``path`` for ``command`` (see the module docstring).

    config: the resolved configuration of this invocation, checked against ``config_file`` on
      resume (the caller writes it). owned: the names this command writes (``--force`` deletes
      exactly these). describe: a short description of the run found there, for the refusal.
    Raises RunDirError (RunInUseError, ConfigMismatchError) with what to do."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {p} is a file, not a directory.")
    if resume and not (p / config_file).is_file():
        raise RunDirError(
            f"nothing to resume: {p} holds no run of {command} (no {config_file}). Start it "
            "without --resume."
        )
    created = not p.exists()
    check_writable(p)
    rd = RunDir(p, command, RunMode.NEW, tuple(owned), created=created)
    rd.lock = RunLock(p, command)
    try:
        rd.lock.acquire()
        if resume:
            rd.mode = RunMode.RESUME
            refuse_links(rd)
            rd.stored_config = read_json(p / config_file)
            if config is not None:
                diff = config_differences(rd.stored_config, config, runtime_keys, defaults)
                if diff:
                    keep = ", ".join(runtime_keys) or "nothing"
                    raise ConfigMismatchError(
                        "cannot resume with a different configuration (" + "; ".join(diff) + "). "
                        f"Resume with the stored config (only {keep} may change), or start a "
                        "new run in another --out."
                    )
        elif rd.existing():
            if not force:
                found = f" ({describe})" if describe else ""
                raise RunDirError(
                    f"{p} already holds a run{found}. Pass --resume to continue it, --force to "
                    "overwrite it, or choose another --out."
                )
            if rd.lock.marker is None:
                raise RunDirError(_not_ours(p, command, rd.existing()))
            rd.mode = RunMode.OVERWRITE
            rd.pending_clear = True
            if not defer_clear:
                rd.clear()
        rd.lock.mark()  # accepted: only now is anything written or deleted
        rd.remove_stale_temp()
    except BaseException:
        rd.close()
        raise
    return rd


def _not_ours(p: Path, command: str, found: list[Path]) -> str:
    names = ", ".join(sorted(x.name for x in found)[:6])
    return (
        f"{p} holds {names} but no {MARKER}: it is not a run of this tool, so --force deletes "
        f"nothing there. Choose another --out (or move those files away to let {command} "
        "write there)."
    )


def refuse_links(rd: RunDir) -> None:
    """RunDirError when an owned name of a run to continue is a symbolic link: writing
    through it (tb/ -> elsewhere) would change files outside the run folder."""
    links = [x for x in rd.existing() if x.is_symlink()]
    if links:
        raise RunDirError(
            f"{links[0]} is a symbolic link; a run is never continued through a link out of "
            "its folder: replace it with a real file or folder, or start a new run."
        )
