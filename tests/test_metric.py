"""The bundle metric against an independent, slow, obviously-correct oracle (docs/method.md §2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conflicting_bundles import (
    Criterion,
    bundle_stats,
    conflict_margin,
    resolution,
    rowgroups,
    weight_amplitude,
)
from conflicting_bundles.metric import group_rows


# ------------------------------------------------------------------ oracle (independent of src/)
def oracle(acts: np.ndarray, labels: np.ndarray, w_max: float, lr: float, bs: int, mode: str):
    """The reference scheme written out with numpy scalars and Python loops, O(N^2 D)."""
    a = np.asarray(acts, dtype=np.float32).reshape(len(acts), -1)
    if mode == "reference":
        t = a * np.float32(lr)
        t = t * np.float32(1.0 / bs)
        v = np.float32(w_max) - t
    else:
        v = a
    n = len(v)
    ids = [-1] * n
    nb = 0
    for i in range(n):
        if ids[i] != -1:
            continue
        for j in range(n):
            if ids[j] == -1 and all(v[i, k] == v[j, k] for k in range(v.shape[1])):
                ids[j] = nb
        nb += 1
    total = 0.0
    for b in range(nb):
        members = [labels[i] for i in range(n) if ids[i] == b]
        h = 0.0
        for c in set(members):
            p = members.count(c) / len(members)
            h -= p * math.log(p + 1e-5)
        total += len(members) * max(0.0, h)
    return ids, nb, total / n


def same_partition(a, b) -> bool:
    a, b = list(a), list(b)
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


# Few distinct values so that equal rows are common; include -0.0 and values a hair apart.
VALUES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1.0 + 2**-20, 100.0, 1e-3, 7.25])


@st.composite
def batches(draw):
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 5))
    protos = draw(st.integers(1, 6))
    table = [[draw(VALUES) for _ in range(d)] for _ in range(protos)]
    rows = [table[draw(st.integers(0, protos - 1))] for _ in range(n)]
    c = draw(st.integers(1, 4))
    labels = [draw(st.integers(0, c - 1)) for _ in range(n)]
    return np.array(rows, dtype=np.float32), np.array(labels, dtype=np.int64), c


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches(),
    st.sampled_from([0.0, 0.5, 1.0, 1.7, 12.0]),
    st.sampled_from([1e-3, 0.1, 1.0]),
    st.sampled_from([1, 64, 7]),
    st.sampled_from(["reference", "raw"]),
)
def test_matches_oracle(batch, w_max, lr, bs, mode):
    a, y, c = batch
    ids, nb, ent = oracle(a, y, w_max, lr, bs, mode)
    s = bundle_stats(a, y, num_classes=c, w_max=w_max, lr=lr, batch_size=bs, mode=mode)
    assert s.num_bundles == nb
    assert same_partition(s.bundle_ids.tolist(), ids)
    assert s.entropy == pytest.approx(ent, abs=1e-6)
    assert int(s.sizes.sum()) == len(y)
    # numbered 0.. in order of first appearance: the oracle numbers them that way too
    assert s.bundle_ids.tolist() == ids


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(1, 40), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_block_grouping_equals_unique(n, d, k, seed):
    """Exact grouping, chunked with tiny chunks, equals torch.unique's partition."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(k, d, generator=g)
    v = protos[torch.randint(0, k, (n,), generator=g)]
    ids, num = group_rows(v, max_block_bytes=64)  # tiny blocks: many refinement rounds
    _, inv = torch.unique(v, dim=0, return_inverse=True)
    assert num == int(inv.max()) + 1
    assert same_partition(ids.tolist(), inv.tolist())


def test_rows_equal_on_leading_columns_are_split():
    """Rows that agree on the first blocks of columns and differ only in the last one."""
    v = torch.zeros(6, 300)
    v[1, 299] = 1.0
    v[4, 299] = 1.0
    v[5, 150] = -0.0  # equal to 0.0
    ids, num = group_rows(v)
    assert num == 2
    assert ids.tolist() == [0, 1, 0, 0, 1, 0]


# ------------------------------------------------- hash proposals, verification and fallback
def _sampled_columns(d: int) -> list[int]:
    return [c for c0, c1 in rowgroups.sample_segments(d) for c in range(c0, c1)]


