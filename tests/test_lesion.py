"""Lesion study: statistics on hand examples, position matching, a whole study on a tiny trained
resnet (nothing flagged; blocks made conflicting by zeroing their branch), resume from the
cache, the CLI.

The model: resnet blocks [3, 1, 1, 1] (6 blocks: a.0-a.2 identity, b.0/c.0/d.0 projecting),
width 1/16, trained 1 epoch on 256 synthetic samples."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conflicting_bundles import rundir, runs
from conflicting_bundles.cli import app
from conflicting_bundles.data import iterate, load_dataset
from conflicting_bundles.lesion import (
    Group,
    LesionConfig,
    lesion_run,
    lesion_study,
    matched_controls,
    partial_spearman,
    plans,
    spearman,
)
from conflicting_bundles.lesion import signals as lesion_signals
from conflicting_bundles.train import TrainConfig, train

OUTPUTS = (
    "lesion_blocks.csv",
    "lesion_curves.csv",
    "lesion_corr.csv",
    "lesion_summary.json",
    "lesion.png",
    "lesion_single.png",
    "report.html",
)


def flat(text: str) -> str:
    return " ".join(text.split())  # undo terminal line wrapping


# ------------------------------------------------------------------------------ statistics
def test_partial_spearman_hand_example():
    # ranks x = [1,3,2,4], y = [2,1,4,3], z = [1,2,3,4]: r_xy = 0, r_xz = 0.8, r_yz = 0.6, so
    # the partial correlation is (0 - 0.48) / sqrt(0.36 * 0.64) = -1: both follow z, and what
    # is left after z runs exactly opposite.
    x, y, z = [10, 30, 20, 40], [2.0, 1.0, 4.0, 3.0], [1, 2, 3, 4]
    assert spearman(x, y) == pytest.approx(0.0, abs=1e-12)
    assert spearman(x, z) == pytest.approx(0.8)
    assert spearman(y, z) == pytest.approx(0.6)
    assert partial_spearman(x, y, z) == pytest.approx(-1.0)


def test_partial_spearman_matches_the_closed_form_and_constant_cases():
    rng = np.random.default_rng(0)
    z = rng.normal(size=30)
    x = z + rng.normal(size=30)
    y = z + rng.normal(size=30)
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    expected = (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert partial_spearman(x, y, z) == pytest.approx(expected)
    # x is a monotone function of z: nothing is left to correlate
    assert math.isnan(partial_spearman(np.exp(z), y, z))
    assert math.isnan(spearman([0.0] * 5, [1, 2, 3, 4, 5]))


def test_matched_controls_pick_nearest_positions_without_replacement():
    rng = random.Random(0)
    assert matched_controls([0, 5, 9], [1, 2, 3, 6, 8], rng) == [1, 6, 8]
    # 7 is nearest to both 5 and 6; the second flagged block gets the next nearest free one
    assert matched_controls([5, 6], [7, 30], rng) == [7, 30]
    # ties are broken at random, both neighbours occur
    picks = {matched_controls([4], [3, 5], random.Random(s))[0] for s in range(20)}
    assert picks == {3, 5}
    with pytest.raises(ValueError, match="one distinct block per flagged block"):
        matched_controls([1, 2], [3], rng)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="repeats"):
        LesionConfig(repeats=0)
    with pytest.raises(ValueError, match="unknown criterion"):
        LesionConfig(flag_criteria=("bogus",))
    with pytest.raises(ValueError, match="0.01 = 1 point"):
        LesionConfig(tolerance=1.0)  # a fraction, not points
    cfg = LesionConfig(criteria=("reference",), flag_criteria=("coarse:16",))
    assert cfg.criteria == ("reference", "coarse:16")  # a flag criterion is always measured
    assert LesionConfig(flag_criteria=("all",)).flag_criteria == cfg_all_names()


def cfg_all_names() -> tuple[str, ...]:
    return LesionConfig().criteria


# ------------------------------------------------------------------------------ the study
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesion") / "run"
    cfg = TrainConfig(
        model="resnet",
        model_kwargs={"blocks": [3, 1, 1, 1], "width_mult": 1 / 16},
        dataset="synthetic",
        epochs=1,
        train_limit=256,
        test_limit=200,
        out=str(out),
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    return out


def data(n_test: int = 200):
    tr = next(
        iterate(load_dataset("synthetic", "train", limit=256), 64, shuffle=False, augment=False)
    )
    te = load_dataset("synthetic", "test", limit=n_test)
    return tr, next(iterate(te, n_test, shuffle=False, augment=False))


def test_no_flagged_block_still_writes_everything_and_says_so(run_dir, tmp_path):
    out = tmp_path / "les"
    cfg = LesionConfig(repeats=3, test_limit=200)
    res = lesion_run(run_dir, cfg, out, progress=False)
    # margin > 1 guarantees reference entropy 0 (docs/method.md §9): nothing can be flagged
    assert all(b["margin"] > 1 for b in res.blocks)
    assert not any(b["flag[reference]"] for b in res.blocks)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    s = json.loads((out / "lesion_summary.json").read_text())
    assert s["no_block_flagged"] is True
    assert "flags no lesionable block" in s["by_criterion"]["reference"]["note"]
    assert s["by_criterion"]["reference"]["removable"]["conflicting"]["k"] == 0
    groups = {(r["criterion"], r["group"]) for r in runs.read_csv(out / "lesion_curves.csv")}
    assert ("-", "all") in groups and ("reference", "non-conflicting") in groups
    assert ("reference", "conflicting") not in groups
    # nothing flagged: "non-conflicting" is "all", drawn with the same seeded sets
    curves = res.curves
    a = [c["test_acc_mean"] for c in curves if c["group"] == "all"]
    nc = [c["test_acc_mean"] for c in curves if c["group"] == "non-conflicting"]
    assert a == nc and len(a) == 6
    # single-block sweep: accuracies in percent, harm = base - single
    for b in res.blocks:
        assert 0 <= b["single_acc"] <= 1
        assert b["single_harm"] == pytest.approx(res.base_acc - b["single_acc"])
    # fractions, as train's test_acc: 200 test samples, so a multiple of 1/200
    assert 0 <= res.base_acc <= 1 and s["units"].startswith("accuracies, losses and harm are")
    assert res.base_acc * 200 == pytest.approx(round(res.base_acc * 200))
    # the conflict signals were measured at the run's lr and batch size (MeasureSpec.from_run)
    tc = runs.load_config(run_dir)
    m = s["measure"]
    assert (m["lr"], m["batch_size"], m["n_samples"]) == (tc["lr"], tc["batch_size"], cfg.samples)
    assert m["source"] == {"lr": "run", "batch_size": "run"}
    assert m["w_max"] == pytest.approx(res.blocks[0]["w_max"])


def test_given_lr_overrides_the_runs_and_changes_the_margin(run_dir, tmp_path):
    base = dict(repeats=1, max_k=1, test_limit=50)
    at_run = lesion_run(run_dir, LesionConfig(**base), tmp_path / "a", progress=False, report=False)
    lr = 10 * runs.load_config(run_dir)["lr"]
    given = lesion_run(
        run_dir, LesionConfig(**base, lr=lr), tmp_path / "b", progress=False, report=False
    )
    assert given.summary["measure"]["lr"] == lr
    assert given.summary["measure"]["source"] == {"lr": "given", "batch_size": "run"}
    # the margin is in units of the resolution q = ulp(w_max) * bs / lr: 10x the lr, 10x it
    for a, b in zip(at_run.blocks, given.blocks, strict=True):
        assert b["margin"] == pytest.approx(10 * a["margin"], rel=1e-6)


def zeroed_model(run_dir, blocks=("a.0", "a.2")):
    """The trained model with the residual branch of ``blocks`` forced to 0 (BN2 gamma = beta
    = 0): every sample then shares one branch activation (a conflicting bundle), and the block
    computes relu(x + 0) = x, so lesioning it changes nothing."""
    model, _ = runs.load_model(run_dir)
    with torch.no_grad():
        for name in blocks:
            stage, j = name.split(".")
            bn2 = getattr(model, stage)[int(j)].bn2
            bn2.weight.zero_()
            bn2.bias.zero_()
    return model


def test_conflicting_blocks_made_by_zeroing_are_flagged_and_removable(run_dir):
    model = zeroed_model(run_dir)
    tr, te = data()
    cfg = LesionConfig(repeats=4, criteria=("reference",), seed=1)
    res = lesion_study(model, tr, te, cfg, progress=False)
    flagged = [b["block"] for b in res.blocks if b["flag[reference]"]]
    assert flagged == ["a.0", "a.2"]
    assert res.summary["by_criterion"]["reference"]["flagged_blocks"] == flagged
    for b in res.blocks:
        if b["block"] in flagged:
            assert b["single_harm"] == 0.0
            assert b["margin"] == 0.0  # identical rows of different labels
    conf = [c for c in res.curves if c["group"] == "conflicting"]
    assert [c["k"] for c in conf] == [1, 2]
    assert all(c["test_acc_mean"] == res.base_acc and c["test_acc_std"] == 0 for c in conf)
    removable = res.summary["by_criterion"]["reference"]["removable"]
    assert removable["conflicting"]["k"] == 2
    assert removable["conflicting"]["fraction_of_blocks"] == pytest.approx(2 / 6)
    # position-matched controls: unflagged blocks, at least one position away
    matched = [c for c in res.curves if c["group"] == "position-matched"]
    assert [c["k"] for c in matched] == [1, 2]
    assert all(c["match_distance_mean"] >= 1 for c in matched)
    # blocks that cost nothing alone are among the individually harmless ones, scored jointly
    h = res.summary["individually_harmless"]
    assert {"a.0", "a.2"} <= set(h["blocks"])
    assert h["joint_loss"] == pytest.approx(res.base_acc - h["joint_test_acc"])
    # the correlation table has every signal, the entropy included
    signals = {r["signal"] for r in res.corr}
    assert {"entropy[reference]", "-margin", "index"} <= signals


def test_seeded_and_resumed_from_the_cache(run_dir, tmp_path, monkeypatch):
    tr, te = data(100)
    cfg = LesionConfig(repeats=3, criteria=("reference", "coarse:1024"), flag_criteria=("all",))
    cache = tmp_path / "cache.json"
    first = lesion_study(zeroed_model(run_dir), tr, te, cfg, cache, progress=False)
    calls = []
    real = lesion_signals.accuracy
    counting = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(lesion_signals, "accuracy", counting)
    again = lesion_study(zeroed_model(run_dir), tr, te, cfg, cache, progress=False)
    assert calls == []  # every lesion set came from the cache
    assert again.curves == first.curves and again.summary == first.summary
    # other weights: the cache is stale and ignored
    other = zeroed_model(run_dir, blocks=("a.1",))
    lesion_study(other, tr, te, cfg, cache, progress=False)
    assert len(calls) > 0
    # without a cache, the same seed draws the same sets
    fresh = lesion_study(zeroed_model(run_dir), tr, te, cfg, None, progress=False)
    assert fresh.curves == first.curves


def test_model_without_lesion_support_is_refused():
    tr, te = data(50)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(TypeError, match="cbundles prune"):
        lesion_study(net, tr, te, LesionConfig(), progress=False)


def test_cli_lesion_prints_tables_and_errors(run_dir, tmp_path):
    r = CliRunner().invoke(
        app,
        ["lesion", str(run_dir), "--repeats", "2", "--test-limit", "100", "--out", str(tmp_path)],
    )
    assert r.exit_code == 0, r.output
    text = flat(r.output)
    assert "base test accuracy" in text and "flags no lesionable block" in text
    assert (tmp_path / "report.html").is_file()
    r = CliRunner().invoke(app, ["lesion", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "does not exist" in flat(r.output)
    r = CliRunner().invoke(app, ["lesion", str(run_dir), "--flag-criterion", "sharp"])
    assert r.exit_code == 1 and "unknown criterion" in flat(r.output)


def test_plans_per_group():
    blocks = [{"flag[reference]": f} for f in (False, True, False, True, False)]
    cfg = LesionConfig(criteria=("reference",))
    ps = plans(blocks, [0, 1, 2, 3, 4], cfg)
    assert [(p.criterion, p.group) for p in ps] == [
        ("-", Group.ALL),
        ("reference", Group.CONFLICTING),
        ("reference", Group.NON_CONFLICTING),
        ("reference", Group.POSITION_MATCHED),
    ]
    assert ps[1].members == [1, 3] and ps[2].members == [0, 2, 4]
    assert ps[3].controls == [0, 2, 4] and ps[3].max_k(10) == 2
    # nothing flagged: no position-matched plan
    none = [{"flag[reference]": False}] * 3
    assert [p.group for p in plans(none, [0, 1, 2], cfg)] == [
        Group.ALL,
        Group.CONFLICTING,
        Group.NON_CONFLICTING,
    ]


def test_a_study_into_a_locked_folder_is_refused(run_dir, tmp_path):
    out = tmp_path / "busy"
    with rundir.locked(out, "another lesion"):
        with pytest.raises(rundir.RunInUseError, match="in use by pid"):
            lesion_run(run_dir, LesionConfig(repeats=1), out, progress=False, report=False)
    assert not (out / "lesion_summary.json").exists()


def test_lesion_of_an_auto_tune_folder_studies_its_final_step(tmp_path):
    from rich.console import Console

    from conflicting_bundles.autotune import AutotuneConfig, autotune

    train_cfg = dict(
        model="fnn",
        model_kwargs={"width": 6, "depth": 12},
        dataset="synthetic",
        data_dir=str(tmp_path / "data"),
        epochs=2,
        train_limit=256,
        test_limit=128,
        threads=1,
        progress=False,
        tensorboard=False,
    )
    at = tmp_path / "at"
    res = autotune(
        AutotuneConfig(out=str(at), check_epochs=2, train=train_cfg), console=Console(quiet=True)
    )
    last = at / "steps" / f"step_{len(res.steps) - 1:03d}"
    out = tmp_path / "les"
    args = ["lesion", str(at), "--repeats", "1", "--test-limit", "64", "-q", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    s = json.loads((out / "lesion_summary.json").read_text())
    assert s["run_dir"] == str(last)
    assert s["num_blocks"] == res.final_arch["depth"]
    # an unfinished search is refused with what to do
    state = json.loads((at / "autotune_state.json").read_text())
    (at / "autotune_state.json").write_text(json.dumps({**state, "done": False}))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and "has not finished" in flat(r.output)
