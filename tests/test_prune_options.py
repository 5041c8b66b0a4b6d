"""Pruning options added for real models: SE-gate discovery rule, FNN blocks, baselines
(reverse-order, loss, iterative), heal modes, image preprocessing, sentence files, model specs
and the pickle guard. Small local models only (no torchvision)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conflicting_bundles.prune import (
    ImagePrep,
    count_params,
    find_blocks,
    get_scorer,
    heal,
    iterative_prune,
    load_model,
    prune_model,
    read_sentences,
    trainable_count,
)


class SE(nn.Module):
    """Squeeze-excitation gate: x * sigmoid(fc2(relu(fc1(mean(x))))) — shape-preserving."""

    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class MBBlock(nn.Module):
    """Inverted residual as torchvision writes it: the SE gate sits in a Sequential."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Sequential(nn.Conv2d(cin, 8, 3, stride, 1), nn.BatchNorm2d(8), nn.ReLU()),
            SE(8),
            nn.Sequential(nn.Conv2d(8, cout, 1), nn.BatchNorm2d(cout)),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.res else y


class MobileLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            MBBlock(3, 4, 2), MBBlock(4, 4), MBBlock(4, 6, 2), MBBlock(6, 6), MBBlock(6, 6)
        )
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_se_gates_inside_blocks_are_not_blocks():
    net = MobileLike().eval()
    found = [b.name for b in find_blocks(net, example=torch.randn(2, 3, 16, 16))]
    assert found == ["features.1", "features.3", "features.4"]  # the residual blocks only


def test_fnn_hidden_layers_found_without_regex():
    from conflicting_bundles.models import create_model

    fnn = create_model("fnn", width=10, depth=5, in_shape=(1, 4, 4), num_classes=3)
    found = [b.name for b in find_blocks(fnn, example=torch.randn(2, 1, 4, 4))]
    assert found == ["hidden.1", "hidden.2", "hidden.3", "hidden.4"]  # hidden.0: 16 -> 10


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    return [(x[:16], torch.arange(16) % 3), (x[16:], torch.arange(16) % 3)]


def test_reverse_order_loss_and_iterative():
    torch.manual_seed(0)
    net = MobileLike().eval()
    batches = data()
    blocks = find_blocks(net, example=batches[0][0])
    rev = get_scorer("reverse-order").score(net, blocks, batches)
    assert max(rev, key=rev.get) == "features.4"
    sc = get_scorer("loss")
    loss = sc.score(net, blocks, batches)
    assert all(sc.details[n]["loss_kind"] == "cross-entropy" for n in loss)
    assert all(v == pytest.approx(-sc.details[n]["loss"]) for n, v in loss.items())
    it = iterative_prune(net, batches, 2, "loss", example=batches[0][0])
    assert it.removed[0] == max(loss, key=loss.get) and len(set(it.removed)) == 2
    res = prune_model(net, batches, "loss", remove=2, iterative=True)
    assert res.removed == it.removed and res.params_after == count_params(it.model)


def test_heal_head_and_last_block_only():
    torch.manual_seed(0)
    net = MobileLike()
    batches = data()
    x = batches[0][0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n = trainable_count(net, "head+last:1", x)
    expected = count_params(net.head) + count_params(net.features[4])
    assert n == expected
    heal(net, batches, steps=2, lr=1e-2, train="head+last:1", example=x)
    after = net.state_dict()
    moved = {
        k
        for k in before
        if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])
    }
    assert moved and all(k.startswith(("head.", "features.4.")) for k in moved)
    assert all(p.requires_grad for p in net.parameters())  # unfrozen afterwards
    with pytest.raises(ValueError, match="head\\+last:N"):
        trainable_count(net, "tail", x)


def test_image_prep_resize_channels_normalize():
    x = torch.rand(2, 1, 28, 28)
    y = ImagePrep(size=(32, 40), channels=3, normalize="imagenet")(x)
    assert y.shape == (2, 3, 32, 40)
    mean = torch.tensor([0.485, 0.456, 0.406])
    raw = ImagePrep(size=(32, 40), channels=3)(x)
    assert torch.allclose(y[:, 0], (raw[:, 0] - mean[0]) / 0.229, atol=1e-6)
    z = ImagePrep(normalize="0.5:0.25")(x)
    assert torch.allclose(z, (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match="normalize"):
        ImagePrep(normalize="bogus")(x)


def test_read_sentences(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("# comment\nsports\tThe match ended.\n\nfood\tBake it.\n")
    assert read_sentences(p) == (["The match ended.", "Bake it."], ["sports", "food"])
    p.write_text("plain one\nplain two\n")
    assert read_sentences(p) == (["plain one", "plain two"], None)
    p.write_text("a\tb\nplain\n")
    with pytest.raises(ValueError, match="every line"):
        read_sentences(p)


def test_model_specs_and_pickle_guard(tmp_path):
    m, base = load_model("torch.nn:Linear", model_kwargs={"in_features": 3, "out_features": 2})
    assert isinstance(m, nn.Linear) and base == {
        "spec": "torch.nn:Linear",
        "kwargs": {"in_features": 3, "out_features": 2},
    }
    torch.save(m.state_dict(), tmp_path / "w.pt")
    again, _ = load_model(
        str(tmp_path / "w.pt"),
        arch="torch.nn:Linear",
        model_kwargs={"in_features": 3, "out_features": 2},
    )
    assert torch.equal(again.weight, m.weight)
    torch.save(m, tmp_path / "full.pt")
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_model(str(tmp_path / "full.pt"))
    assert isinstance(load_model(str(tmp_path / "full.pt"), trust_pickle=True)[0], nn.Linear)
    with pytest.raises(ValueError, match="no callable"):
        load_model("torch.nn:NoSuchThing")
    with pytest.raises(ValueError, match="not importable"):
        load_model("no_such_package_xyz.models:net")


def test_cli_text_needs_one_data_source(tmp_path):
    from typer.testing import CliRunner

    from conflicting_bundles.cli import app

    res = CliRunner().invoke(app, ["prune", "--model", "fnn", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "exactly one of --dataset" in res.output
    res = CliRunner().invoke(
        app, ["prune", "--model", "fnn", "--dataset", "synthetic", "--input-size", "a,b"]
    )
    assert res.exit_code != 0 and "H or H,W" in res.output
    res = CliRunner().invoke(
        app, ["prune", "--model", "fnn", "--dataset", "synthetic", "--model-kwargs", "[1]"]
    )
    assert res.exit_code != 0 and "JSON object" in res.output
