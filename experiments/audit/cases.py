"""Helpers of the audit rerun (experiments/audit/rerun.py): running `cbundles`, kill triggers,
fixture runs and damaged copies. Every case of /work/shared/audit/README.md that failed at
commit 3f98960 is re-run with these on small synthetic/MNIST runs."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CB = str(Path(sys.executable).with_name("cbundles"))
TB = "Traceback (most recent call last)"
# $B of the audit: one epoch on 200/100 MNIST samples, one thread, quiet
B = "--dataset mnist --epochs 1 --train-limit 200 --test-limit 100 --threads 1 -q".split()
FNN = ["--model", "fnn", "--width", "5", "--depth", "2"]
AT = (
    "--dataset mnist --model fnn --width 10 --depth 40 --epochs 1 --check-epochs 1 "
    "--train-limit 300 --test-limit 100 --threads 1 --seed 0 -q"
).split()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


@dataclass
class Result:
    """What one command did: exit status, whether a traceback was printed, its output."""

    rc: int
    out: str

    @property
    def tb(self) -> bool:
        return TB in self.out

    def first_line(self) -> str:
        lines = [ln.strip() for ln in self.out.splitlines() if ln.strip()]
        err = [ln for ln in lines if ln.lower().startswith("error") or "Error" in ln]
        return ((err or lines or [""])[-1 if self.tb else 0])[:300]

    def clean_fail(self, *fragments: str) -> bool:
        """rc != 0, no traceback, and every fragment (case-insensitive) in the output."""
        low = " ".join(self.out.lower().split())
        return self.rc != 0 and not self.tb and all(f.lower() in low for f in fragments)


def cb(*args: str, cwd: Path, timeout: float = 240) -> Result:
    """Run `cbundles ARGS` in ``cwd``; output is stdout + stderr."""
    try:
        p = subprocess.run(
            [CB, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        return Result(124, f"timeout after {timeout}s: {e.stdout or ''}{e.stderr or ''}")
    return Result(p.returncode, p.stdout + p.stderr)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`cbundles ARGS` in a new session (its own process group), output to a pipe."""
    return subprocess.Popen(
        [CB, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def finish(p: subprocess.Popen, timeout: float = 240) -> Result:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return Result(124, out or "")
    return Result(p.returncode, out or "")


def kill_when(p: subprocess.Popen, pattern: str, cwd: Path, timeout: float = 120) -> bool:
    """SIGKILL ``p``'s process group as soon as a file matching ``pattern`` exists (polled
    every 0.5 ms); False when ``p`` ended first."""
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        if glob.glob(str(cwd / pattern)):
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return True
        time.sleep(0.0005)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    return False


def train_fixture(cwd: Path, out: str, *extra: str, epochs: int = 1) -> Path:
    """A small trained FNN 10x3 run (MNIST 200/100)."""
    args = ["train", "--model", "fnn", "--width", "10", "--depth", "3", *B, "--out", out]
    args[args.index("--epochs") + 1] = str(epochs)
    r = cb(*args, *extra, cwd=cwd)
    if r.rc != 0:
        raise SystemExit(f"fixture {out} failed: {r.out[-2000:]}")
    return cwd / out


def damaged_copy(good: Path, dst: Path, kind: str) -> Path:
    """A copy of run ``good`` with one file damaged: trunc_last, trunc_best, zero_last,
    garbage_last, bad_arch or bad_config (the audit's runsbad/ set)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(good, dst)
    ck = dst / "checkpoints"
    if kind.startswith("trunc_"):
        f = ck / f"{kind[6:]}.pt"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif kind == "zero_last":
        for n in ("last.pt", "best.pt"):
            (ck / n).write_bytes(b"")
    elif kind == "garbage_last":
        junk = os.urandom(100_000)
        for n in ("last.pt", "best.pt"):
            (ck / n).write_bytes(junk)
    elif kind == "bad_arch":
        (dst / "arch.json").write_text((good / "arch.json").read_text()[:20])
    elif kind == "bad_config":
        (dst / "config.json").write_text("not json\n")
    return dst


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if st[0] != "Z":
                kids.setdefault(int(st[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pids: list[int]) -> list[int]:
    live = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                live.append(pid)
        except OSError:
            pass
    return live


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None
