"""Depth pruning: discovery, scorers (against hand-computed values), surgery, save/load, CLI.

Models are built locally (a torchvision-style ResNet, a timm-style ViT and ConvNeXt) or from a
config (a tiny Llama from transformers); nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conflicting_bundles.prune import (
    Block,
    compare_scorers,
    count_params,
    evaluate,
    find_blocks,
    get_scorer,
    heal,
    list_scorers,
    load_pruned,
    prune_model,
    rank,
    remove_blocks,
    save_pruned,
    write_compare,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------ torchvision-style ResNet
def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=3, width=4, in_ch=1):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(block=BasicBlock, layers=(2, 2, 3), seed=0):
    torch.manual_seed(seed)
    return ResNet(block, list(layers)).eval()


def identity_blocks(model):
    """What discovery must find, read off the structure: blocks without a downsample."""
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, (BasicBlock, Bottleneck)) and m.downsample is None
    ]


X_IMG = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ timm-style ViT / ConvNeXt
class Attention(nn.Module):
    def __init__(self, dim, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """timm VisionTransformer layout: patch_embed, cls_token, pos_embed, blocks, norm, head."""

    def __init__(self, dim=8, depth=3, num_classes=3):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, 4, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    def __init__(self, cin, cout, depth):
        super().__init__()
        self.downsample = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 2, 2)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(cout) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class TinyConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 2, 2)
        self.stages = nn.Sequential(ConvNeXtStage(4, 4, 2), ConvNeXtStage(4, 8, 2))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


# ------------------------------------------------------------------ tiny Llama (transformers)
def llama(layers=4, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


IDS = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(2))


# ====================================================================== discovery
@pytest.mark.parametrize("block,layers", [(BasicBlock, (2, 2, 3)), (Bottleneck, (2, 1, 2))])
def test_discovery_finds_identity_resnet_blocks(block, layers):
    model = resnet(block, layers)
    found = find_blocks(model, example=X_IMG)
    assert [b.name for b in found] == identity_blocks(model)
    for b in found:
        assert b.module is model.get_submodule(b.name)
        assert b.container_name + "." + str(b.index) == b.name


def test_discovery_vit_and_convnext_innermost():
    vit = TinyViT(depth=3)
    assert [b.name for b in find_blocks(vit, torch.randn(2, 1, 8, 8))] == [
        "blocks.0",
        "blocks.1",
        "blocks.2",
    ]
    # stages.0 keeps the shape too, but its blocks are the finer removable unit.
    cnx = TinyConvNeXt()
    names = [b.name for b in find_blocks(cnx, torch.randn(2, 1, 8, 8))]
    assert names == [f"stages.{s}.blocks.{i}" for s in (0, 1) for i in (0, 1)]


def test_discovery_hf_decoder_layers_without_example():
    model = llama(layers=4)
    found = find_blocks(model)  # token ids are synthesised from config.vocab_size
    assert [b.name for b in found] == [f"model.layers.{i}" for i in range(4)]
    assert all(b.container_name == "model.layers" for b in found)


def test_discovery_regex_override_and_errors():
    model = resnet()
    with pytest.warns(UserWarning, match="layer3.0"):
        found = find_blocks(model, example=X_IMG, blocks="layer3.*")
    assert [b.name for b in found] == ["layer3.1", "layer3.2"]
    # Without an example the override is trusted (layer3.0 included).
    assert [b.name for b in find_blocks(model, blocks=r"layer3\.\d")] == [
        "layer3.0",
        "layer3.1",
        "layer3.2",
    ]
    with pytest.raises(ValueError, match="matches no module"):
        find_blocks(model, X_IMG, blocks="nothing.*")
    with pytest.raises(ValueError, match="needs example"):
        find_blocks(model)
    with pytest.raises(ValueError, match="could not be run"):
        find_blocks(model, example=torch.randn(2, 3, 8, 8))  # wrong channel count
    with pytest.raises(ValueError, match="no removable block"):
        find_blocks(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(2, 4))


# ====================================================================== surgery
def test_surgery_resnet_params_and_forward():
    model = resnet()
    found = find_blocks(model, X_IMG)
    chosen = [found[0], found[-1]]  # layer1.1 and layer3.2
    expected_drop = sum(p.numel() for b in chosen for p in b.module.parameters())
    n1, n3 = len(model.layer1), len(model.layer3)
    pruned = remove_blocks(model, chosen)
    assert count_params(model) - count_params(pruned) == expected_drop
    assert len(pruned.layer1) == n1 - 1 and len(pruned.layer3) == n3 - 1
    assert len(model.layer1) == n1  # the input model is untouched
    assert pruned(X_IMG).shape == model(X_IMG).shape
    assert "layer3.2.conv1.weight" not in pruned.state_dict()  # reindexed, not holes
    # Removing layer1.1 (the last block of layer1) leaves the other blocks' weights in place.
    assert torch.equal(pruned.layer3[1].conv1.weight, model.layer3[1].conv1.weight)


def test_surgery_named_sequential_and_errors():
    seq = nn.Sequential()
    seq.add_module("inp", nn.Linear(4, 6))
    seq.add_module("mid", nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6)))
    seq.add_module("out", nn.Linear(6, 2))
    pruned = remove_blocks(seq, ["mid"])
    assert list(pruned._modules) == ["inp", "out"]  # names kept, not renumbered
    assert pruned(torch.randn(3, 4)).shape == (3, 2)
    model = resnet()
    with pytest.raises(ValueError, match="not an nn.ModuleList/nn.Sequential"):
        remove_blocks(model, ["layer1.0.conv1"])
    with pytest.raises(ValueError, match="no submodule"):
        remove_blocks(model, ["layer9.0"])
    with pytest.raises(ValueError, match="twice"):
        remove_blocks(model, ["layer1.1", "layer1.1"])


def test_surgery_hf_updates_config_and_layer_idx():
    model = llama(layers=4)
    found = find_blocks(model)
    expected_drop = found[1].num_params + found[2].num_params
    pruned = remove_blocks(model, [found[1], found[2]])
    assert count_params(model) - count_params(pruned) == expected_drop
    assert pruned.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    with torch.no_grad():
        out = pruned(IDS, use_cache=True)
        assert out.logits.shape == (2, 6, 40)
        # The surviving layers are layers 0 and 3 of the original, in that order.
        ref = model.model.layers[3](
            model.model.layers[0](
                model.model.embed_tokens(IDS),
                position_embeddings=model.model.rotary_emb(
                    model.model.embed_tokens(IDS), torch.arange(6)[None]
                ),
            ),
            position_embeddings=model.model.rotary_emb(
                model.model.embed_tokens(IDS), torch.arange(6)[None]
            ),
        )
        hidden = pruned.model(IDS).last_hidden_state
        assert torch.allclose(hidden, model.model.norm(ref), atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    model = resnet(seed=0)
    pruned = remove_blocks(model, ["layer2.1"])
    pruned = remove_blocks(pruned, ["layer3.2", "layer1.1"])  # two steps, replayed in order
    save_pruned(pruned, tmp_path / "p", base={"note": "test"})
    meta = json.loads((tmp_path / "p" / "pruned.json").read_text())
    assert meta["removed"] == [["layer2.1"], ["layer3.2", "layer1.1"]]
    assert meta["num_params"] == count_params(pruned)
    loaded = load_pruned(lambda: resnet(seed=123), tmp_path / "p")  # other init: weights load
    assert torch.equal(loaded(X_IMG), pruned(X_IMG))
    with pytest.raises(ValueError, match="same base architecture"):
        load_pruned(lambda: resnet(Bottleneck, (2, 1, 2)), tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="pruned.json"):
        load_pruned(resnet, tmp_path / "missing")


def test_save_load_roundtrip_hf(tmp_path):
    pruned = remove_blocks(llama(), ["model.layers.0"])
    save_pruned(pruned, tmp_path)
    loaded = load_pruned(lambda: llama(seed=5), tmp_path)
    assert loaded.config.num_hidden_layers == 3
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, pruned(IDS).logits)


# ====================================================================== scorers
class Mul(nn.Module):
    """y = x @ W.T with a fixed matrix (a 'block' for the regex override)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x @ self.w.T