def _mixed_rows(n: int = 120, d: int = 170, seed: int = 0) -> torch.Tensor:
    """Rows that agree on the columns the first hash samples and differ elsewhere, with
    duplicates, -0.0 against 0.0 and columns that differ only in the last bit."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(9, d, generator=g)
    protos[:, _sampled_columns(d)] = 0.0  # the first hash says nothing
    protos[3, -1] = torch.nextafter(protos[2, -1], torch.tensor(10.0))
    protos[3, :-1] = protos[2, :-1]
    v = protos[torch.randint(0, 9, (n,), generator=g)].clone()
    v[::7, _sampled_columns(d)[3]] = -0.0
    return v


def test_sampled_columns_are_fixed_and_spread():
    assert rowgroups.sample_segments(50) == [(0, 50)]  # short rows: every column
    segs = rowgroups.sample_segments(50176)
    assert segs == rowgroups.sample_segments(50176)  # the same on every call
    assert len(segs) == 8 and segs[0] == (0, 8) and all(c1 - c0 == 8 for c0, c1 in segs)
    assert all(a[1] <= b[0] for a, b in zip(segs, segs[1:], strict=False))  # disjoint, sorted
    assert segs[-1][1] <= 50176 and segs[-1][0] > 50176 // 8  # not all at the start


def test_rows_equal_on_a_leading_stretch_are_split_by_the_first_hash(monkeypatch):
    """ReLU-like rows, zero on their first 2,000 columns: the sampled columns tell them apart,
    so no row is compared or hashed in full."""
    g = torch.Generator().manual_seed(3)
    v = torch.relu(torch.randn(64, 4000, generator=g))
    v[:, :2000] = 0.0
    whole = []
    real = rowgroups.row_hash

    def spy(bits, col0=0, cols=None):
        if cols is None:
            whole.append(1)
        return real(bits, col0, cols)

    monkeypatch.setattr(rowgroups, "row_hash", spy)
    ids, num = group_rows(v)
    assert num == 64 and not whole


def _unique_partition(v: torch.Tensor) -> list[int]:
    _, inv = torch.unique(v + 0.0, dim=0, return_inverse=True)  # -0.0 + 0.0 == +0.0
    return inv.tolist()


def test_row_hash_is_linear_over_column_blocks():
    bits = torch.randint(-(2**31), 2**31, (5, 40), dtype=torch.int64).to(torch.int32)
    whole = rowgroups.row_hash(bits)
    parts = rowgroups.row_hash(bits[:, :13]) + rowgroups.row_hash(bits[:, 13:], 13)
    assert torch.equal(whole, parts)
    assert torch.equal(whole, rowgroups.row_hash(bits.clone()))  # deterministic
    assert whole.unique().numel() == 5


def test_whole_row_hash_splits_without_the_sorting_fallback(monkeypatch):
    v = _mixed_rows()
    whole = []
    real = rowgroups.row_hash

    def spy(bits, col0=0, cols=None):
        whole.append(cols is None)
        return real(bits, col0, cols)

    def no_fallback(*args, **kwargs):
        raise AssertionError("the sort-based fallback ran without a hash collision")

    monkeypatch.setattr(rowgroups, "row_hash", spy)
    monkeypatch.setattr(rowgroups, "refine_sorted", no_fallback)
    ids, num = group_rows(v)
    assert any(whole), "the whole-row hash did not run"
    assert same_partition(ids.tolist(), _unique_partition(v))
    assert num == len(set(_unique_partition(v)))


@pytest.mark.parametrize("block_bytes", [64, 2**26])
def test_forced_collisions_fall_back_to_the_exact_sort(monkeypatch, block_bytes):
    """A degenerate hash (every row hashes to 0) proposes one group; verification finds the
    mismatches, the whole-row hash collides again, and the sort-based refinement decides."""
    v = _mixed_rows()
    calls = []
    real = rowgroups.refine_sorted

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(
        rowgroups, "row_hash", lambda bits, col0=0, cols=None: bits[:, 0].to(torch.int64) * 0
    )
    monkeypatch.setattr(rowgroups, "refine_sorted", spy)
    ids, num = group_rows(v, max_block_bytes=block_bytes)
    assert calls, "the fallback did not run"
    assert same_partition(ids.tolist(), _unique_partition(v))
    assert num == len(set(_unique_partition(v)))
    s = bundle_stats(v, torch.arange(len(v)) % 3, w_max=1.0, max_block_bytes=block_bytes)
    ids_o, nb, ent = oracle(v.numpy(), (np.arange(len(v)) % 3), 1.0, 1e-3, 64, "reference")
    assert s.bundle_ids.tolist() == ids_o and s.num_bundles == nb
    assert s.entropy == pytest.approx(ent, abs=1e-9)


def test_partial_hash_collisions_are_caught_by_verification(monkeypatch):
    """A hash of column 0 only: rows equal there collide, so every split beyond column 0
    comes from verification and the fallback."""
    v = _mixed_rows()
    v[:, 0] = (torch.arange(len(v)) % 2).float()
    monkeypatch.setattr(
        rowgroups, "row_hash", lambda bits, col0=0, cols=None: bits[:, 0].to(torch.int64)
    )
    ids, num = group_rows(v)
    assert same_partition(ids.tolist(), _unique_partition(v))


@pytest.mark.parametrize("d", [7, 64])  # odd widths compare int32 words, even ones int64
def test_non_contiguous_and_odd_width_inputs(d):
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(4, d, generator=g)
    big = protos[torch.randint(0, 4, (50,), generator=g)].repeat(1, 2)  # (50, 2d)
    v = big[:, 1 : d + 1]  # a strided view with an odd storage offset
    assert not v.is_contiguous()
    ids, num = group_rows(v)
    assert same_partition(ids.tolist(), _unique_partition(v)) and num <= 4


def test_transform_merges_distinct_rows_through_representatives():
    """Raw rows that are all distinct but collapse under the reference transform (tiny
    activations against w_max): one bundle, found through one representative per raw row."""
    g = torch.Generator().manual_seed(2)
    a = torch.rand(300, 40, generator=g) * 1e-6
    a[:100] = a[0]  # some raw duplicates too
    s = bundle_stats(a, torch.arange(300) % 2, w_max=1.0)
    assert s.num_bundles == 1 and s.conflicting
    assert bundle_stats(a, torch.arange(300) % 2, mode="raw").num_bundles == 201


def test_non_finite_rows_are_reported_by_their_own_index():
    a = torch.zeros(10, 4)
    a[7, 2] = float("nan")
    with pytest.raises(ValueError, match=r"first bad samples: \[7\]"):
        bundle_stats(a, torch.zeros(10, dtype=torch.int64))


# --------------------------------------------------------------------------- hand-computed
def test_all_identical_rows_two_classes():
    a = torch.ones(4, 3)
    y = torch.tensor([0, 0, 1, 1])
    s = bundle_stats(a, y)
    assert s.num_bundles == 1
    expected = -2 * 0.5 * math.log(0.5 + 1e-5)
    assert s.entropy == pytest.approx(expected, abs=1e-12)
    assert s.conflicting


def test_all_distinct_rows():
    a = torch.arange(12, dtype=torch.float32).reshape(6, 2) * 1000
    s = bundle_stats(a, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert s.num_bundles == 6 and s.entropy == 0.0 and not s.conflicting
    assert s.sizes.tolist() == [1] * 6


def test_one_conflicting_pair():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [9.0, 9.0]]) * 100
    y = torch.tensor([0, 1, 2, 2])
    s = bundle_stats(a, y)
    assert s.num_bundles == 3
    h = -2 * 0.5 * math.log(0.5 + 1e-5)
    assert s.entropy == pytest.approx(2 * h / 4, abs=1e-12)


def test_pure_bundle_entropy_is_clamped_to_zero():
    # -1 * ln(1 + 1e-5) < 0 is clamped: a label-pure bundle has entropy exactly 0.
    s = bundle_stats(torch.zeros(5, 3), torch.full((5,), 2))
    assert s.num_bundles == 1 and s.entropy == 0.0


def test_single_sample():
    s = bundle_stats(torch.randn(1, 7), torch.tensor([3]))
    assert s.num_bundles == 1 and s.entropy == 0.0 and s.bundle_ids.tolist() == [0]


def test_rows_below_resolution_merge_and_above_do_not():
    """With w_max in [1, 2) the float32 grid step is 2**-23; with lr=1e-3, bs=64 an activation
    difference below ~q = 2**-23*64/1e-3 ~ 7.6e-3 vanishes in v = w_max - a*lr/bs."""
    w_max, lr, bs = 1.5, 1e-3, 64
    q = resolution(w_max, lr, bs)
    assert q == pytest.approx(2**-23 * 64 / 1e-3, rel=1e-12)
    y = torch.tensor([0, 1])
    a_close = torch.tensor([[0.0], [0.1 * q]])
    s = bundle_stats(a_close, y, w_max=w_max, lr=lr, batch_size=bs)
    assert s.num_bundles == 1 and s.conflicting
    a_far = torch.tensor([[0.0], [1.5 * q]])
    s = bundle_stats(a_far, y, w_max=w_max, lr=lr, batch_size=bs)
    assert s.num_bundles == 2 and not s.conflicting
    # raw mode sees the tiny difference
    assert bundle_stats(a_close, y, mode="raw").num_bundles == 2


def test_negative_zero_equals_zero():
    s = bundle_stats(torch.tensor([[0.0, 1.0], [-0.0, 1.0]]), torch.tensor([0, 1]), mode="raw")
    assert s.num_bundles == 1


def test_input_types_and_flattening():
    a = np.zeros((3, 2, 2), dtype=np.float16)
    s = bundle_stats(a, np.array([0, 0, 1]))
    assert s.num_bundles == 1 and isinstance(s.bundle_ids, torch.Tensor)
    s2 = bundle_stats(torch.zeros(3, 4, dtype=torch.bfloat16), [0, 0, 1])
    assert s2.entropy == pytest.approx(s.entropy)
    s3 = bundle_stats(
        torch.tensor([[1], [1], [2]], dtype=torch.int32), torch.tensor([0, 1, 1]), mode="raw"
    )
    assert s3.num_bundles == 2


def test_tolerance_leader_chain():
    """0 - 0.6 - 1.2 with gamma 0.7: the chain is cut at the leader: {0, 0.6}, {1.2}."""
    a = torch.tensor([[0.0], [0.6], [1.2]])
    s = bundle_stats(a, torch.tensor([0, 1, 1]), mode="tolerance", gamma=0.7)
    assert s.bundle_ids.tolist() == [0, 0, 1]
    assert bundle_stats(a, torch.tensor([0, 1, 1]), mode="tolerance", gamma=0.0).num_bundles == 3


def test_criteria():
    a = torch.tensor([[0.0], [0.01], [10.0]])
    y = torch.tensor([0, 1, 1])
    assert Criterion.parse("reference").stats(a, y, w_max=1.5).num_bundles == 3
    assert Criterion.parse("coarse:16").stats(a, y, w_max=1.5).num_bundles == 2
    assert Criterion.parse("rel:0.01").stats(a, y).num_bundles == 2
    assert Criterion.parse("tol:0.001").stats(a, y).num_bundles == 3
    assert Criterion.parse("coarse:16").name == "coarse:16"
    with pytest.raises(ValueError, match="unknown criterion"):
        Criterion.parse("fuzzy")
    with pytest.raises(ValueError, match="number"):
        Criterion.parse("coarse:abc")


def test_margin():
    w_max, lr, bs = 1.5, 1e-3, 64
    q = resolution(w_max, lr, bs)
    a = torch.tensor([[0.0, 0.0], [3 * q, 0.5 * q], [100.0, 100.0]])
    y = torch.tensor([0, 1, 0])
    assert conflict_margin(a, y, w_max=w_max, lr=lr, batch_size=bs) == pytest.approx(3.0, rel=1e-6)
    assert conflict_margin(a, torch.zeros(3, dtype=torch.int64), w_max=w_max) == math.inf


def test_weight_amplitude_counts_trainable_params_only():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        m[0].weight.fill_(0.25)
        m[0].bias.fill_(-0.75)
        m[1].weight.fill_(0.5)
        m[1].running_var.fill_(100.0)  # a buffer: excluded
    assert weight_amplitude(m) == 0.75
    m[0].bias.requires_grad_(False)
    assert weight_amplitude(m) == 0.5


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "acts, labels, kw, exc, msg",
    [
        (torch.zeros(3, 2), torch.tensor([0, 1]), {}, ValueError, "shape"),
        (torch.zeros(2, 2), torch.tensor([0, -1]), {}, ValueError, ">= 0"),
        (torch.zeros(2, 2), torch.tensor([0, 5]), {"num_classes": 3}, ValueError, "out of range"),
        (torch.zeros(2, 2), torch.tensor([0.5, 1.0]), {}, TypeError, "integers"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), {}, ValueError, "empty"),
        (torch.tensor([[float("nan")], [1.0]]), torch.tensor([0, 1]), {}, ValueError, "NaN"),
        (torch.tensor([[float("inf")], [1.0]]), torch.tensor([0, 1]), {}, ValueError, "Inf"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), {"mode": "exact"}, ValueError, "mode"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), {"mode": "tolerance"}, ValueError, "gamma"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), {"lr": 0.0}, ValueError, "lr"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), {"batch_size": 0}, ValueError, "batch_size"),
        ("abc", torch.tensor([0, 1]), {}, TypeError, "acts"),
    ],
)
def test_bad_input(acts, labels, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        bundle_stats(acts, labels, **kw)


def test_float_labels_that_are_integers_are_accepted():
    s = bundle_stats(torch.zeros(2, 1), torch.tensor([1.0, 1.0]))
    assert s.num_bundles == 1 and s.entropy == 0.0
