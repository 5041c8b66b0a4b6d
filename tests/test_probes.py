"""Probes: hooks are attached and removed cleanly; measure() on named layers and declared points."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conflicting_bundles import ProbePoint, Tap, bundle_stats, measure, probe, weight_amplitude


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_probe_captures_and_ejects():
    m = mlp()
    x = torch.randn(5, 6)
    with probe(m, ["1", "2"]) as p:
        assert hook_count(m) == 2
        m(x)
        m(x)
    assert hook_count(m) == 0
    assert p.get("1").shape == (10, 4)
    assert torch.equal(p.get("2")[:5], torch.relu(m[1](x)))


def test_hooks_removed_on_exception():
    m = mlp()
    with pytest.raises(RuntimeError, match="boom"):
        with probe(m, r"\d"):
            raise RuntimeError("boom")
    assert hook_count(m) == 0


def test_regex_module_and_errors():
    m = mlp()
    pts = probe(m, r"[12]").points
    assert [p.name for p in pts] == ["1", "2"]
    assert probe(m, m[3]).points[0].name == "3"
    with pytest.raises(ValueError, match="no module name matches"):
        probe(m, "layer9")
    with pytest.raises(ValueError, match="declares no probe points"):
        probe(m)
    with pytest.raises(ValueError, match="not part of the model"):
        probe(m, nn.Linear(1, 1))


def test_residual_branch_kind():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.f(x)

    b = nn.Sequential(Block())
    x = torch.randn(3, 4)
    with probe(b, "0", kind="residual-branch") as p:
        b(x)
    assert torch.allclose(p.get("0"), b[0].f(x), atol=1e-6)
    m = mlp()
    with pytest.raises(ValueError, match="shape-preserving"):
        with probe(m, "1", kind="residual-branch"):
            m(torch.randn(2, 6))


class Declared(nn.Module):
    """A model that declares a probe point through a Tap with an auxiliary tensor."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.tap = Tap()

    def forward(self, x):
        h = self.lin(x)
        return self.tap(h, h * 2)

    def probe_points(self, kind=None):
        return [ProbePoint("scaled", self.tap, transform=lambda inp, out: inp[0] + inp[1])]


def test_declared_points_and_measure_matches_bundle_stats():
    m = Declared()
    x = torch.randn(8, 3)
    x[4:] = x[:4]  # duplicate rows -> 4 bundles
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 1])
    m.train()
    res = measure(m, [(x[:3], y[:3]), (x[3:], y[3:])], n_samples=8)
    assert m.training  # state restored
    assert hook_count(m) == 0
    with torch.no_grad():
        acts = 3 * m.lin(x)
    ref = bundle_stats(acts, y, w_max=weight_amplitude(m))
    assert res[0].name == "scaled"
    assert res[0].num_bundles == ref.num_bundles == 4
    assert res[0].entropy == pytest.approx(ref.entropy)
    assert res[0].bundle_ids.tolist() == ref.bundle_ids.tolist()


def test_measure_chunked_equals_single_pass_and_other_criteria():
    m = mlp()
    x = torch.randn(40, 6)
    x[20:] = x[:20]
    y = torch.randint(0, 3, (40,))
    one = measure(m, [(x, y)], layers=["2", "3"], n_samples=40)
    chunked = measure(m, [(x, y)], layers=["2", "3"], n_samples=40, forward_chunk=7)
    for a, b in zip(one, chunked, strict=True):
        assert a.num_bundles == b.num_bundles
        assert a.entropy == pytest.approx(b.entropy)
        assert a.bundle_ids.tolist() == b.bundle_ids.tolist()
    coarse = measure(m, [(x, y)], layers=["2"], n_samples=40, criterion="tol:1e9")
    assert coarse[0].num_bundles == 1


def test_measure_takes_first_n_samples_only():
    m = mlp()
    data = [(torch.randn(10, 6), torch.randint(0, 3, (10,))) for _ in range(5)]
    res = measure(m, data, layers="3", n_samples=25)
    assert res[0].num_samples == 25
    with pytest.raises(ValueError, match="no samples"):
        measure(m, [], layers="3")
