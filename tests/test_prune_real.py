"""Depth pruning on the real torchvision and timm classes (fresh weights, low resolution).

Marked ``real``: they run in the second environment (.venv-vision: torch 2.14.1 +
torchvision 0.29.1 + timm, ``make test-real``), where torchvision imports. The main run
deselects them with ``-m "not real"``; nothing here is skipped as a pass.
"""

from __future__ import annotations

import json
import math

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
    # The CLI's output directory is itself a model spec for the CLI; its base is built by an
    # import path, so it is imported only when the caller names it again (--arch).
    spec = "torchvision.models:resnet18"
    res = run_cli(["--model", str(out), "--remove", "1", "--out", str(tmp_path / "r"), *common])
    assert res.exit_code == 2 and f"--arch {spec}" in res.output
    assert not (tmp_path / "r" / "prune.json").exists()
    res = run_cli(["--model", str(out), "--arch", spec, "--remove", "1",
                   "--out", str(tmp_path / "q"), *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "q" / "prune.json").read_text())["blocks"]) == 3
    model, base = load_model(str(tmp_path / "q"), arch=spec)
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


# ------------------------------------------------------------- one table of real model classes
# Each row builds a model class from a tiny config (random weights: no hub), an input batch, and
# the block names read off the model's own structure; test_model_table checks discovery, every
# scorer, removal, the forward shape and reload on every row.
V = 60


def hf_cfg(name, **kw):
    import transformers

    small = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=64)  # fmt: skip
    return getattr(transformers, name)(**{**small, **kw})


def hf_rows():
    import transformers as t

    def causal(cls, cfg, pattern):
        return lambda: getattr(t, cls)(cfg()), pattern

    return {
        "t5": (
            lambda: t.T5ForConditionalGeneration(
                t.T5Config(
                    vocab_size=V,
                    d_model=32,
                    d_kv=8,
                    d_ff=64,
                    num_layers=3,
                    num_decoder_layers=2,
                    num_heads=4,
                    decoder_start_token_id=0,
                )  # fmt: skip
            ),
            ["encoder.block.{}"] * 3 + ["decoder.block.{}"] * 2,
        ),
        "qwen2": causal("Qwen2ForCausalLM", lambda: hf_cfg("Qwen2Config"), "model.layers.{}"),
        "mistral": causal(
            "MistralForCausalLM",
            lambda: hf_cfg("MistralConfig", sliding_window=4),
            "model.layers.{}",
        ),
        "mixtral": causal(
            "MixtralForCausalLM",
            lambda: hf_cfg("MixtralConfig", num_local_experts=4, num_experts_per_tok=2),
            "model.layers.{}",
        ),
        "gemma": causal(
            "GemmaForCausalLM", lambda: hf_cfg("GemmaConfig", head_dim=8), "model.layers.{}"
        ),
        "opt": causal(
            "OPTForCausalLM",
            lambda: t.OPTConfig(
                vocab_size=V,
                hidden_size=32,
                ffn_dim=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=64,
                word_embed_proj_dim=32,
            ),  # fmt: skip
            "model.decoder.layers.{}",
        ),
        "gpt-neox": causal(
            "GPTNeoXForCausalLM",
            lambda: t.GPTNeoXConfig(
                vocab_size=V,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=64,
            ),  # fmt: skip
            "gpt_neox.layers.{}",
        ),
        "distilbert": causal(
            "DistilBertModel",
            lambda: t.DistilBertConfig(
                vocab_size=V,
                dim=32,
                hidden_dim=64,
                n_layers=3,
                n_heads=4,
                max_position_embeddings=64,
            ),  # fmt: skip
            "transformer.layer.{}",
        ),
    }


def hf_names(patterns):
    if isinstance(patterns, str):
        return [patterns.format(i) for i in range(3)]
    seen: dict[str, int] = {}
    out = []
    for p in patterns:
        out.append(p.format(seen.get(p, 0)))
        seen[p] = seen.get(p, 0) + 1
    return out


