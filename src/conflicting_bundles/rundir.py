"""Run-directory lifecycle: one exclusive lock per folder, and new / resume / overwrite.

Every command that writes into a folder (train, autotune, grid, lesion, sweep, ...) opens it
with :func:`open_run` and keeps the returned :class:`RunDir` open for as long as it writes::

    from conflicting_bundles import runs

    with runs.open_run(out, command="cbundles train", resume=resume, force=force,
                       config=cfg.to_dict(), owned=runs.RUN_FILES + runs.RUN_DIRS,
                       runtime_keys=("epochs", "device")) as rd:
        if rd.mode is runs.RunMode.RESUME: ...   # rd.stored_config: the config.json found
        runs.write_json(rd.path / runs.CONFIG, cfg.to_dict())
        ...

What :func:`open_run` does, in this order (each refusal is a :class:`RunDirError` whose message
says what to do; nothing is deleted or written before all checks passed):

1. ``path`` must be a folder or absent (created, with parents). If it cannot be created or
   written (read-only file system, no permission, disk full), the error says so before any
   work is done.
2. The lock: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``path/.lock``, which then holds
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

   Temporary files of interrupted atomic writes (``.NAME.*.tmp``) in the folder and its owned
   sub-folders are removed once the lock is held.

:meth:`RunDir.close` (or leaving the ``with`` block) releases the lock; a folder that
open_run created and that holds nothing but the lock file is removed again, so a command that
fails before writing leaves nothing behind. :func:`locked` is the lock alone, as a plain
context manager.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .runs import CONFIG, RunDirError, read_json

__all__ = [
    "LOCK_FILE",
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

LOCK_FILE = ".lock"


class RunInUseError(RunDirError):
    """Another live process holds the folder's lock. ``holder``: what its .lock says."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class ConfigMismatchError(RunDirError, ValueError):
    """``--resume`` with a configuration that differs from the stored one."""


class RunMode(enum.Enum):
    NEW = "new"
    RESUME = "resume"
    OVERWRITE = "overwrite"


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create folder ``path`` (with parents) and write and remove a probe file in it, so that a
    read-only folder or a full disk is reported before any work. Returns the path."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except FileExistsError as e:
        raise RunDirError(f"{what} {p} is a file, not a directory.") from e
    except OSError as e:
        raise RunDirError(
            f"cannot write into {what} {p} ({describe_os_error(e)}): choose a writable "
            f"{what} or free some space."
        ) from e
    return p


def describe_os_error(e: OSError) -> str:
    """'disk full' / 'read-only file system' / 'permission denied' / the OS text."""
    names = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system"}
    names[errno.EACCES] = names[errno.EPERM] = "permission denied"
    return names.get(e.errno or -1, e.strerror or str(e))


# ------------------------------------------------------------------------------------ lock
class RunLock:
    """An exclusive, non-blocking flock on ``folder/.lock`` for this process."""

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RunDirError(
                f"cannot create the lock file {self.path} ({describe_os_error(e)}): choose a "
                "writable --out."
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInUseError(_in_use_message(self.folder, holder), holder) from None
        except OSError as e:  # e.g. a file system without flock: say so instead of guessing
            os.close(fd)
            raise RunDirError(f"cannot lock {self.path} ({describe_os_error(e)}).") from e
        info = {
            "pid": os.getpid(),
            "command": self.command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "host": socket.gethostname(),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as e:
            os.close(fd)
            raise RunDirError(
                f"cannot write into {self.folder} ({describe_os_error(e)}): choose a writable "
                "--out or free some space."
            ) from e
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the file stays: unlinking a lock file races with openers
        os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _in_use_message(folder: Path, holder: dict) -> str:
    pid = holder.get("pid")
    if pid is None:
        return f"{folder} is in use by another process: wait for it or choose another --out."
    what = f"{holder.get('command', 'a command')}, since {holder.get('since', '?')}"
    msg = f"{folder} is in use by pid {pid} ({what}): wait for it or choose another --out."
    if not _alive(pid):
        msg += f" (pid {pid} has exited, but a process it started still holds the lock.)"
    return msg


@contextlib.contextmanager
def locked(path: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``path``'s lock (folder created if needed) for the ``with`` block; yields the path.
    Raises RunInUseError when another live process holds it."""
    p = check_writable(path)
    with RunLock(p, command):
        yield p


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
        folders = [self.path, *(p for p in self.existing() if p.is_dir())]
        gone = []
        for folder in folders:
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    gone.append(tmp)
        return gone

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
        if self.created:
            with contextlib.suppress(OSError):
                if [p.name for p in self.path.iterdir()] in ([], [LOCK_FILE]):
                    (self.path / LOCK_FILE).unlink(missing_ok=True)
                    self.path.rmdir()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        rd.remove_stale_temp()
        if resume:
            rd.mode = RunMode.RESUME
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
            rd.mode = RunMode.OVERWRITE
            rd.pending_clear = True
            if not defer_clear:
                rd.clear()
    except BaseException:
        rd.close()
        raise
    return rd
