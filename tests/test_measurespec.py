"""MeasureSpec: one measurement context shared by train's meter and measure_run."""

from __future__ import annotations

import pytest

from conflicting_bundles import runs
from conflicting_bundles.data import iterate, load_dataset
from conflicting_bundles.measurespec import MeasureSpec
from conflicting_bundles.train import TrainConfig, measure_run, train


def test_from_config_and_overrides():
    cfg = TrainConfig(lr=2e-3, batch_size=32, criterion="raw", measure_kind="hidden")
    spec = MeasureSpec.from_config(cfg)
    assert (spec.lr, spec.batch_size, spec.criterion, spec.kind, spec.n_samples) == (
        2e-3,
        32,
        "raw",
        "hidden",
        64,
    )
    assert MeasureSpec.from_config(cfg.to_dict(), n_samples=512, criterion=None).n_samples == 512
    assert MeasureSpec.from_config(TrainConfig(measure_samples=0)).n_samples == 64
    assert spec.to_dict()["criterion"] == "raw"
    with pytest.raises(ValueError, match="unknown MeasureSpec field"):
        MeasureSpec.from_config(cfg, samples=3)
    with pytest.raises(ValueError, match="unknown criterion"):
        MeasureSpec(criterion="fuzzy")
    with pytest.raises(ValueError, match="lr > 0"):
        MeasureSpec(lr=0.0)


def test_train_meter_and_measure_run_use_the_same_context(tmp_path, tiny_config):
    out = tmp_path / "r"
    res = train(tiny_config(out, epochs=1, lr=3e-3, batch_size=16, measure_all_layers=True))
    spec = MeasureSpec.from_run(out)
    assert (spec.lr, spec.batch_size) == (3e-3, 16)
    model, _ = runs.load_model(out)
    ds = load_dataset("synthetic", "train", limit=256)
    x, y = next(iterate(ds, 64, shuffle=False, augment=False))
    by_spec = spec.run(model, x, y, num_classes=10)
    layers = [r for r in runs.read_csv(out / "layers.csv") if r["epoch"] == 1]
    assert [(r.name, r.num_bundles, r.entropy) for r in by_spec] == [
        (r["layer"], r["num_bundles"], r["entropy"]) for r in layers
    ]
    rows = measure_run(out, n_samples=64, margin=False, write=False)
    assert [(r["layer"], r["num_bundles"], r["entropy"]) for r in rows] == [
        (r.name, r.num_bundles, r.entropy) for r in by_spec
    ]
    assert rows[0]["lr"] == 3e-3 and rows[0]["batch_size"] == 16
    assert spec.replace(lr=1.0).to_dict()["lr"] == 1.0 and res.status == "completed"


def test_measure_run_lr_and_batch_size_overrides(tmp_path, tiny_config):
    out = tmp_path / "r"
    train(tiny_config(out, epochs=1, lr=3e-3, batch_size=16))
    at_run = measure_run(out, n_samples=64, write=False)
    given = measure_run(out, n_samples=64, write=False, lr=3e-2)
    assert at_run[0]["lr_source"] == "run" and given[0]["lr_source"] == "given"
    assert given[0]["lr"] == 3e-2 and given[0]["batch_size_source"] == "run"
    # the margin is in units of the resolution q = ulp(w_max) * bs / lr: 10x the lr, 10x it
    for a, b in zip(at_run, given, strict=True):
        assert b["margin"] == pytest.approx(10 * a["margin"], rel=1e-6)