def vision_rows():
    import timm
    from timm.models import mlp_mixer, vision_transformer
    from torchvision.models import convnext, mobilenetv2, resnet, shufflenetv2, swin_transformer

    m = models()

    def named(cls, keep=lambda mod: True):
        return lambda net: [
            n for n, mod in net.named_modules() if isinstance(mod, cls) and keep(mod)
        ]

    return {
        "timm-deit": (
            lambda: timm.create_model(
                "deit_tiny_distilled_patch16_224", img_size=32, depth=4, embed_dim=64, num_heads=2
            ),  # fmt: skip
            named(vision_transformer.Block),
        ),
        "timm-mixer": (
            lambda: mlp_mixer.MlpMixer(img_size=32, patch_size=8, num_blocks=4, embed_dim=64),
            named(mlp_mixer.MixerBlock),
        ),
        "tv-swin_t": (m.swin_t, named(swin_transformer.SwinTransformerBlock)),
        "tv-convnext_tiny": (m.convnext_tiny, named(convnext.CNBlock)),
        "tv-resnext50_32x4d": (
            m.resnext50_32x4d,
            named(resnet.Bottleneck, lambda b: b.downsample is None),
        ),
        "tv-shufflenet_v2_x0_5": (
            m.shufflenet_v2_x0_5,
            named(shufflenetv2.InvertedResidual, lambda b: b.stride == 1),
        ),
        "tv-mobilenet_v2": (
            m.mobilenet_v2,
            named(mobilenetv2.InvertedResidual, lambda b: b.use_res_connect),
        ),
    }


HF_ROWS = ["t5", "qwen2", "mistral", "mixtral", "gemma", "opt", "gpt-neox", "distilbert"]
VISION_ROWS = ["timm-deit", "timm-mixer", "tv-swin_t", "tv-convnext_tiny", "tv-resnext50_32x4d",
               "tv-shufflenet_v2_x0_5", "tv-mobilenet_v2"]  # fmt: skip


def row(kind):
    """(build, expected block names of a built model, input batch, output tensor of a forward)."""
    gen = torch.Generator().manual_seed(1)
    if kind in HF_ROWS:
        build, patterns = hf_rows()[kind]
        ids = torch.randint(3, V, (8, 6), generator=gen)
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if kind == "t5":
            x["decoder_input_ids"] = ids[:, :4]
        names = hf_names(patterns)

        def out(o):
            return o.logits if hasattr(o, "logits") else o.last_hidden_state

        return build, lambda net: names, x, out
    build, names = vision_rows()[kind]
    size = 32 if kind.startswith("timm") else 64
    return build, names, torch.randn(8, 3, size, size, generator=gen), lambda o: o


def forward(net, x):
    with torch.no_grad():
        return net(**x) if isinstance(x, dict) else net(x)


@pytest.mark.parametrize("kind", HF_ROWS + VISION_ROWS)
def test_model_table(kind, tmp_path):
    """Discovery count, every scorer, removal (parameters and forward shape) and reload."""
    from conflicting_bundles.prune import list_scorers

    build, expected, x, out = row(kind)
    torch.manual_seed(0)
    net = build().eval()
    found = find_blocks(net, example=x)
    assert [b.name for b in found] == expected(net) and len(found) >= 3
    y = torch.arange(8) % 2
    for name in list_scorers():
        scores = get_scorer(name, n_samples=8).score(net, found, [(x, y)])
        assert set(scores) == {b.name for b in found}, name
        assert all(math.isfinite(v) for v in scores.values()), (name, scores)

    drop = [found[1], found[-1]]
    pruned = remove_blocks(net, drop)
    assert count_params(net) - count_params(pruned) == sum(b.num_params for b in drop)
    want = out(forward(pruned, x))
    assert want.shape == out(forward(net, x)).shape
    assert len(find_blocks(pruned, example=x)) == len(found) - 2

    save_pruned(pruned, tmp_path / "p")
    torch.manual_seed(1)  # other random weights: only the saved ones may count
    again = load_pruned(lambda: build().eval(), tmp_path / "p")
    assert torch.equal(out(forward(again, x)), want)
    if kind in HF_ROWS:
        check_hf_reload_and_generate(kind, net, pruned, x, out, want, tmp_path)


def check_hf_reload_and_generate(kind, net, pruned, x, out, want, tmp_path):
    """save_pretrained / from_pretrained of the pruned model; generate with and without the
    KV cache gives the same tokens (the cache is indexed by the renumbered layers)."""
    pruned.save_pretrained(tmp_path / "hf")
    hf = type(pruned).from_pretrained(tmp_path / "hf").eval()
    assert torch.allclose(out(forward(hf, x)), want, atol=1e-5)
    if not hasattr(pruned, "generate") or kind == "distilbert":
        return
    ids = x["input_ids"][:2]
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0,
              attention_mask=torch.ones_like(ids))  # fmt: skip
    with torch.no_grad():
        a = pruned.generate(ids, use_cache=True, **kw)
        b = pruned.generate(ids, use_cache=False, **kw)
    assert torch.equal(a, b) and a.shape[1] == (6 if kind == "t5" else ids.shape[1] + 5)
