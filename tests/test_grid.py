"""Width x depth grid: a 2 x 2 grid trained in two processes, its files, resume (finished cells
are skipped, interrupted ones resumed), refusals, the boundary drawing, the CLI.

Cells are tiny FNNs trained 1 epoch on 256 synthetic samples."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conflicting_bundles import runs
from conflicting_bundles.cli import app
from conflicting_bundles.grid import (
    GridConfig,
    _boundary_segments,
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
    """The 2 x 2 grid, trained once in 2 worker processes."""
    out = tmp_path_factory.mktemp("grid") / "g"
    res = run_grid(grid_cfg(out, workers=2), progress=False)
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
        assert r["test_acc_pct"] == pytest.approx(100 * s["test_acc"])  # percent, not a fraction
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
    # (16, 1): killed before its first checkpoint: only config.json is left
    d = cell_dir(out, 16, 1)
    for p in d.iterdir():
        if p.name != "config.json":
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
    with pytest.raises(ValueError, match="train_limit"):
        run_grid(grid_cfg(out, train_limit=128), progress=False)


def test_boundary_segments_and_input_checks():
    flags = np.array([[0.0, 1.0], [1.0, 1.0]])  # rows = depths, columns = widths
    segs = _boundary_segments(flags)
    assert sorted(segs) == [((-0.5, 0.5), (0.5, 0.5)), ((0.5, -0.5), (0.5, 0.5))]
    assert _boundary_segments(np.array([[np.nan, 1.0]])) == []
    with pytest.raises(ValueError, match="widths"):
        GridConfig(widths=())
    with pytest.raises(ValueError, match=">= 1"):
        GridConfig(depths=(0, 1))
    assert parse_ints("5, 10,25", "--widths") == (5, 10, 25)
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_ints("5,x", "--widths")


def test_cli_grid(tmp_path):
    args = ["grid", "--widths", "4", "--depths", "1,2", "--dataset", "synthetic", "--epochs", "1"]
    args += ["--train-limit", "128", "--test-limit", "64", "--workers", "1", "--out", str(tmp_path)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "test accuracy (%) by depth x width" in flat(r.output)
    assert len(runs.read_csv(tmp_path / "grid.csv")) == 2
    r = CliRunner().invoke(app, ["grid", "--widths", "4,y", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "comma-separated integers" in flat(r.output)
    r = CliRunner().invoke(app, ["grid", "--dataset", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "unknown dataset" in flat(r.output)
