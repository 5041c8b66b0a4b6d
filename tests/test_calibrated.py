"""The calibrated (angular) criterion: parsing, naming, what it flags, and that the reference
default is untouched."""

import math

import numpy as np
import pytest
import torch

from conflicting_bundles import runs
from conflicting_bundles.calibrated import (
    RADIUS,
    angular_groups,
    angular_margin,
    calibrated_stats,
)
from conflicting_bundles.metric import Criterion
from conflicting_bundles.models import create_model
from conflicting_bundles.probes import measure
from conflicting_bundles.train import TrainConfig, measure_run, train

CAL = Criterion.parse("calibrated")


def partition(ids: torch.Tensor) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, g in enumerate(ids.tolist()):
        groups.setdefault(g, set()).add(i)
    return {frozenset(s) for s in groups.values()}


def test_parse_and_name():
    assert CAL == Criterion.parse(" Calibrated ") == Criterion("calibrated")
    assert CAL.name == str(CAL) == "calibrated"
    assert CAL.value is None
    with pytest.raises(ValueError, match="calibrated"):
        Criterion.parse("calibrate")


def test_reference_default_unchanged():
    assert Criterion() == Criterion.parse("reference")
    assert Criterion().kind == "reference" and Criterion().name == "reference"
    assert TrainConfig().criterion == "reference"


def test_flags_collapsed_directions():
    # every sample on (nearly) the same ray, different scales and labels: rank collapse
    rng = torch.Generator().manual_seed(0)
    base = torch.rand(32, generator=rng) + 0.5
    scale = torch.rand(64, 1, generator=rng) * 10 + 0.1
    a = scale * base + 1e-4 * torch.rand(64, 32, generator=rng)
    y = torch.arange(64) % 10
    st = CAL.stats(a, y)
    assert st.conflicting and st.num_bundles == 1 and st.entropy > 2.0
    # the reference criterion tells these samples apart (the case it misses)
    assert not Criterion.parse("reference").stats(a, y, w_max=1.0).conflicting


def test_flags_dead_units():
    # half of the samples map to the all-zero vector (dead ReLUs), with mixed labels
    rng = torch.Generator().manual_seed(1)
    a = torch.rand(40, 16, generator=rng)
    a[::2] = 0.0
    y = torch.arange(40) % 4
    st = CAL.stats(a, y)
    assert st.conflicting
    zero_bundle = st.bundle_ids[0]
    assert bool((st.bundle_ids[::2] == zero_bundle).all())
    assert int(st.sizes[zero_bundle]) == 20  # zero rows bundle with each other only


def test_does_not_flag_well_separated():
    rng = torch.Generator().manual_seed(2)
    a = torch.randn(64, 50, generator=rng).relu()  # random directions: distances ~ 1
    y = torch.randint(0, 10, (64,), generator=rng)
    st = CAL.stats(a, y)
    assert not st.conflicting and st.entropy == 0.0
    assert angular_margin(a, y) > 10 * RADIUS
    # label-pure bundles are not conflicting: duplicates of one class only
    b = torch.cat([a[:1].repeat(5, 1), a[1:]])
    yb = torch.cat([torch.zeros(5, dtype=torch.int64), y[1:]])
    sb = CAL.stats(b, yb)
    assert not sb.conflicting and sb.num_bundles == 64  # 5 copies of one row + 63 others


def test_scale_free_and_threshold_matches_margin():
    u0 = torch.tensor([1.0, 0.0, 0.0])
    for frac, expect in ((0.9, True), (1.1, False)):
        ang = 2 * math.asin(frac * RADIUS / 2)  # chord length frac * RADIUS
        u1 = torch.tensor([math.cos(ang), math.sin(ang), 0.0])
        a = torch.stack([u0, 3.0 * u1, torch.tensor([0.0, 0.0, 1.0])])
        y = torch.tensor([0, 1, 1])
        assert CAL.stats(a, y).conflicting is expect
        assert CAL.stats(1e4 * a, y).conflicting is expect  # no dependence on the scale
        assert (angular_margin(a, y) <= RADIUS) is expect


def test_single_linkage_is_order_free():
    # a chain: neighbours within the radius, the ends far apart -> one bundle in any order
    angles = torch.arange(6) * (0.8 * RADIUS)
    a = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    ids, g = angular_groups(a)
    assert g == 1
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    ids_p, g_p = angular_groups(a[perm])
    assert g_p == 1 and partition(ids_p) == {frozenset(range(6))}
    assert ids[0] == 0  # numbered by first appearance


def test_numpy_input_and_bad_input():
    a = np.random.default_rng(4).random((10, 5)).astype(np.float32)
    y = np.arange(10) % 2
    assert CAL.stats(a, y).num_samples == 10
    bad = a.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CAL.stats(bad, y)
    with pytest.raises(ValueError, match="labels"):
        CAL.stats(a, y[:5])


def test_calibrated_stats_direct_matches_criterion():
    a = torch.rand(20, 4)
    y = torch.arange(20) % 3
    st = calibrated_stats(a, y, 3)
    st2 = CAL.stats(a, y, num_classes=3)
    assert st.entropy == st2.entropy and torch.equal(st.bundle_ids, st2.bundle_ids)


def test_works_through_measure_and_names_itself(tmp_path):
    torch.manual_seed(0)
    model = create_model("fnn", width=8, depth=3, in_shape=(1, 4, 4), num_classes=3)
    x = torch.rand(32, 1, 4, 4)
    y = torch.arange(32) % 3
    res = measure(model, [(x, y)], criterion="calibrated", n_samples=32)
    assert len(res) == 3 and all(r.num_samples == 32 for r in res)
    cfg = TrainConfig(
        model="fnn",
        model_kwargs={"width": 8, "depth": 2},
        dataset="synthetic",
        epochs=1,
        train_limit=128,
        test_limit=64,
        criterion="calibrated",
        out=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    assert runs.load_summary(cfg.out)["criterion"] == "calibrated"
    rows = measure_run(cfg.out, n_samples=64, margin=False)
    assert rows and all(r["criterion"] == "calibrated" for r in rows)
