"""Sweeps: the YAML spec and its errors, where grid values land, the kind registry, serial sweeps
of every kind (auto-tune: its real outcome and resume after a kill; lesion on an auto-tune
folder; grid cells with grid.csv's columns), and real sweeps on a local Ray instance (2 CPUs):
two tiny training trials, resume without rerunning, retries and failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from conflicting_bundles import rundir, runs
from conflicting_bundles.autotune import AutotuneConfig, autotune
from conflicting_bundles.cli import app
from conflicting_bundles.sweep import (
    KINDS,
    SweepSpec,
    TrialKind,
    load_spec,
    plan,
    register_kind,
    run_sweep,
    summarize_results,
)
from conflicting_bundles.train import TrainConfig, train

TINY = {
    "model": "fnn",
    "model_kwargs": {"width": 8, "depth": 2},
    "dataset": "synthetic",
    "epochs": 1,
    "train_limit": 96,
    "test_limit": 64,
    "tensorboard": False,
}


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ spec
def test_spec_from_yaml(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            "kind: autotune\n"
            "base: {check_epochs: 3, train: {model: fnn, lr: 1e-3, model_kwargs: {width: 4}}}\n"
            "grid: {seed: [0, 1], dataset: synthetic}\n"
            "resources: {cpus: 2, gpus: 0.5}\n"
            "retries: 1\n"
            "out: x\n",
        )
    )
    assert spec.kind == "autotune" and spec.retries == 1 and spec.out == "x"
    assert spec.base["train"]["lr"] == 1e-3  # PyYAML reads 1e-3 as a string; we do not
    assert spec.grid == {"seed": [0, 1], "dataset": ["synthetic"]}  # a scalar is one value
    assert (spec.resources.cpus, spec.resources.gpus) == (2, 0.5)


@pytest.mark.parametrize(
    "text, match",
    [
        ("kind: nope\n", "unknown kind 'nope'"),
        ("base: {}\n", "`kind` is missing"),
        ("kind: train\nseeds: [1]\n", "unknown key.*seeds"),
        ("kind: train\ngrid: {seed: []}\n", "grid key.*seed have no values"),
        ("kind: train\nresources: {cpu: 1}\n", "`resources` takes cpus and gpus"),
        ("kind: train\nresources: {gpus: -1}\n", "resources.gpus must be a number >= 0"),
        ("kind: train\nretries: -1\n", "retries must be an integer >= 0"),
        ("kind: [train\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
    ],
)
def test_spec_errors_are_clear(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_spec(write_spec(tmp_path / "bad.yaml", text))


def test_missing_spec_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_grid_values_land_in_the_right_config(tmp_path):
    spec = SweepSpec(
        kind="autotune",
        base={"check_epochs": 2, "train": dict(TINY)},
        grid={"seed": [0, 1], "variant": ["all"], "depth": [3], "train.lr": [0.01]},
        out=str(tmp_path / "sw"),
    )
    trials = plan(spec)
    assert [t.name for t in trials] == [
        "seed-0_variant-all_depth-3_train.lr-0.01",
        "seed-1_variant-all_depth-3_train.lr-0.01",
    ]
    c = trials[1].config
    assert c["variant"] == "all" and c["check_epochs"] == 2  # AutotuneConfig fields
    assert c["train"]["seed"] == 1 and c["train"]["lr"] == 0.01  # TrainConfig fields
    assert c["train"]["model_kwargs"] == {"width": 8, "depth": 3}  # model arguments
    assert c["train"]["progress"] is False and c["train"]["threads"] == 1
    assert trials[0].dir == str((tmp_path / "sw" / "trials" / trials[0].name).resolve())
    assert spec.base["train"]["model_kwargs"] == {"width": 8, "depth": 2}  # base untouched


def test_lesion_seed_repeats_training_and_lesion_draws(tmp_path):
    spec = SweepSpec(
        kind="lesion",
        base={"train": dict(TINY, model="resnet", model_kwargs={"blocks": [1, 0, 0, 0]})},
        grid={"seed": [3], "repeats": [2]},
        out=str(tmp_path),
    )
    (c,) = [t.config for t in plan(spec)]
    assert c["lesion"] == {"seed": 3, "repeats": 2} and c["train"]["seed"] == 3


@pytest.mark.parametrize(
    "spec, match",
    [
        (SweepSpec("train", dict(TINY), {"widht": [4]}), "widht is neither a config field"),
        (SweepSpec("train", dict(TINY), {"lr": [-1.0]}), "lr must be a positive number"),
        (SweepSpec("train", dict(TINY), {"dataset": ["mnsit"]}), "unknown dataset 'mnsit'"),
        (SweepSpec("autotune", {"varaint": "all"}), "unknown auto-tune field.*varaint"),
        (SweepSpec("autotune", {"train": TINY}, {"variant": ["x"]}), "variant must be one of"),
        (SweepSpec("lesion", {}), "exactly one of `run`"),
        (SweepSpec("lesion", {"run": "/nonexistent"}), "holds no training run"),
        (SweepSpec("train", dict(TINY), {"model_kwargs": [3]}), "model_kwargs must be a mapping"),
        (SweepSpec("train", dict(TINY), {"width": ["five"]}), "width must be an integer"),
        (SweepSpec("train", dict(TINY), {"train_limit": [1.5]}), "train_limit must be an int"),
        (
            SweepSpec("train", dict(TINY), {"lr": ["abc"]}),
            "lr must be a number, got the string 'abc'",
        ),
    ],
)
def test_plan_refuses_bad_trials_before_running(spec, match):
    with pytest.raises(ValueError, match=match):
        plan(spec)


def test_distinct_values_that_clean_alike_get_distinct_names(tmp_path):
    spec = SweepSpec("train", dict(TINY), {"data_dir": ["a/b", "a_b"]}, out=str(tmp_path))
    names = [t.name for t in plan(spec)]
    assert len(set(names)) == 2 and all(n.startswith("data_dir-a_b-") for n in names)


def test_summary_groups_over_seeds():
    rows = [
        {"trial": "a", "status": "completed", "seed": 0, "ds": "x", "acc": 0.5, "blocks": "[1]"},
        {"trial": "b", "status": "completed", "seed": 1, "ds": "x", "acc": 0.7, "blocks": "[2]"},
        {"trial": "c", "status": "failed", "seed": 0, "ds": "y"},
    ]
    s = summarize_results(rows, ["seed", "ds"], ("acc", "blocks"))
    assert [g["ds"] for g in s] == ["x", "y"]
    assert s[0]["trials"] == 2 and s[0]["completed"] == 2
    assert s[0]["acc"] == pytest.approx(0.6) and s[0]["acc_std"] == pytest.approx(0.1)
    assert s[0]["blocks"] == "[1] | [2]"
    assert s[1]["completed"] == 0 and s[1]["acc"] is None


def test_register_kind_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_kind(KINDS["train"])
    assert register_kind(KINDS["train"], replace=True) is KINDS["train"]


def test_a_repeated_grid_value_is_one_trial(tmp_path):
    spec = SweepSpec("train", dict(TINY), {"seed": [0, 0, 1]}, out=str(tmp_path))
    assert [t.name for t in plan(spec)] == ["seed-0", "seed-1"]


# ------------------------------------------------------------------- serial sweeps of each kind
QUIET = Console(quiet=True)
AT_TRAIN = dict(TINY, model_kwargs={"width": 6, "depth": 12}, epochs=2, train_limit=256)


class Killed(BaseException):
    """Stands for SIGKILL at one exact point."""


def test_autotune_trials_resume_after_a_kill_and_report_their_outcome(tmp_path, monkeypatch):
    spec = SweepSpec(
        "autotune", {"check_epochs": 2, "train": AT_TRAIN}, {"seed": [0]}, out=str(tmp_path / "s")
    )
    real = runs.write_json

    def write_json(path, obj):  # killed between step 0's decision.json and its summary.json
        real(path, obj)
        if str(path).endswith("step_000/decision.json"):
            monkeypatch.setattr(runs, "write_json", real)
            raise Killed(str(path))

    monkeypatch.setattr(runs, "write_json", write_json)
    with pytest.raises(Killed):
        run_sweep(spec, serial=True, console=QUIET)
    res = run_sweep(spec, serial=True, console=QUIET)  # resumed, not an "error" row
    (row,) = res.rows
    assert row["status"] == "completed" and not res.failed
    direct = autotune(
        AutotuneConfig(out=str(tmp_path / "d"), check_epochs=2, train={**AT_TRAIN, "seed": 0}),
        console=QUIET,
    )
    assert row["final_blocks"] == str(direct.summary["final_blocks"])
    assert row["test_acc"] == direct.test_acc and row["num_prunes"] == len(direct.steps) - 1
    # a search whose step diverged is a failed trial, not "completed"
    nan = dict(AT_TRAIN, lr=1e3, model_kwargs={"width": 10, "depth": 5})
    bad = SweepSpec(
        "autotune",
        {"check_epochs": 1, "train": nan},
        {"seed": [0]},
        out=str(tmp_path / "nan"),
    )
    res = run_sweep(bad, serial=True, console=QUIET)
    assert [r["status"] for r in res.rows] == ["diverged"] and res.failed


def test_lesion_trials_on_an_auto_tune_folder(tmp_path):
    at = tmp_path / "at"
    direct = autotune(AutotuneConfig(out=str(at), check_epochs=2, train=AT_TRAIN), console=QUIET)
    spec = SweepSpec(
        "lesion",
        {"run": str(at), "lesion": {"samples": 32}},
        {"repeats": [1]},
        out=str(tmp_path / "les"),
    )
    (t,) = plan(spec)
    assert t.config["run"] == str((at / "steps" / f"step_{len(direct.steps) - 1:03d}").resolve())
    res = run_sweep(spec, serial=True, console=QUIET)
    (row,) = res.rows
    assert row["status"] == "completed"
    assert row["num_blocks"] == direct.final_arch["depth"]
    s = json.loads((Path(t.dir) / "lesion_summary.json").read_text())
    assert row["removable_all"] == s["removable_all_blocks"]["fraction_of_blocks"]


def test_a_sweep_into_a_locked_folder_is_refused(tmp_path):
    spec = SweepSpec("train", dict(TINY), {"seed": [0]}, out=str(tmp_path / "s"))
    with rundir.locked(tmp_path / "s", "another sweep"):
        with pytest.raises(rundir.RunInUseError, match="in use by pid"):
            run_sweep(spec, serial=True, console=QUIET)
    assert not (tmp_path / "s" / "trials").exists()


# ------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_local():
    import ray  # the `dist` extra, which `make test` installs

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_tiny_trials_on_ray_then_resume(ray_local, tmp_path):
    spec = SweepSpec("train", dict(TINY), {"seed": [0, 1]}, out=str(tmp_path / "sw"))
    res = run_sweep(spec)
    assert (res.ran, res.cached) == (2, 0)
    assert [r["status"] for r in res.rows] == ["completed", "completed"]
    out = tmp_path / "sw"
    csv_rows = runs.read_csv(out / "results.csv")
    assert [r["trial"] for r in csv_rows] == ["seed-0", "seed-1"]
    # each trial ran exactly its config: the same figures as a direct run
    direct = train(TrainConfig(**TINY, seed=1, progress=False, out=str(tmp_path / "direct")))
    assert csv_rows[1]["test_acc"] == direct.summary["test_acc"]
    assert csv_rows[1]["bundle_entropy_final"] == direct.summary["bundle_entropy_final"]
    for name in ("sweep.json", "sweep.png", "report.html"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "sweep.json").read_text())["summary"]
    assert summary[0]["trials"] == 2 and summary[0]["completed"] == 2

    # resume: finished trials are read back, not rerun; a new seed runs alone
    stamp = os.stat(out / "trials" / "seed-0" / "summary.json").st_mtime_ns
    spec.grid = {"seed": [0, 1, 2]}
    again = run_sweep(spec)
    assert (again.ran, again.cached) == (1, 2)
    assert [r["cached"] for r in again.rows] == [True, True, False]
    assert os.stat(out / "trials" / "seed-0" / "summary.json").st_mtime_ns == stamp
    assert [r["trial"] for r in runs.read_csv(out / "results.csv")] == [
        "seed-0",
        "seed-1",
        "seed-2",
    ]
    with pytest.raises(ValueError, match="different base"):
        run_sweep(SweepSpec("train", dict(TINY, epochs=2), {"seed": [0]}, out=str(out)))


def test_failed_trials_are_retried_then_reported(ray_local, tmp_path, monkeypatch):
    """A custom kind whose trial crashes once (retried, then completes), always (failed after
    1 + retries attempts), or has bad input (an error row at once: a retry cannot fix it)."""

    def build(spec, params):
        return dict(params)

    def run(trial):  # runs in a Ray worker: counts its attempts in the trial's directory
        d = Path(trial.dir)
        d.mkdir(parents=True, exist_ok=True)
        with (d / "attempts").open("a") as f:
            f.write("x\n")
        n = len((d / "attempts").read_text().split())
        mode = trial.config["mode"]
        if mode == "bad":
            raise ValueError("bad input")
        if mode == "broken" or (mode == "flaky" and n == 1):
            raise RuntimeError(f"simulated crash {n}")
        (d / "done.json").write_text(json.dumps({"attempts": n}))

    def row(trial):
        return json.loads((Path(trial.dir) / "done.json").read_text())

    monkeypatch.setitem(KINDS, "flaky", TrialKind("flaky", "done.json", build, run, row))
    spec = SweepSpec(
        "flaky", {}, {"mode": ["flaky", "broken", "bad"]}, out=str(tmp_path / "f"), retries=1
    )
    res = run_sweep(spec)
    by = {r["mode"]: r for r in res.rows}
    assert by["flaky"]["status"] == "completed" and by["flaky"]["attempts"] == 2
    assert by["broken"]["status"] == "failed"
    assert "simulated crash 2" in by["broken"]["error"]
    assert by["bad"]["status"] == "error" and "ValueError: bad input" in by["bad"]["error"]
    trials = tmp_path / "f" / "trials"
    attempts = {m: len((trials / f"mode-{m}" / "attempts").read_text().split()) for m in by}
    assert attempts == {"flaky": 2, "broken": 2, "bad": 1}
    assert [r["status"] for r in runs.read_csv(tmp_path / "f" / "results.csv")] == [
        "completed",
        "failed",
        "error",
    ]
    assert {r["trial"] for r in res.failed} == {"mode-broken", "mode-bad"}


# ------------------------------------------------------------------------------------ CLI
def test_cli_dry_run_serial_and_errors(tmp_path):
    spec = write_spec(
        tmp_path / "s.yaml",
        "kind: grid-cell\n"
        f"base: {json.dumps({k: v for k, v in TINY.items() if k != 'model_kwargs'})}\n"
        "grid: {depth: [1, 2], width: [3]}\n"
        f"out: {tmp_path / 'g'}\n",
    )
    r = CliRunner().invoke(app, ["sweep", str(spec), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "depth-1_width-3  (to run)" in r.output and "depth-2_width-3  (to run)" in r.output
    assert not (tmp_path / "g").exists()  # a dry run writes nothing
    r = CliRunner().invoke(app, ["sweep", str(spec), "--serial"])
    assert r.exit_code == 0, r.output
    rows = runs.read_csv(tmp_path / "g" / "results.csv")
    assert [(x["depth"], x["width"]) for x in rows] == [(1, 3), (2, 3)]
    assert all(isinstance(x["conflicting_init"], bool) for x in rows)
    # the same cells as `cbundles grid`: grid.csv's columns, measure.csv, the heat map
    cell = runs.read_csv(next((tmp_path / "g" / "trials").glob("depth-2*")) / "measure.csv")
    assert len(cell) == 2 and {"test_acc", "first_conflicting_layer"} <= set(rows[0])
    assert (tmp_path / "g" / "sweep.png").is_file()
    bad = write_spec(tmp_path / "bad.yaml", "kind: train\ngrid: {lr: [-1]}\n")
    r = CliRunner().invoke(app, ["sweep", str(bad)])
    assert r.exit_code == 1 and "lr must be a positive number" in r.output
