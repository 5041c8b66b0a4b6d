"""Seams between commands: an auto-tune folder is accepted wherever a run directory is."""

from __future__ import annotations

from typer.testing import CliRunner


def test_measure_accepts_an_autotune_folder(tmp_path):
    from conflicting_bundles.cli import app

    out = tmp_path / "at"
    args = ["autotune", "--dataset", "synthetic", "--model", "fnn", "--width", "10"]
    args += ["--depth", "3", "--epochs", "1", "--check-epochs", "1", "--train-limit", "256"]
    args += ["--test-limit", "64", "-q", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["measure", str(out), "--samples", "64", "--no-write"])
    assert r.exit_code == 0, r.output
    assert "steps/step_" in r.output.replace("\\", "/")  # it read the final step


def test_measure_refuses_an_unfinished_autotune_folder(tmp_path):
    from conflicting_bundles.autotune import SearchDir
    from conflicting_bundles.cli import app

    out = tmp_path / "at"
    args = ["autotune", "--dataset", "synthetic", "--model", "fnn", "--width", "10"]
    args += ["--depth", "3", "--epochs", "1", "--check-epochs", "1", "--train-limit", "256"]
    args += ["--test-limit", "64", "-q", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    store = SearchDir(out)
    st = store.load()
    st.done = False
    store.save(st)
    r = CliRunner().invoke(app, ["measure", str(out), "--samples", "64", "--no-write"])
    assert r.exit_code != 0
    assert "not finished" in " ".join(r.output.split())
