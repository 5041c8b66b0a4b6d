"""Model families (docs/method.md §3) and the "Our models" contract of ARCHITECTURE.md."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conflicting_bundles.models import ConvNet, create_model, list_models, register_model
from conflicting_bundles.probes import measure, probe

torch.set_num_threads(1)

SHAPES = [(1, 28, 28), (3, 32, 32)]
WM = 1 / 16  # 4/8/16/32 channels: tiny but every structural path is taken


def tiny(name: str, in_shape=(3, 32, 32), **kw) -> nn.Module:
    """A small model of each family; conv nets get two blocks in every stage."""
    if name == "fnn":
        kw = {"width": 12, "depth": 3, **kw}
        return create_model(name, in_shape=in_shape, **kw)
    kw = {"blocks": [2, 2, 2, 2], "width_mult": WM, **kw}
    return create_model(name, in_channels=in_shape[0], image_size=in_shape[1], **kw)


def batch(in_shape, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *in_shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_registry_names():
    assert {"fnn", "plain", "resnet"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_shape", SHAPES)
def test_forward_backward(name, in_shape):
    torch.manual_seed(0)
    m = tiny(name, in_shape)
    x, y = batch(in_shape)
    out = m(x)
    assert out.shape == (8, 10)
    nn.functional.cross_entropy(out, y).backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in m.parameters())


# ---------------------------------------------------------------- registry errors
def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="registered models: fnn, plain, resnet"):
        create_model("vgg")


@pytest.mark.parametrize("name", list_models())
def test_unknown_kwarg_lists_valid(name):
    with pytest.raises(ValueError, match=r"unknown argument\(s\) 'depht'.*valid arguments: .*"):
        create_model(name, depht=3)


def test_missing_and_bad_arguments():
    assert (create_model("fnn").config.width, create_model("fnn").config.depth) == (25, 10)
    with pytest.raises(ValueError, match="blocks=.*or layers="):
        create_model("plain")
    with pytest.raises(ValueError, match="known depths: 4, 10, 20"):
        create_model("resnet", layers=18)
    with pytest.raises(ValueError, match="pass only one"):
        create_model("resnet", layers=10, blocks=[1, 1, 1, 2])
    with pytest.raises(ValueError, match="4 counts"):
        create_model("plain", blocks=[1, 1, 1])
    with pytest.raises(ValueError, match="in_shape.*disagrees"):
        create_model("plain", layers=4, in_shape=(1, 28, 28), in_channels=3)
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="fnn")(lambda: None)


def test_bad_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"expects images \(N, 3, H, W\)"):
        tiny("resnet")(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="784 values"):
        tiny("fnn", (1, 28, 28))(torch.zeros(2, 3, 32, 32))


# ---------------------------------------------------------------- structure
def test_reference_parameter_counts():
    # docs/method.md §3 sanity figures (CIFAR-10 input, conv biases on). Built on the meta device:
    # shapes only, no 260 MB of weights.
    with torch.device("meta"):
        p120 = create_model("plain", layers=120, in_channels=3, num_classes=10, image_size=32)
        r120 = create_model("resnet", layers=120, in_channels=3, num_classes=10, image_size=32)
    assert n_params(p120) == 64_830_474
    assert n_params(r120) == 65_005_194
    assert p120.block_names()[-1] == "d.2" and len(p120.block_names()) == 59


@pytest.mark.parametrize("depth", [0, 1, 4])
def test_fnn_structure_and_init(depth):
    m = create_model("fnn", width=30, depth=depth, in_shape=(1, 28, 28), num_classes=10)
    fan_ins = [784] + [30] * depth
    expect = sum(f * 30 + 30 for f in fan_ins[:-1]) + fan_ins[-1] * 10 + 10
    assert n_params(m) == expect
    assert m.block_names() == [f"hidden.{i}" for i in range(depth)]
    for i, name in enumerate(m.block_names()):
        lin = m.get_submodule(name).fc
        assert lin.in_features == fan_ins[i]
        # He-uniform: U(-sqrt(6/fan_in), sqrt(6/fan_in)), zero bias
        bound = math.sqrt(6 / fan_ins[i])
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
        assert (lin.bias == 0).all()


def test_conv_layout_strides_and_pool():
    m = create_model("resnet", blocks=[0, 2, 0, 1], width_mult=WM, in_channels=3, image_size=32)
    info = m.block_info()
    assert [d["name"] for d in info] == ["b.0", "b.1", "d.0"]
    # the first block of a stage changes channels/stride even if earlier stages are empty
    assert [(d["in_channels"], d["out_channels"], d["stride"]) for d in info] == [
        (4, 8, 2),
        (8, 8, 1),
        (8, 32, 2),
    ]
    assert [d["projecting"] for d in info] == [True, False, True]
    assert [d["position_in_stage"] for d in info] == [0, 1, 0]
    assert m.stage_of(2) == "d" and m.stage_of("b.1") == "b"
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    big = create_model("plain", layers=4, width_mult=WM, image_size=64)
    assert sum(isinstance(x, nn.MaxPool2d) for x in big.modules()) == 1
    # 64 px: stem /2 and pool /2 -> 16x16 maps into stage a
    with probe(big, kind="block") as p:
        big(torch.zeros(2, 3, 64, 64))
    assert p.get("a.0").shape == (2, 4, 16, 16)


def test_width_mult_min_one_channel():
    m = create_model("plain", layers=10, width_mult=1 / 256)
    assert [d["out_channels"] for d in m.block_info()] == [1, 1, 1, 2]
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", list_models())
def test_arch_round_trip(name):
    m = tiny(name, (1, 28, 28))
    arch = json.loads(json.dumps(m.arch()))
    assert arch["name"] == name
    m2 = create_model(**arch)
    assert m2.arch() == m.arch()
    assert type(m2) is type(m)
    assert {k: v.shape for k, v in m2.state_dict().items()} == {
        k: v.shape for k, v in m.state_dict().items()
    }


def test_in_shape_for_conv_nets():
    m = create_model("resnet", layers=10, width_mult=WM, in_shape=(1, 28, 28))
    assert m.arch()["in_channels"] == 1 and m.arch()["image_size"] == 28


# ---------------------------------------------------------------- probe points
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_shape", SHAPES)
def test_probe_points_and_measure(name, in_shape):
    m = tiny(name, in_shape)
    pts = m.probe_points()
    assert [p.name for p in pts] == m.block_names()
    x, y = batch(in_shape, n=16)
    res = measure(m, [(x, y)], n_samples=16)
    assert [r.name for r in res] == m.block_names()
    assert all(1 <= r.num_bundles <= 16 and r.num_samples == 16 for r in res)
    for kind in m.probe_kinds:
        assert len(m.probe_points(kind)) == len(m.block_names())
    with pytest.raises(ValueError, match="kinds: " + ", ".join(m.probe_kinds)):
        m.probe_points("nope")


def test_default_kinds():
    assert tiny("fnn").probe_kinds[0] == "hidden"
    assert tiny("plain").probe_kinds == ("block",)
    assert tiny("resnet").probe_kinds == ("branch", "block-output")


def test_fnn_probe_is_post_relu_hidden_output():
    m = tiny("fnn", (1, 28, 28))
    x, _ = batch((1, 28, 28))
    with probe(m) as p:
        m(x)
    h0 = torch.relu(x.flatten(1) @ m.hidden[0].fc.weight.T + m.hidden[0].fc.bias)
    torch.testing.assert_close(p.get("hidden.0"), h0)


def _grab(store: dict, key: str):
    def hook(_module, _inputs, output):
        store[key] = output

    return hook


def test_branch_transform_matches_hand_computation():
    torch.manual_seed(1)
    m = create_model("resnet", blocks=[1, 1, 0, 0], width_mult=WM, in_channels=3).eval()
    x, _ = batch((3, 32, 32), n=6)
    for name in ("a.0", "b.0"):  # identity and projecting block
        blk = m.get_submodule(name)
        raw = {}
        hooks = [
            blk.conv1.register_forward_hook(_grab(raw, "c1")),
            blk.conv2.register_forward_hook(_grab(raw, "c2")),
            blk.bn2.register_forward_hook(_grab(raw, "bn2")),
            blk.register_forward_hook(_grab(raw, "out")),
        ]
        with probe(m, kind="branch") as p, probe(m, kind="block-output") as q, torch.no_grad():
            out = m(x)
        for h in hooks:
            h.remove()
        c1, c2 = raw["c1"].double(), raw["c2"].double()
        v1 = ((c1 - c1.mean()) ** 2).mean()  # population variance over the whole tensor
        v2 = ((c2 - c2.mean()) ** 2).mean()
        want = raw["bn2"].double() / torch.sqrt(v1 + 1e-6) / torch.sqrt(v2 + 1e-6)
        torch.testing.assert_close(p.get(name).double(), want, rtol=1e-5, atol=1e-6)
        # the scale is not 1 here, so the check would catch a missing transform
        assert not torch.allclose(p.get(name), raw["bn2"])
        # block-output is the block's output (after add + ReLU)
        assert torch.equal(q.get(name), raw["out"])
    with torch.no_grad():  # probing does not change the forward
        assert torch.equal(m(x), out)


# ---------------------------------------------------------------- lesioning
def _out(m, x):
    with torch.no_grad():
        return m(x)


@pytest.mark.parametrize("in_shape", SHAPES)
def test_resnet_lesion(in_shape):
    torch.manual_seed(0)
    m = tiny("resnet", in_shape).eval()
    x, _ = batch(in_shape)
    base = _out(m, x)
    with m.lesioned([]):
        assert torch.equal(_out(m, x), base)
    for idx in (1, "b.0"):  # a plain identity block and a projecting block
        with m.lesioned(idx):
            assert not torch.allclose(_out(m, x), base)
        assert torch.equal(_out(m, x), base)
    # a lesioned identity block passes its input through; a projecting one gives ReLU(proj(x))
    seen = {}
    hooks = [
        m.get_submodule(n).register_forward_hook(
            lambda mod, i, o, n=n: seen.__setitem__(n, (i[0], o))
        )
        for n in ("a.1", "b.0")
    ]
    with m.lesioned(["a.1", "b.0"]), torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    assert torch.equal(seen["a.1"][0], seen["a.1"][1])
    with torch.no_grad():
        proj = torch.relu(m.get_submodule("b.0").proj(seen["b.0"][0]))
    torch.testing.assert_close(seen["b.0"][1], proj)
    assert torch.equal(_out(m, x), base)


def test_lesion_restored_after_exception_and_nesting():
    m = tiny("resnet").eval()
    x, _ = batch((3, 32, 32))
    base = _out(m, x)
    with pytest.raises(RuntimeError, match="boom"), m.lesioned([0, 3]):
        raise RuntimeError("boom")
    assert not any(getattr(b, "bypassed", False) for b in m.modules())
    assert torch.equal(_out(m, x), base)
    with m.lesioned(0):
        with m.lesioned([0, 1]):
            pass
        assert m.get_submodule("a.0").bypassed and not m.get_submodule("a.1").bypassed
    assert not m.get_submodule("a.0").bypassed


def test_lesion_errors():
    p = tiny("plain").eval()
    with pytest.raises(ValueError, match="cannot lesion b.0"):
        with p.lesioned("b.0"):
            pass
    x, _ = batch((3, 32, 32))
    base = _out(p, x)
    with p.lesioned("a.1"):  # shape-preserving plain block -> identity
        assert not torch.allclose(_out(p, x), base)
    f = create_model("fnn", width=16, depth=3, in_shape=(1, 4, 4))  # 16 inputs = width
    g = create_model("fnn", width=12, depth=3, in_shape=(1, 4, 4))
    with f.lesioned([0, 2]):
        pass
    with pytest.raises(ValueError, match="cannot lesion hidden.0"):
        with g.lesioned(0):
            pass
    with g.lesioned(1):
        xf = torch.randn(3, 1, 4, 4)
        assert g(xf).shape == (3, 10)
    with pytest.raises(ValueError, match=r"out of range.*indices 0..5"):
        with tiny("resnet", blocks=[1, 2, 2, 1]).lesioned(6):
            pass
    with pytest.raises(ValueError, match="no block named 'e.0'"):
        with tiny("resnet").lesioned("e.0"):
            pass


# ---------------------------------------------------------------- surgery
def _sd(m):
    return m.state_dict()


def test_without_blocks_conv_keeps_surviving_weights():
    torch.manual_seed(0)
    m = tiny("resnet")
    new = m.without_blocks(["b.0", "d.0", "d.1"])
    assert new.arch()["blocks"] == [2, 1, 2, 0]
    assert new.block_names() == ["a.0", "a.1", "b.0", "c.0", "c.1"]
    old, sd = _sd(m), _sd(new)
    for k in sd:
        if k.startswith(("a.", "c.", "stem.")):  # same place, same shapes
            assert torch.equal(sd[k], old[k]), k
    # old b.1 is the new b.0: it now changes channels/stride, so conv1 is fresh and a
    # projection appears; everything else of it is carried
    assert torch.equal(sd["b.0.conv2.weight"], old["b.1.conv2.weight"])
    assert torch.equal(sd["b.0.bn1.weight"], old["b.1.bn1.weight"])
    assert sd["b.0.conv1.weight"].shape != old["b.1.conv1.weight"].shape
    assert "b.0.proj.0.weight" in sd
    # stage d is gone: the head reads 16 channels instead of 32 -> fresh
    assert sd["head.weight"].shape == (10, 16)
    assert new(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    fresh = m.without_blocks(["b.0"], carry_weights=False)
    assert not torch.equal(_sd(fresh)["a.0.conv1.weight"], old["a.0.conv1.weight"])
    assert m.block_names() == tiny("resnet").block_names()  # the original is untouched


@pytest.mark.parametrize("name", list_models())
def test_without_all_blocks(name):
    m = tiny(name, (1, 28, 28))
    new = m.without_blocks(range(len(m.block_names())))
    assert new.block_names() == []
    assert new(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    if name != "fnn":
        assert torch.equal(_sd(new)["stem.conv.weight"], _sd(m)["stem.conv.weight"])


def test_without_blocks_fnn():
    m = create_model("fnn", width=12, depth=4, in_shape=(1, 28, 28))
    new = m.without_blocks([1, "hidden.3"])
    assert new.arch()["depth"] == 2
    assert torch.equal(new.hidden[0].fc.weight, m.hidden[0].fc.weight)
    assert torch.equal(new.hidden[1].fc.weight, m.hidden[2].fc.weight)
    assert torch.equal(new.head.weight, m.head.weight)
    lin = m.without_blocks([0, 1, 2, 3])
    assert lin.arch()["depth"] == 0 and lin.head.in_features == 784


def test_with_blocks_and_mode_follow():
    m = tiny("plain").eval()
    w = m.with_blocks([1, 0, 0, 1])
    assert w.block_names() == ["a.0", "d.0"] and isinstance(w, ConvNet)
    assert w.arch()["width_mult"] == WM and w.arch()["name"] == "plain"
    assert not m.without_blocks([0]).training
