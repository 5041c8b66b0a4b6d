"""Run-directory lifecycle (rundir.py via runs): lock, new / resume / overwrite, writability,
file permissions."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conflicting_bundles import rundir, runs

HOLD_SCRIPT = """
import sys, time
from conflicting_bundles import rundir
with rundir.locked(sys.argv[1], "cbundles test-holder", mark=False):
    print("locked", flush=True)
    time.sleep(60)
"""


def hold_lock(path):
    """A child process holding ``path``'s lock; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_holder_and_names_it(tmp_path):
    out = tmp_path / "run"
    proc = hold_lock(out)
    try:
        with pytest.raises(rundir.RunInUseError) as err:
            rundir.open_run(out, command="cbundles train")
        msg = str(err.value)
        assert f"in use by pid {proc.pid} (cbundles test-holder, since " in msg
        assert "wait for it or choose another --out" in msg
        assert err.value.holder["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()
    # The kernel released the dead holder's flock: the stale .lock is taken over.
    with rundir.open_run(out, command="cbundles train") as rd:
        info = json.loads((out / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["command"] == "cbundles train"
        assert rd.mode is rundir.RunMode.NEW
    assert (out / ".lock").read_text() == ""  # released: the holder's record is cleared


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with rundir.locked(tmp_path, "first"):
        with pytest.raises(rundir.RunInUseError, match="first"):
            with rundir.locked(tmp_path, "second"):
                pass
    with rundir.locked(tmp_path, "third"):
        pass


def test_new_overwrite_and_refusal_touch_only_owned_files(tmp_path):
    owned = ("config.json", "summary.json", "checkpoints", "step_*.json")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "step_001.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    (tmp_path / "notes.json").write_text("mine")
    with pytest.raises(
        runs.RunDirError, match=r"already holds a run \(seed 0\).*--resume.*--force"
    ):
        rundir.open_run(tmp_path, command="c", owned=owned, describe="seed 0")
    assert (tmp_path / "config.json").exists()
    # Files named like a run's but no marker of this tool: --force deletes nothing.
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(runs.RunDirError, match=r"no \.cbundles-run\.json.*deletes nothing"):
        rundir.open_run(tmp_path, command="c", owned=owned, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    mark(tmp_path, "c")
    with rundir.open_run(tmp_path, command="c", owned=owned, force=True) as rd:
        assert rd.mode is rundir.RunMode.OVERWRITE
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.MARKER, ".lock", "notes.json"]
    with rundir.open_run(tmp_path, command="c", owned=owned) as rd:
        assert rd.mode is rundir.RunMode.NEW


def mark(folder, command):
    """What a run of ``command`` leaves in its folder: the marker."""
    (folder / rundir.MARKER).write_text(json.dumps({"format": 1, "command": command}))


def test_deferred_clear(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    mark(tmp_path, "c")
    rd = rundir.open_run(tmp_path, command="c", owned=("a.csv",), force=True, defer_clear=True)
    assert rd.pending_clear and (tmp_path / "a.csv").exists()
    rd.clear()
    rd.close()
    assert not (tmp_path / "a.csv").exists()


def test_resume_checks_the_stored_config(tmp_path):
    with pytest.raises(runs.RunDirError, match="nothing to resume"):
        rundir.open_run(tmp_path / "none", command="c", resume=True)
    assert not (tmp_path / "none").exists()
    runs.write_json(tmp_path / "config.json", {"seed": 0, "lr": 0.001, "epochs": 3})
    with pytest.raises(rundir.ConfigMismatchError) as err:
        rundir.open_run(
            tmp_path,
            command="c",
            resume=True,
            config={"seed": 1, "lr": 0.01, "epochs": 9, "dataset": "mnist"},
            runtime_keys=("epochs",),
            defaults={"dataset": "mnist"},
        )
    msg = str(err.value)
    assert "seed: run has 0, given 1" in msg and "lr: run has 0.001, given 0.01" in msg
    assert "epochs" not in msg.split("(only")[0] and "dataset" not in msg
    assert isinstance(err.value, ValueError)  # callers catching ValueError still see it
    with rundir.open_run(
        tmp_path, command="c", resume=True, config={"seed": 0, "epochs": 5}, runtime_keys=["epochs"]
    ) as rd:
        assert rd.resumed and rd.stored_config["lr"] == 0.001


def test_a_folder_created_for_a_refused_command_is_removed(tmp_path):
    out = tmp_path / "new"
    with rundir.open_run(out, command="c"):
        assert out.is_dir()
    assert not out.exists()  # nothing was written
    with rundir.open_run(out, command="c") as rd:
        runs.write_json(rd.path / "config.json", {})
    assert (out / "config.json").exists()


def test_file_instead_of_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(runs.RunDirError, match="is a file, not a directory"):
        rundir.open_run(tmp_path / "f", command="c")


def test_unwritable_output_is_reported_before_work(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(runs.RunDirError, match="disk full.*free some space"):
        rundir.open_run(tmp_path / "x", command="c")
    monkeypatch.undo()
    ro = tmp_path / "ro"
    ro.mkdir()

    def readonly(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("builtins.open", readonly)
    with pytest.raises(runs.RunDirError, match="read-only file system"):
        rundir.check_writable(ro)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        p = runs.write_json(tmp_path / "s.json", {"a": 1})
        q = runs.write_csv(tmp_path / "m.csv", [{"a": 1}])
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777, q.stat().st_mode & 0o777) == (mode, mode)


def test_kill_9_of_the_holder_frees_the_lock(tmp_path):
    proc = hold_lock(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with rundir.locked(tmp_path, "after"):
                break
        except rundir.RunInUseError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    runs.write_json(p, {"a": 1})

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        runs.write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_csv_roundtrip_and_nan_in_json(tmp_path):
    rows = [{"a": 1, "b": 0.1 + 0.2, "c": None, "d": True, "e": "x"}, {"a": 2, "f": 1e-300}]
    runs.write_csv(tmp_path / "t.csv", rows)
    back = runs.read_csv(tmp_path / "t.csv")
    assert back[0] == {**rows[0], "f": None} and back[1]["f"] == 1e-300
    runs.write_json(tmp_path / "n.json", {"v": math.nan})
    assert json.loads((tmp_path / "n.json").read_text()) == {"v": None}


def test_a_folder_of_runs_names_the_runs_inside(tmp_path):
    """`measure runs/main` (a search's output) says which run folders to pass instead."""
    search = tmp_path / "search"
    for run in ("runs/fnn-2", "runs/fnn-4"):
        (search / run).mkdir(parents=True)
        (search / run / runs.CONFIG).write_text("{}")
        (search / run / runs.ARCH).write_text("{}")
    (search / "autotune" / "fresh" / "steps" / "step_000").mkdir(parents=True)
    (search / "autotune" / "fresh" / runs.AUTOTUNE_STATE).write_text("{}")
    (search / "plots").mkdir()
    found = runs.runs_inside(search)
    assert found == [search / "autotune/fresh", search / "runs/fnn-2", search / "runs/fnn-4"]
    assert runs.runs_inside(search, depth=1) == []
    with pytest.raises(runs.RunDirError, match="holds 3: .*autotune/fresh, .*runs/fnn-2"):
        runs.load_config(search)
    with pytest.raises(runs.RunDirError, match="it is not a run directory \\(written by"):
        runs.load_config(search / "plots")
