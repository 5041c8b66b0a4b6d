"""Width x depth grid: a 2 x 2 grid, its files, resume (finished cells are skipped, interrupted
ones resumed), refusals (other settings, a locked folder), worker processes that die with their
parent (a real kill -9), the boundary drawing, the CLI (a failed cell exits 1).

Cells are tiny FNNs trained 1 epoch on 256 synthetic samples."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conflicting_bundles import rundir, runs
from conflicting_bundles.cli import app
from conflicting_bundles.grid import (
    GridConfig,
    boundary_segments,
    cell_dir,
    parse_ints,
    run_grid,
)


def flat(text: str) -> str:
    return " ".join(text.split())


def grid_cfg(out, **kw) -> GridConfig:
    base = dict(
        widths=(3, 16),
        depths=(1, 6),
        dataset="synthetic",
        epochs=1,
        train_limit=256,
        test_limit=128,
        out=str(out),
        workers=1,
    )
    return GridConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The 2 x 2 grid, trained once in this process (the worker pool: the kill test)."""
    out = tmp_path_factory.mktemp("grid") / "g"
    res = run_grid(grid_cfg(out), progress=False)
    return out, res


def test_grid_trains_every_cell_and_writes_the_map(grid):
    out, res = grid
    assert set(res.actions.values()) == {"trained"} and len(res.actions) == 4
    for name in ("grid.csv", "grid_summary.json", "grid.png", "report.html"):
        assert (out / name).is_file(), name
    rows = runs.read_csv(out / "grid.csv")
    assert sorted((r["width"], r["depth"]) for r in rows) == [(3, 1), (3, 6), (16, 1), (16, 6)]
    for r in rows:
        d = cell_dir(out, r["width"], r["depth"])
        s = runs.load_summary(d)
        assert r["test_acc"] == pytest.approx(s["test_acc"])  # a fraction, as train writes it
        assert r["conflicting"] == (s["bundle_entropy_final"] > 0)
        layers = runs.read_csv(d / runs.MEASURE_CSV)
        assert len(layers) == r["depth"]  # every hidden layer of the final net
        first = next((i for i, x in enumerate(layers) if x["conflicting"]), None)
        assert r["first_conflicting_layer"] == first
        # the last hidden layer measured after training is the one summary.json reports
        assert layers[-1]["entropy"] == pytest.approx(s["bundle_entropy_final"])
    summary = json.loads((out / "grid_summary.json").read_text())
    assert summary["num_finished"] == 4
    assert summary["num_conflicting"] == sum(bool(r["conflicting"]) for r in rows)


def test_resume_skips_finished_cells_and_resumes_interrupted_ones(grid):
    out, _ = grid
    cfg = grid_cfg(out)
    stamps = {c: (cell_dir(out, *c) / "summary.json").stat().st_mtime_ns for c in [(3, 1), (16, 6)]}
    # (3, 6): killed after its last checkpoint, before summary.json
    (cell_dir(out, 3, 6) / "summary.json").unlink()
    # (16, 1): killed before its first checkpoint: only config.json (and the marker) is left
    d = cell_dir(out, 16, 1)
    for p in d.iterdir():
        if p.name not in ("config.json", rundir.MARKER):
            p.unlink() if p.is_file() else shutil.rmtree(p)
    res = run_grid(cfg, progress=False)
    assert res.actions == {
        (3, 1): "skipped",
        (16, 6): "skipped",
        (3, 6): "resumed",
        (16, 1): "trained",
    }
    for c, t in stamps.items():
        assert (cell_dir(out, *c) / "summary.json").stat().st_mtime_ns == t  # not retrained
    assert all(r["status"] == "completed" for r in res.rows)
    assert len(runs.load_metrics(cell_dir(out, 3, 6))) == 2  # init + the one epoch, no more
    # more epochs: every cell continues from its checkpoint
    res = run_grid(grid_cfg(out, epochs=2, widths=(3,), depths=(1,)), progress=False)
    assert res.actions == {(3, 1): "resumed"}
    assert runs.load_summary(cell_dir(out, 3, 1))["epochs_completed"] == 2


