"""bundle_stats and torch's thread count (issue 24): bounded while it runs, restored after it
(also after an error), and results identical whatever the thread count. No timings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conflicting_bundles import bundle_stats, rowgroups
from conflicting_bundles import metric as metric_mod
from conflicting_bundles.metric import bundle_entropy_from_ids, group_rows


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _inputs(kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(acts (N, D) float32, labels (N,)) big enough for intra-op threads to split the work."""
    g = torch.Generator().manual_seed(seed)
    n, d = 3000, 257 if seed % 2 else 256  # odd widths compare int32 words, even ones int64
    y = torch.randint(0, 5, (n,), generator=g)
    if kind == "distinct":
        return torch.randn(n, d, generator=g), y
    if kind == "zero prefix":  # ReLU-like, zero on the first half
        a = torch.relu(torch.randn(n, d, generator=g))
        a[:, : d // 2] = 0.0
        return a, y
    k = {"few": 7, "many": 400}[kind]
    protos = torch.randn(k, d, generator=g)
    a = protos[torch.randint(0, k, (n,), generator=g)].clone()
    a[::9] *= 1 + 2**-22  # raw-distinct rows that the reference transform may merge
    a[:, 3] = 0.0
    a[::11, 3] = -0.0  # -0.0 against 0.0
    return a, y


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_is_restored_after_returning(threads):
    torch.set_num_threads(threads)
    a, y = _inputs("few", 0)
    bundle_stats(a, y, w_max=1.3)
    bundle_stats(a.numpy(), y.numpy(), mode="raw")
    bundle_stats(a, y, mode="tolerance", gamma=0.1)
    group_rows(a)
    assert torch.get_num_threads() == threads


def test_the_work_runs_with_bounded_threads(monkeypatch):
    torch.set_num_threads(2)
    seen = []
    real = metric_mod.group_rows_exact

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(metric_mod, "group_rows_exact", spy)
    bundle_stats(*_inputs("few", 1), w_max=1.3)
    assert seen == [min(2, rowgroups.CPU_THREADS)]
    assert torch.get_num_threads() == 2


def _nan_acts() -> torch.Tensor:
    a = torch.zeros(40, 8)
    a[5, 3] = float("nan")
    return a


@pytest.mark.parametrize(
    "acts, labels, kwargs, error",
    [
        (torch.zeros(10, 4), torch.zeros(9, dtype=torch.int64), {}, ValueError),  # shape
        (torch.zeros(10, 4), torch.full((10,), 0.5), {}, TypeError),  # float labels
        (torch.zeros(10, 4), torch.full((10,), 3), {"num_classes": 2}, ValueError),
        (_nan_acts(), torch.zeros(40, dtype=torch.int64), {}, ValueError),  # NaN
        (_nan_acts(), torch.zeros(40, dtype=torch.int64), {"mode": "raw"}, ValueError),
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), {}, ValueError),  # empty
        (torch.zeros(10, 4), torch.zeros(10, dtype=torch.int64), {"mode": "x"}, ValueError),
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_is_restored_after_an_error(acts, labels, kwargs, error, threads):
    torch.set_num_threads(threads)
    with pytest.raises(error):
        bundle_stats(acts, labels, **kwargs)
    assert torch.get_num_threads() == threads


def _same(s, o) -> bool:
    return (
        s.num_bundles == o.num_bundles
        and s.entropy == o.entropy  # bit for bit, not approximately
        and torch.equal(s.bundle_ids, o.bundle_ids)
        and torch.equal(s.sizes, o.sizes)
    )


@pytest.mark.parametrize("kind", ["distinct", "zero prefix", "few", "many"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["reference", "raw"])
def test_results_identical_with_1_and_2_threads(monkeypatch, kind, seed, mode):
    """Bounded or not (CPU_THREADS raised to 2 lets the kernels really use 2 threads), the
    partition and the entropy are the same bit for bit."""
    a, y = _inputs(kind, seed)
    results = []
    for bound, threads in ((1, 1), (1, 2), (2, 2)):
        monkeypatch.setattr(rowgroups, "CPU_THREADS", bound)
        torch.set_num_threads(threads)
        results.append(bundle_stats(a, y, w_max=1.3, mode=mode))
        results.append(bundle_stats(a, y, w_max=1.3, mode=mode, max_block_bytes=1 << 16))
    assert all(_same(results[0], r) for r in results[1:])
    if kind in ("few", "many"):
        assert results[0].num_bundles < len(y) and results[0].conflicting


def test_all_singletons_shortcut_matches_the_entropy_formula():
    a, y = _inputs("distinct", 0)
    s = bundle_stats(a, y, w_max=1.3)
    assert s.num_bundles == len(y)
    entropy, sizes = bundle_entropy_from_ids(s.bundle_ids, y, s.num_bundles, 5)
    assert s.entropy == entropy == 0.0
    assert torch.equal(s.sizes, sizes)
    assert np.array_equal(s.bundle_ids.numpy(), np.arange(len(y)))