class Residual(nn.Module):
    """y = x + s * x: the residual branch is s * x."""

    def __init__(self, s):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))

    def forward(self, x):
        return x + self.s * x


def blocks_of(model):
    return [Block(n, m, "", i, n) for i, (n, m) in enumerate(model.named_children())]


def test_block_influence_and_angular_hand_values():
    c = math.sqrt(0.5)
    model = nn.Sequential(
        Mul([[2.0, 0.0], [0.0, 2.0]]),  # y = 2x: cos 1
        Mul([[c, -c], [c, c]]),  # 45 degree rotation: cos = cos(pi/4)
        Mul([[-1.0, 0.0], [0.0, -1.0]]),  # y = -x: cos -1
    )
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    batches = [(x, torch.zeros(16, dtype=torch.int64))]
    bi = get_scorer("block-influence").score(model, blocks_of(model), batches)
    assert bi["0"] == pytest.approx(0.0, abs=1e-6)
    assert bi["1"] == pytest.approx(-(1 - c), abs=1e-6)
    assert bi["2"] == pytest.approx(-2.0, abs=1e-6)
    ang = get_scorer("angular").score(model, blocks_of(model), batches)
    assert [ang[k] for k in "012"] == pytest.approx([0.0, -0.25, -1.0], abs=1e-3)
    assert rank(bi) == ["0", "1", "2"]
    # Sequences (B, T, D): cosines per token over the last dim give the same values.
    seq = [(torch.randn(4, 5, 2), None)]
    bi_seq = get_scorer("block-influence").score(model, blocks_of(model), seq)
    assert bi_seq["1"] == pytest.approx(-(1 - c), abs=1e-6)


