"""Find the removable blocks of any PyTorch model.

A *removable block* is a child of an ``nn.ModuleList`` / ``nn.Sequential`` (so deleting it and
reindexing the container keeps the forward valid) that

- preserves the tensor shape: its output has the shape of its input on a real example forward
  (checked with forward hooks, so residual blocks with a projection shortcut are excluded),
- is a *block*: it has parameters and holds at least two weight layers (modules with a
  parameter of >= 2 dimensions: Linear, ConvNd, Embedding, ...). A lone Linear/Conv/Norm or an
  activation, or a Conv+BN+ReLU unit, is not a block.

That covers torchvision-style ResNet BasicBlock/Bottleneck with ``downsample is None``, timm
ResNet/ConvNeXt/ViT blocks, Hugging Face decoder layers (``model.layers.N``) and the T5 blocks
of both stacks (``encoder.block.N``, ``decoder.block.N``).

Nesting. A *unit* is any multi-layer child of a container (shape-preserving or not). A unit is a
*stack* when it is a container itself or holds a container with >= 2 units of one class (a
torchvision EfficientNet stage, a timm ConvNeXt stage's ``blocks``; not a T5Block, whose
``layer`` list holds its different parts: attention, cross-attention, feed-forward).
Candidates inside a unit that is not a stack are dropped: the squeeze-excitation gate inside a
MobileNetV3/EfficientNet/RegNet block, the attention inside a MaxViT layer or the feed-forward
inside a T5Block is a part of that block, not a block of the net. Among
the remaining candidates, the innermost are returned (a ConvNeXt stage without downsampling
gives its blocks, the finest unit that can go).

A model whose units all have one weight layer (this project's FNN: Linear + ReLU per hidden
layer) gets them when no multi-layer unit qualifies.

Shape preservation is a structural test, not a promise that removal is harmless: a
shape-preserving block of a plain (non-residual) net can also be deleted, but the net loses a
whole transformation, not just a residual update.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..modelmode import evaluating

__all__ = ["Block", "find_blocks", "run_model", "default_example", "weight_layers"]

# How the block regex is given: `cbundles prune --block-regex` / find_blocks(blocks=...).
REGEX_OPTION = "--block-regex, or blocks= in Python"

# Single layers that are never a block on their own.
_PRIMITIVES = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.Dropout,
    nn.Identity,
    nn.MultiheadAttention,
)
_ACTIVATION_MODULE = "torch.nn.modules.activation"


@dataclass
class Block:
    """A removable block.

    name: its path in ``model.named_modules()``, e.g. "layer3.1" or "model.layers.7".
    module: the block itself.
    container_name: path of the ModuleList/Sequential that holds it ("" for the root).
    index: its position in that container (the key of a Sequential with named children is
      ``key``; ``index`` is still its position).
    key: its key in the container's ``_modules`` ("1" for index 1 of a list).
    """

    name: str
    module: nn.Module = field(repr=False)
    container_name: str
    index: int
    key: str = ""

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def weight_layers(module: nn.Module) -> int:
    """Number of submodules (including ``module``) owning a parameter with >= 2 dimensions."""
    return sum(any(p.dim() >= 2 for p in m.parameters(recurse=False)) for m in module.modules())


def _is_primitive(module: nn.Module) -> bool:
    return isinstance(module, _PRIMITIVES) or type(module).__module__ == _ACTIVATION_MODULE


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _container_children(model: nn.Module) -> list[tuple[str, nn.Module, str, int, str]]:
    """(name, module, container_name, index, key) of every child of a ModuleList/Sequential."""
    out = []
    for cname, cont in model.named_modules():
        if not isinstance(cont, (nn.ModuleList, nn.Sequential)):
            continue
        for i, (key, child) in enumerate(cont._modules.items()):
            if child is None:
                continue
            out.append((f"{cname}.{key}" if cname else key, child, cname, i, key))
    return out


def _first_tensor(obj) -> torch.Tensor | None:
    """The hidden-state tensor of a module's input or output: the tensor itself, or the first
    tensor of a tuple/list (HF layers may return (hidden, attn_weights, ...)), or of a dict."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, torch.Tensor):
                return o
        return None
    if isinstance(obj, Mapping):
        for o in obj.values():
            if isinstance(o, torch.Tensor):
                return o
    return None