def test_other_training_config_in_the_same_out_is_refused(grid):
    out, _ = grid
    stamp = (out / "grid.csv").stat().st_mtime_ns
    with pytest.raises(ValueError, match="train_limit: grid has 256, given 128"):
        run_grid(grid_cfg(out, train_limit=128), progress=False)
    with pytest.raises(ValueError, match="lr: grid has 0.001, given 0.01"):
        run_grid(grid_cfg(out, lr=0.01, widths=(5,)), progress=False)  # even for new cells
    assert (out / "grid.csv").stat().st_mtime_ns == stamp
    assert not cell_dir(out, 5, 1).exists()


def test_a_grid_into_a_locked_folder_is_refused(tmp_path):
    with rundir.locked(tmp_path / "g", "another grid"):
        with pytest.raises(rundir.RunInUseError, match="in use by pid"):
            run_grid(grid_cfg(tmp_path / "g"), progress=False)
    assert not (tmp_path / "g" / "cells").exists()


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.subprocess
def test_grid_workers_die_with_their_parent(tmp_path):
    """kill -9 of the grid's process (the OOM killer, say): its worker processes exit too."""
    out = tmp_path / "g"
    code = (
        "from conflicting_bundles.grid import GridConfig, run_grid\n"
        f"run_grid(GridConfig(widths=(16, 32), depths=(8,), dataset='synthetic', epochs=200, "
        f"train_limit=256, test_limit=64, workers=2, out={str(out)!r}), progress=False)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not list(out.glob("cells/*/checkpoints/last.pt")) and time.time() - t0 < 120:
            assert p.poll() is None, "the grid ended before the kill"
            time.sleep(0.1)
        workers = _children(p.pid)
        assert len(workers) >= 2, "two worker processes should be running"
    finally:
        p.kill()
        p.wait()
    t0 = time.time()
    while any(_alive(w) for w in workers) and time.time() - t0 < 20:
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them behind if the test fails
        os.kill(w, signal.SIGKILL)
    assert left == [], "worker processes outlived their parent"


def test_boundary_segments_and_input_checks():
    flags = np.array([[0.0, 1.0], [1.0, 1.0]])  # rows = depths, columns = widths
    segs = boundary_segments(flags)
    assert sorted(segs) == [((-0.5, 0.5), (0.5, 0.5)), ((0.5, -0.5), (0.5, 0.5))]
    assert boundary_segments(np.array([[np.nan, 1.0]])) == []
    with pytest.raises(ValueError, match="widths"):
        GridConfig(widths=())
    with pytest.raises(ValueError, match=">= 1"):
        GridConfig(depths=(0, 1))
    assert parse_ints("5, 10,25", "--widths") == (5, 10, 25)
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_ints("5,x", "--widths")


def test_cli_grid(tmp_path):
    args = ["grid", "--widths", "4", "--depths", "1,2", "--dataset", "synthetic", "--epochs", "1"]
    args += ["--train-limit", "128", "--test-limit", "64", "--workers", "1", "--drop-checkpoints"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "test accuracy (%) by depth x width" in flat(r.output)
    rows = runs.read_csv(tmp_path / "grid.csv")
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert not (cell_dir(tmp_path, 4, 1) / "checkpoints").exists()  # --drop-checkpoints
    assert (cell_dir(tmp_path, 4, 1) / "measure.csv").is_file()  # measured before the drop
    # a cell that cannot be trained: the others are, the grid is written, the exit status is 1
    bad = tmp_path / "bad"
    (bad / "cells").mkdir(parents=True)
    (bad / "cells" / "w4-d1").write_text("not a folder")
    r = CliRunner().invoke(app, [*args, "--out", str(bad)])
    assert r.exit_code == 1, r.output
    assert "1 of 2 cells failed (w4-d1" in flat(r.output)
    assert [x["status"] for x in runs.read_csv(bad / "grid.csv")][1] == "completed"
    r = CliRunner().invoke(app, ["grid", "--widths", "4,y", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "comma-separated integers" in flat(r.output)
    r = CliRunner().invoke(app, ["grid", "--dataset", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "unknown dataset" in flat(r.output)
