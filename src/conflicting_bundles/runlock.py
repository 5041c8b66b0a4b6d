"""The lock of a run folder and the marker that makes a folder this tool's run.

:class:`RunLock` is an exclusive, non-blocking ``flock`` on ``FOLDER/.lock`` (opened without
following a link and only as a regular file), holding ``pid``, ``command``, ``since`` and
``host`` as JSON. :data:`MARKER` (``.cbundles-run.json``: ``{"format": 1, "command": ...}``)
is written once a command has accepted a folder; a folder marked by another command is refused,
and ``--force`` deletes only in a marked folder, so a user's own folder is never taken for a
run (issue 23). See :mod:`conflicting_bundles.rundir` for the run-directory lifecycle.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .runs import RunDirError, atomic_write_text
from .safefile import read_bounded

__all__ = [
    "LOCK_FILE",
    "MARKER",
    "RunInUseError",
    "RunLock",
    "check_writable",
    "describe_os_error",
    "locked",
    "read_marker",
    "remove_if_bare",
]

LOCK_FILE = ".lock"
MARKER = ".cbundles-run.json"  # {"format": 1, "command": "cbundles train"}: this tool's run
MARKER_FORMAT = 1


class RunInUseError(RunDirError):
    """Another live process holds the folder's lock. ``holder``: what its .lock says."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


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
        self.marker: dict | None = None  # the folder's marker as found when the lock was taken

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        fd = _open_lock(self.path)
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
        try:
            self.marker = read_marker(self.folder)
            if self.marker is not None and self.marker.get("command") != self.command:
                raise RunDirError(
                    f"{self.folder} holds a run of {self.marker.get('command')} (its {MARKER}); "
                    f"{self.command} never writes into another command's folder: choose "
                    "another --out."
                )
        except BaseException:
            self.release()
            raise
        return self

    def mark(self) -> None:
        """Write the folder's marker (this command's run lives here), once the run is
        accepted; a folder without one is never taken for a run of this tool by --force."""
        if self.marker is None:
            self.marker = {"format": MARKER_FORMAT, "command": self.command}
            atomic_write_text(self.folder / MARKER, json.dumps(self.marker) + "\n")

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


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, opened without following a link and only as a regular
    file: a received folder whose .lock points elsewhere must not truncate that file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RunDirError(
                f"{path} is a symbolic link; a run folder's lock is never opened through a "
                "link (it would truncate the file it points to): remove it, or choose another "
                "--out."
            ) from None
        raise RunDirError(
            f"cannot create the lock file {path} ({describe_os_error(e)}): choose a writable --out."
        ) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunDirError(
            f"{path} is not a regular file: remove it (it is no lock of this tool), or choose "
            "another --out."
        )
    return fd


def read_marker(folder: Path) -> dict | None:
    """The folder's marker ({"format", "command"}) or None; RunDirError when it is damaged
    (read as a bounded regular file, never through a link)."""
    p = folder / MARKER
    if not (p.exists() or p.is_symlink()):
        return None
    try:
        data = json.loads(read_bounded(p, 4096, "run marker").decode())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # UnsafeFileError is a ValueError
        raise RunDirError(
            f"{p} is damaged ({e}); it marks a folder as a run of this tool: remove it only if "
            "the folder is yours, or choose another --out."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise RunDirError(f"{p} is not a run marker of this tool; choose another --out.")
    return data


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
def locked(path: str | os.PathLike, command: str, mark: bool = True) -> Iterator[RunLock]:
    """Hold ``path``'s lock (folder created if needed) for the ``with`` block; yields the
    lock. Raises RunInUseError when another live process holds it, RunDirError when the folder
    holds another command's run. ``mark``: write the folder's marker at once (else the caller
    calls ``lock.mark()`` once it accepted the folder)."""
    created = not Path(path).exists()
    p = check_writable(path)
    try:
        with RunLock(p, command) as lock:
            if mark:
                lock.mark()
            yield lock
    finally:
        remove_if_bare(p, created)


def remove_if_bare(folder: Path, created: bool) -> None:
    """A command that wrote nothing leaves no trace: when ``folder`` holds nothing but its
    lock and marker, the marker goes, and a folder the command ``created`` goes too."""
    with contextlib.suppress(OSError):
        if {p.name for p in folder.iterdir()} <= {LOCK_FILE, MARKER}:
            (folder / MARKER).unlink(missing_ok=True)
            if created:
                (folder / LOCK_FILE).unlink(missing_ok=True)
                folder.rmdir()