def to_device(x, device):
    """Move an input (tensor, mapping such as a tokenizer's ``BatchEncoding``, or tuple/list of
    tensors) to ``device``; a mapping becomes a plain dict."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def run_model(model: nn.Module, x):
    """Call ``model`` on an example: a tensor (``model(x)``), a tuple/list (positional
    arguments) or a mapping (keyword arguments, e.g. ``{"input_ids": ids}`` or a tokenizer's
    ``BatchEncoding`` for HF models)."""
    if isinstance(x, Mapping):
        return model(**dict(x))
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def default_example(model: nn.Module, batch: int = 2, seq_len: int = 8):
    """An example input for models that can describe their own input: Hugging Face models with
    a ``config.vocab_size`` get random ``input_ids`` (batch, seq_len), encoder-decoder ones
    (T5) also ``decoder_input_ids`` (batch, seq_len // 2 + 1). None otherwise."""
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (batch, seq_len), generator=gen)
        out = {"input_ids": ids.to(device)}
        if getattr(cfg, "is_encoder_decoder", False):  # a decoder length unlike the encoder's
            out["decoder_input_ids"] = ids[:, : seq_len // 2 + 1].to(device)
        return out
    return None


def _trace_shapes(model: nn.Module, candidates, example) -> dict[str, tuple]:
    """Run one forward on ``example`` and record, per candidate name, the input and output
    shape of its first call and the call order. Hooks see keyword arguments too, so layers
    called as ``layer(hidden_states=h)`` are traced."""
    seen: dict[str, tuple] = {}
    handles = []

    def hook_for(name):
        def fn(module, args, kwargs, output):
            if name in seen:
                return  # a shared module called twice: its first call defines it
            x = _first_tensor(args) if args else _first_tensor(kwargs)
            y = _first_tensor(output)
            seen[name] = (
                len(seen),
                None if x is None else tuple(x.shape),
                None if y is None else tuple(y.shape),
            )

        return fn

    for name, module, *_ in candidates:
        handles.append(module.register_forward_hook(hook_for(name), with_kwargs=True))
    try:
        with evaluating(model), torch.no_grad():
            run_model(model, to_device(example, model_device(model)))
    except Exception as e:  # a wrong example must say so, not show torch internals only
        raise ValueError(
            f"the example input could not be run through {type(model).__name__} "
            f"({type(e).__name__}: {e}). Pass example= a tensor, tuple of arguments or dict of "
            "keyword arguments that the model accepts (e.g. one batch of its data)."
        ) from e
    finally:
        for h in handles:
            h.remove()
    return seen


def _innermost(cands: list[tuple]) -> list[tuple]:
    """Drop every candidate that contains another candidate."""
    names = [c[0] for c in cands]
    return [c for c in cands if not any(n.startswith(c[0] + ".") for n in names)]


def _is_unit(module: nn.Module, min_weight_layers: int) -> bool:
    return (
        _has_params(module)
        and not _is_primitive(module)
        and weight_layers(module) >= min_weight_layers
    )


def _is_stack(unit: nn.Module, min_weight_layers: int) -> bool:
    """A container, or a module holding a container with >= 2 units of one class (a stage of
    repeated blocks). A list of different parts run in turn (a T5Block's self-attention,
    cross-attention and feed-forward in ``block.layer``) does not make its holder a stack."""
    if isinstance(unit, (nn.ModuleList, nn.Sequential)):
        return True
    for m in unit.modules():
        if m is not unit and isinstance(m, (nn.ModuleList, nn.Sequential)):
            kids = [c for c in m._modules.values() if c is not None]
            kinds = Counter(type(c) for c in kids if _is_unit(c, min_weight_layers))
            if kinds and max(kinds.values()) >= 2:
                return True
    return False


def _outside_parts(cands: list[tuple], units: list[tuple], min_weight_layers: int) -> list[tuple]:
    """Drop candidates that lie inside a unit that is not a stack (an SE gate in a block)."""
    closed = [u[0] for u in units if not _is_stack(u[1], min_weight_layers)]
    return [c for c in cands if not any(c[0].startswith(n + ".") for n in closed)]


def find_blocks(
    model: nn.Module,
    example=None,
    blocks: str | None = None,
    min_weight_layers: int = 2,
) -> list[Block]:
    """Removable blocks of ``model`` in forward order.

    example: an input to run (tensor, tuple of arguments, or dict of keyword arguments); needed
      for the shape check. HF models with ``config.vocab_size`` get random token ids if None.
    blocks: regex override, matched (fullmatch) against module names, e.g. ``r"layer3\\.\\d+"``
      or ``"layer3.*"``; matched names that are not children of a ModuleList/Sequential, or
      that are single layers, are ignored. With an example, matched blocks that change the
      shape are dropped with a warning. Without an example the override is trusted and the
      result is in module order.
    min_weight_layers: automatic mode only; a block needs at least this many weight layers.
    """
    cands = _container_children(model)
    if blocks is not None:
        try:
            rx = re.compile(blocks)
        except re.error as e:
            raise ValueError(f"block regex '{blocks}' is not a valid regex: {e}.") from e
        matched = [n for n, *_ in model.named_modules() if n and rx.fullmatch(n)]
        if not matched:
            sample = ", ".join(n for n, _ in list(model.named_modules())[1:8])
            raise ValueError(
                f"block regex '{blocks}' matches no module name (it must match a whole name); "
                f"names look like: {sample}, ..."
            )
        cands = [
            c for c in cands if rx.fullmatch(c[0]) and _has_params(c[1]) and not _is_primitive(c[1])
        ]
        if not cands:
            raise ValueError(
                f"block regex '{blocks}' matches {', '.join(matched[:6])}"
                f"{', ...' if len(matched) > 6 else ''}"
                ", but none of them is a multi-layer child of an nn.ModuleList/nn.Sequential, so "
                "none can be removed by deleting it from its container."
            )
    else:
        units = [c for c in cands if _is_unit(c[1], min_weight_layers)]
        if not units and min_weight_layers > 1:  # e.g. FNN hidden layers: one Linear each
            min_weight_layers = 1
            units = [c for c in cands if _is_unit(c[1], 1)]
        cands = _outside_parts(units, units, min_weight_layers)
    if example is None:
        example = default_example(model)
    if example is None:
        if blocks is None:
            raise ValueError(
                f"find_blocks needs example= (one input batch) to check which children of "
                f"{type(model).__name__}'s ModuleLists/Sequentials preserve the tensor shape; "
                f"or name the blocks yourself with a regex ({REGEX_OPTION})."
            )
        out = [Block(n, m, cn, i, k) for n, m, cn, i, k in _innermost(cands)]
        return out
    trace = _trace_shapes(model, cands, example)
    keep, dropped = [], []
    for c in cands:
        t = trace.get(c[0])
        if t is None:
            continue  # never called in the forward: not part of the computation
        _, sin, sout = t
        if sin is not None and sin == sout:
            keep.append(c)
        else:
            dropped.append(c[0])
    if blocks is not None and dropped:
        warnings.warn(
            f"block regex '{blocks}': ignoring {', '.join(dropped)} (output shape differs "
            "from input shape, so the block cannot be removed without a replacement).",
            stacklevel=2,
        )
    keep = sorted(_innermost(keep), key=lambda c: trace[c[0]][0])
    if not keep:
        hint = (
            "the override matched only shape-changing blocks"
            if blocks
            else (
                "no child of an nn.ModuleList/nn.Sequential with >= "
                f"{min_weight_layers} weight layers keeps the tensor shape"
            )
        )
        raise ValueError(
            f"no removable block found in {type(model).__name__}: {hint}. Name the blocks with "
            f"a regex over module names ({REGEX_OPTION})."
        )
    return [Block(n, m, cn, i, k) for n, m, cn, i, k in keep]