def test_activation_entropy_hand_values():
    model = nn.Sequential(Residual(1.0), Residual(0.0))
    # Branch of block 0 = x: feature 0 positive in 2 of 4 rows (1 bit), feature 1 always (0).
    x = torch.tensor([[1.0, 1.0], [-1.0, 2.0], [3.0, 1.0], [-2.0, 1.0]])
    scores = get_scorer("activation-entropy").score(model, blocks_of(model), [x])
    assert scores["0"] == pytest.approx(-0.5)
    assert scores["1"] == pytest.approx(0.0)  # branch 0: never on, zero entropy


def label_entropy(labels):
    """Bundle entropy of one bundle holding all samples, straight from docs/method.md §2."""
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return max(0.0, float(-(p * np.log(p + 1e-5)).sum()))


def test_conflict_scorer_constructed_case():
    # Samples on a line, labels [0, 0, 1, 1]; w_max = 1 (the largest parameter).
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([0, 0, 1, 1])
    # Blocks run in sequence: block i's input is x times the product of earlier (1 + s).
    model = nn.Sequential(
        Residual(0.5),  # branch = 0.5 x: distinct rows, no bundle
        Residual(0.0),  # branch = 0: one bundle with both labels
        Residual(1e-4),  # branch = 1.5e-4 x: below the float32 resolution -> one bundle
        Residual(1.0),  # branch = 1.5 (1 + 1e-4) x: distinct, farther apart than block 0
    )
    sc = get_scorer("conflict")
    scores = sc.score(model, blocks_of(model), [(x, y)])
    h = label_entropy(y.numpy())
    assert sc.details["0"]["entropy"] == 0.0 and sc.details["3"]["entropy"] == 0.0
    assert sc.details["1"]["entropy"] == pytest.approx(h, rel=1e-12)
    assert sc.details["2"]["entropy"] == pytest.approx(h, rel=1e-12)
    assert sc.details["1"]["num_bundles"] == 1 and sc.details["0"]["num_bundles"] == 4
    # Margin: closest differently labelled pair (1 and 2) in units of q = ulp(1) * 64 / 1e-3.
    q = float(np.spacing(np.float32(1.0))) * 64 / 1e-3
    assert sc.details["0"]["margin"] == pytest.approx(0.5 / q)
    assert sc.details["3"]["margin"] == pytest.approx(1.5 * 1.0001 / q, rel=1e-5)
    # Ranking: conflicting blocks first, then the smaller margin.
    assert rank(scores)[2:] == ["0", "3"]
    assert set(rank(scores)[:2]) == {"1", "2"}
    with pytest.raises(ValueError, match="needs labels"):
        sc.score(model, blocks_of(model), [x])


def test_conflict_scorer_reads_declared_branch():
    from conflicting_bundles.probes import ProbePoint, Tap

    class TapBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)
            self.tap = Tap()

        def forward(self, x):
            return x + self.tap(torch.zeros_like(self.lin(x)))  # declared branch: all zero

    class Net(nn.Sequential):
        def probe_points(self, kind=None):
            return [ProbePoint(str(i), b.tap, "branch") for i, b in enumerate(self)]

    net = Net(TapBlock(), TapBlock())
    with torch.no_grad():
        net[0].lin.weight.fill_(1.0)
        net[0].lin.bias.fill_(0.0)
    sc = get_scorer("conflict")
    x, y = torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1])
    sc.score(net, blocks_of(net), [(x, y)])
    assert sc.details["0"]["read"] == "declared-branch"
    assert sc.details["0"]["entropy"] == pytest.approx(label_entropy(y.numpy()))
    off = get_scorer("conflict", use_declared=False)
    off.score(net, blocks_of(net), [(x, y)])  # output - input is also zero here
    assert off.details["0"]["read"] == "output-minus-input"


