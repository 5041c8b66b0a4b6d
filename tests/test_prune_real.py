"""Depth pruning on the real torchvision and timm classes (fresh weights, low resolution).

Marked ``real``: they run in the second environment (.venv-vision: torch 2.14.1 +
torchvision 0.29.1 + timm, ``make test-real``), where torchvision imports. The main run
deselects them with ``-m "not real"``; nothing here is skipped as a pass.
"""

from __future__ import annotations

import json

import pytest
import torch

from conflicting_bundles.prune import (
    count_params,
    find_blocks,
    get_scorer,
    load_model,
    load_pruned,
    remove_blocks,
    save_pruned,
)

pytestmark = pytest.mark.real


def models():
    import torchvision.models as m

    return m


def x64(b=2):
    return torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_resnet18_blocks_surgery_and_reload(tmp_path):
    m = models()
    torch.manual_seed(0)
    net = m.resnet18().eval()
    basic = [n for n, mod in net.named_modules() if isinstance(mod, m.resnet.BasicBlock)]
    projecting = [n for n in basic if net.get_submodule(n).downsample is not None]
    assert len(basic) == 8 and len(projecting) == 3
    found = [b.name for b in find_blocks(net, example=x64())]
    assert found == [n for n in basic if n not in projecting]

    pruned = remove_blocks(net, ["layer1.1", "layer3.1"])
    removed = count_params(net.layer1[1]) + count_params(net.layer3[1])
    assert count_params(net) - count_params(pruned) == removed
    with torch.no_grad():
        assert pruned(x64()).shape == (2, 1000)
    save_pruned(pruned, tmp_path)
    again = load_pruned(lambda: m.resnet18().eval(), tmp_path)
    with torch.no_grad():
        assert torch.equal(again(x64()), pruned(x64()))


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0"])
def test_se_gates_are_not_blocks(arch):
    """Discovery gives exactly the inverted-residual blocks with a residual connection, never
    the squeeze-excitation gates inside them; removing 2 shortens the net by 2 blocks."""
    m = models()
    net = getattr(m, arch)().eval()
    kinds = (m.mobilenetv3.InvertedResidual, m.efficientnet.MBConv)
    units = [(n, mod) for n, mod in net.named_modules() if isinstance(mod, kinds)]
    residual = [n for n, mod in units if mod.use_res_connect]
    found = find_blocks(net, example=x64())
    assert [b.name for b in found] == residual and len(residual) >= 6
    pruned = remove_blocks(net, found[:2])
    assert sum(isinstance(mod, kinds) for mod in pruned.modules()) == len(units) - 2
    with torch.no_grad():
        assert pruned(x64()).shape == (2, 1000)


def test_vit_b_16_encoder_layers_and_scorers():
    m = models()
    net = m.vit_b_16(image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    found = find_blocks(net, example=x)
    assert [b.name for b in found] == [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    y = torch.tensor([0, 1])
    for name in ("block-influence", "conflict", "reverse-order"):
        scores = get_scorer(name).score(net, found, [(x, y)])
        assert len(scores) == 12
    pruned = remove_blocks(net, found[-3:])
    assert len(pruned.encoder.layers) == 9
    with torch.no_grad():
        assert pruned(x).shape == (2, 1000)


@pytest.mark.parametrize(
    "name,expected,kw",
    [
        ("resnet18", 5, {}),
        ("convnext_atto", 12, {}),
        ("vit_tiny_patch16_224", 12, {"img_size": 32}),
        ("efficientnet_b0", 9, {}),
    ],
)
def test_timm_blocks_and_removal(name, expected, kw):
    import timm

    net = timm.create_model(name, pretrained=False, **kw).eval()
    x = torch.randn(2, 3, 32, 32) if "img_size" in kw else x64()
    found = find_blocks(net, example=x)
    assert len(found) == expected
    drop = [found[0], found[-1]]
    pruned = remove_blocks(net, drop)
    assert count_params(net) - count_params(pruned) == sum(b.num_params for b in drop)
    with torch.no_grad():
        assert pruned(x).shape == net(x).shape


def run_cli(args):
    from typer.testing import CliRunner

    from conflicting_bundles.cli import app

    return CliRunner().invoke(app, ["prune", *args])


def test_cli_torchvision_import_path_then_reload(tmp_path):
    common = ["--dataset", "synthetic", "--input-size", "64", "--channels", "3",
              "--normalize", "imagenet", "--test-limit", "16", "--n-samples", "32"]  # fmt: skip
    out = tmp_path / "p"
    res = run_cli(["--model", "torchvision.models:resnet18", "--remove", "2", "--out", str(out),
                   "--scorer", "block-influence", *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads((out / "prune.json").read_text())
    assert len(s["removed"]) == 2 and len(s["blocks"]) == 5
    assert (out / "scores.png").stat().st_size > 1000 and "Removed 2 of 5" in (
        out / "report.html"
    ).read_text()
    # The CLI's output directory is itself a model spec for the CLI.
    res = run_cli(["--model", str(out), "--remove", "1", "--out", str(tmp_path / "q"), *common])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "q" / "prune.json").read_text())["blocks"]) == 3
    model, base = load_model(str(tmp_path / "q"))
    assert (
        base["spec"] == "torchvision.models:resnet18"
        and len(model.layer1) + len(model.layer3) + len(model.layer2) + len(model.layer4) == 5
    )


def test_cli_state_dict_with_arch_and_timm_and_heal(tmp_path):
    m = models()
    torch.save(m.resnet18(num_classes=10).state_dict(), tmp_path / "w.pt")
    common = ["--dataset", "synthetic", "--input-size", "32", "--channels", "3",
              "--test-limit", "16", "--n-samples", "16"]  # fmt: skip
    res = run_cli(["--model", str(tmp_path / "w.pt"), "--out", str(tmp_path / "a"), *common])
    assert res.exit_code == 2 and "--arch" in res.output
    res = run_cli(["--model", str(tmp_path / "w.pt"), "--arch", "torchvision.models:resnet18",
                   "--model-kwargs", '{"num_classes": 10}', "--out", str(tmp_path / "a"),
                   "--heal-steps", "2", "--heal-train", "head+last:1", "--batch-size", "8",
                   *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    heal = json.loads((tmp_path / "a" / "prune.json").read_text())["heal"]
    full = m.resnet18(num_classes=10)
    assert 0 < heal["trainable_params"] < count_params(full) and heal["steps"] == 2
    res = run_cli(["--model", "timm:convnext_atto", "--scorer", "reverse-order",
                   "--out", str(tmp_path / "c"), *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "prune.json").read_text())["removed"] == [
        "stages.3.blocks.1"
    ]