def test_random_scorer_seeded_and_registry():
    blocks = find_blocks(resnet(), X_IMG)
    a = get_scorer("random", seed=3).score(None, blocks)
    assert a == get_scorer("random", seed=3).score(None, blocks)
    assert a != get_scorer("random", seed=4).score(None, blocks)
    assert list_scorers()[0] == "conflict"
    assert {"block-influence", "angular", "activation-entropy", "random"} <= set(list_scorers())
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("magic")
    other = resnet()  # blocks of another model instance never run in this one's forward
    with pytest.raises(ValueError, match="never ran"):
        get_scorer("angular").score(other, blocks, [X_IMG])


def test_scorers_on_resnet_and_llama_are_finite():
    model = resnet()
    blocks = find_blocks(model, X_IMG)
    batches = [(torch.randn(8, 1, 8, 8), torch.arange(8) % 3)]
    for name in list_scorers():
        s = get_scorer(name).score(model, blocks, batches)
        assert list(s) == [b.name for b in blocks] and all(math.isfinite(v) for v in s.values())
    lm = llama()
    s = get_scorer("block-influence").score(lm, find_blocks(lm), [{"input_ids": IDS}])
    assert all(-2.0 <= v <= 0.0 for v in s.values()) and len(s) == 4


# ====================================================================== pipeline
def toy_data(n=48, seed=0):
    """Images whose class is the brightest quadrant-ish region: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 3, :] += 1.5
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def test_heal_lowers_loss_and_evaluate_counts():
    batches = toy_data()
    model = remove_blocks(resnet(), ["layer1.1", "layer3.2"])
    losses = heal(model, batches, steps=12, lr=1e-2)
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert not model.training

    class Fixed(nn.Module):
        def forward(self, x):
            return F.one_hot(x.long(), 3).float()

    assert evaluate(Fixed(), [(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 0]))]) == 0.75


def test_prune_model_and_compare(tmp_path):
    model = resnet()
    data = toy_data()
    res = prune_model(model, data, scorer="block-influence", remove=2)
    assert len(res.removed) == 2 and set(res.removed) <= set(res.blocks)
    removed_params = sum(count_params(model.get_submodule(n)) for n in res.removed)
    assert res.params_before - res.params_after == removed_params
    assert rank(res.scores)[:2] == res.removed

    rows = compare_scorers(
        model, data, data, scorers=["angular", "random"], max_remove=2, random_repeats=2
    )
    assert [(r["scorer"], r["k"]) for r in rows] == [
        ("none", 0),
        ("angular", 1),
        ("angular", 2),
        ("random", 1),
        ("random", 2),
        ("random", 1),
        ("random", 2),
    ]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert rows[2]["num_params"] < rows[1]["num_params"] < rows[0]["num_params"]
    csv_path, png_path = write_compare(rows, tmp_path)
    with csv_path.open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert png_path.stat().st_size > 1000


# ====================================================================== CLI
def run_cli(args):
    import typer
    from typer.testing import CliRunner

    from conflicting_bundles.cli.prune import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    return CliRunner().invoke(app, ["prune", *args])


def make_run_dir(path):
    """A run directory as train.py writes it: arch.json + checkpoints/last.pt {"model": ...}."""
    from conflicting_bundles.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet", blocks=[2, 2, 1, 1], width_mult=0.125, in_shape=(1, 28, 28))
    (path / "checkpoints").mkdir(parents=True)
    (path / "arch.json").write_text(json.dumps(model.arch()))
    torch.save({"model": model.state_dict(), "epoch": 1}, path / "checkpoints" / "last.pt")
    return model.eval()


def test_cli_prune_run_dir_then_reload(tmp_path):
    from conflicting_bundles.prune import load_model

    model = make_run_dir(tmp_path / "run")
    out = tmp_path / "pruned"
    res = run_cli(
        ["--model", str(tmp_path / "run"), "--dataset", "synthetic", "--remove", "2",
         "--test-limit", "64", "--out", str(out)]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "prune.json").read_text())
    assert summary["scorer"] == "conflict" and len(summary["removed"]) == 2
    assert set(summary["removed"]) <= set(summary["blocks"])
    removed = sum(count_params(model.get_submodule(n)) for n in summary["removed"])
    assert summary["params_before"] - summary["params_after"] == removed
    # The pruned directory is itself a model spec (base.arch recorded): reload and compare.
    loaded, base = load_model(str(out))
    assert base["arch"] == model.arch()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), remove_blocks(model, summary["removed"])(x))


def test_prune_of_a_run_directory_scores_at_the_runs_lr_and_batch_size(tmp_path):
    make_run_dir(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"lr": 0.01, "batch_size": 32}))
    args = ["--model", str(tmp_path / "run"), "--dataset", "synthetic", "--remove", "1",
            "--test-limit", "32"]  # fmt: skip
    res = run_cli([*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    at_run = json.loads((tmp_path / "a" / "prune.json").read_text())
    assert (at_run["measure"]["lr"], at_run["measure"]["batch_size"]) == (0.01, 32)
    assert at_run["measure"]["source"] == {"lr": "run", "batch_size": "run"}
    res = run_cli([*args, "--lr", "0.001", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    given = json.loads((tmp_path / "b" / "prune.json").read_text())
    assert given["measure"]["source"] == {"lr": "given", "batch_size": "run"}
    # margins are in units of q = ulp(w_max) * bs / lr: a 10x smaller lr, 10x smaller margins
    rows_a = {r["block"]: r for r in csv.DictReader((tmp_path / "a" / "scores.csv").open())}
    rows_b = {r["block"]: r for r in csv.DictReader((tmp_path / "b" / "scores.csv").open())}
    for name, r in rows_a.items():
        assert float(rows_b[name]["margin"]) == pytest.approx(float(r["margin"]) / 10, rel=1e-6)
        assert float(r["lr"]) == 0.01 and float(rows_b[name]["lr"]) == 0.001
    # a damaged config.json is named; --lr and --batch-size prune without it
    (tmp_path / "run" / "config.json").write_text("{")
    res = run_cli([*args, "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "config.json" in res.output
    assert "--lr and --batch-size" in " ".join(res.output.split())
    res = run_cli([*args, "--lr", "0.01", "--batch-size", "32", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "d" / "prune.json").read_text())["measure"]
    assert d["source"] == {"lr": "given", "batch_size": "given"}
    # print-config shows the resolved settings and runs nothing
    res = run_cli([*args, "--print-config", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0 and "scorer: conflict" in res.output and "lr: null" in res.output
    assert not (tmp_path / "c").exists()


def test_cli_compare_with_model_file(tmp_path):
    torch.save(resnet(layers=(2, 2, 2)).train(False), tmp_path / "m.pt")
    # The local ResNet takes 1 channel and has 3 classes: feed it 28x28 synthetic images
    # (labels 0..9; accuracy is just low, the comparison still runs).
    args = ["--model", str(tmp_path / "m.pt"), "--dataset", "synthetic", "--compare",
            "--max-remove", "2", "--scorers", "block-influence,random", "--random-repeats", "2",
            "--test-limit", "32", "--out", str(tmp_path / "cmp")]  # fmt: skip
    res = run_cli(args)  # a pickled module is refused without --trust-pickle
    assert res.exit_code == 2 and "--trust-pickle" in res.output
    res = run_cli([*args, "--trust-pickle"])
    assert res.exit_code == 0, res.output
    assert "highest test accuracy" in (tmp_path / "cmp" / "report.html").read_text()
    with (tmp_path / "cmp" / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["scorer"] for r in rows] == ["none"] + ["block-influence"] * 2 + ["random"] * 4
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_cli_errors_are_messages(tmp_path):
    res = run_cli(["--model", str(tmp_path / "nope"), "--dataset", "synthetic"])
    assert res.exit_code == 2 and "neither an existing path" in res.output
    torch.save({"model": {}}, tmp_path / "ckpt.pt")
    res = run_cli(["--model", str(tmp_path / "ckpt.pt"), "--dataset", "synthetic"])
    assert res.exit_code == 2 and "pass --arch" in res.output
    res = run_cli(["--model", "x", "--dataset", "synthetic", "--scorer", "magic"])
    assert res.exit_code != 0 and "unknown scorer" in res.output


def test_an_unknown_scorer_option_is_an_error_not_dropped():
    """Issue 22, item 7: get_scorer refuses an option the scorer does not take (naming the
    ones it does); scorer_options picks a scorer's own options out of a shared dict."""
    from conflicting_bundles.prune.scorers import scorer_options

    with pytest.raises(TypeError, match="'angular' takes no option 'seed'.*n_samples"):
        get_scorer("angular", seed=3)
    shared = {"seed": 3, "n_samples": 8, "criterion": "reference"}
    assert scorer_options("angular", shared) == {"n_samples": 8}
    assert scorer_options("random", shared) == {"seed": 3, "n_samples": 8}
    assert get_scorer("conflict", **scorer_options("conflict", shared)).n_samples == 8
