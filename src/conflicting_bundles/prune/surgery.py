"""Remove blocks for real, and save/load pruned models.

``remove_blocks`` deletes the chosen children from their ``nn.ModuleList`` / ``nn.Sequential``
(the survivors are reindexed 0..n-1, so state-dict keys become ``layer1.1`` etc.), which
shrinks the parameter count and the compute: the forward never visits them. For Hugging Face
models it also keeps the model self-consistent: ``config.num_hidden_layers`` (decoders loop over
``layers[:num_hidden_layers]``), per-layer config lists such as ``config.layer_types``, and the
``layer_idx`` attribute of attention modules (the KV cache is indexed by it).

Each removal is recorded on the model (attribute ``cbundles_pruned``: a list of steps, each the
block names removed in that step, as named at that time), so ``save_pruned`` can write a JSON
that ``load_pruned(factory, path)`` replays on a fresh base model before loading the weights.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..runs import read_json, save_checkpoint, write_json
from .discovery import Block

__all__ = ["remove_blocks", "save_pruned", "load_pruned", "pruned_steps", "count_params"]

RECORD_ATTR = "cbundles_pruned"
FORMAT = "cbundles-pruned/1"
STATE_FILE = "model.pt"
META_FILE = "pruned.json"


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def pruned_steps(model: nn.Module) -> list[list[str]]:
    """The removal steps recorded on ``model`` (empty for an unpruned model)."""
    return [list(s) for s in getattr(model, RECORD_ATTR, [])]


def _names(blocks: Iterable[Block | str]) -> list[str]:
    out = []
    for b in blocks:
        if isinstance(b, Block):
            out.append(b.name)
        elif isinstance(b, str):
            out.append(b)
        else:
            raise TypeError(
                f"blocks must be Block objects or module names, got {type(b).__name__}."
            )
    return out


def _container_of(model: nn.Module, name: str) -> tuple[str, nn.Module, str]:
    """(container name, container, key) of module ``name``; error unless the parent is a
    ModuleList/Sequential."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        shown = ", ".join(n for n in list(modules)[1:8])
        raise ValueError(f"model has no submodule {name!r} (names look like: {shown}, ...).")
    cname, _, key = name.rpartition(".")
    cont = modules[cname]
    if not isinstance(cont, (nn.ModuleList, nn.Sequential)):
        raise ValueError(
            f"cannot remove {name!r}: its parent {cname or '<root>'} is a "
            f"{type(cont).__name__}, not an nn.ModuleList/nn.Sequential, so the forward would "
            "still call it. Remove blocks found by find_blocks()."
        )
    return cname, cont, key


def _configs(model: nn.Module) -> list:
    """The HF config objects reachable from the model (its own and nested text/decoder ones)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return []
    out = [cfg]
    for attr in ("text_config", "decoder", "language_config"):
        sub = getattr(cfg, attr, None)
        if sub is not None and hasattr(sub, "num_hidden_layers"):
            out.append(sub)
    return out


def _own_configs(model: nn.Module) -> None:
    """Give the model private copies of its config objects before they are edited: a HF
    model keeps the config it was built from (``Model(cfg)``), which the caller may still use
    for other models. One shared memo keeps sub-configs shared as they were."""
    memo: dict = {}
    for m in model.modules():
        cfg = m.__dict__.get("config")
        if cfg is not None and hasattr(cfg, "num_hidden_layers"):
            m.config = copy.deepcopy(cfg, memo)


def _layer_counts(model: nn.Module, cname: str) -> list[tuple[object, str]]:
    """(config, attribute) pairs that count the layers of container ``cname``: the configs of
    the model, of its text/decoder sub-configs and of every module on the path to the
    container (a T5 stack has its own copy). Inside a decoder stack of an encoder-decoder
    model (T5: ``decoder.block``) the top config counts them in ``num_decoder_layers``."""
    path, parts = [model], cname.split(".") if cname else []
    for i in range(len(parts)):
        path.append(model.get_submodule(".".join(parts[: i + 1])))
    in_decoder = any(getattr(m, "is_decoder", False) is True for m in path[1:])
    out, seen = [], set()
    for cfg in [m.__dict__.get("config") for m in path] + _configs(model):
        if cfg is None or id(cfg) in seen or not hasattr(cfg, "num_hidden_layers"):
            continue
        seen.add(id(cfg))
        if in_decoder and hasattr(cfg, "num_decoder_layers"):
            out.append((cfg, "num_decoder_layers"))
            if not getattr(cfg, "is_decoder", False):
                continue  # the top config: its num_hidden_layers counts the encoder's
        out.append((cfg, "num_hidden_layers"))
    return out


def _update_hf(
    model: nn.Module, cname: str, old: list[nn.Module], removed: list[int], kept: list[nn.Module]
) -> None:
    """Keep HF bookkeeping consistent after removing ``removed`` (indices into ``old``, the
    layers container ``cname`` held) from it; ``kept`` are the survivors in order."""
    old_len = len(old)
    for cfg, attr in _layer_counts(model, cname):
        if getattr(cfg, attr, None) == old_len:
            setattr(cfg, attr, len(kept))
            for name in ("layer_types", "sliding_window_pattern_list", "block_types"):
                lst = getattr(cfg, name, None)
                if attr == "num_hidden_layers" and isinstance(lst, list) and len(lst) == old_len:
                    setattr(cfg, name, [v for i, v in enumerate(lst) if i not in set(removed)])
    _keep_position_bias([old[i] for i in removed], kept)
    # layer_idx: every submodule of a surviving layer that carries its old index gets the new one.
    old_indices = [i for i in range(old_len) if i not in set(removed)]
    for new_i, (old_i, layer) in enumerate(zip(old_indices, kept, strict=True)):
        for m in layer.modules():
            if getattr(m, "layer_idx", None) == old_i and isinstance(m.layer_idx, int):
                m.layer_idx = new_i


def _keep_position_bias(gone: list[nn.Module], kept: list[nn.Module]) -> None:
    """T5: only the first block of a stack owns the relative position bias table
    (``has_relative_attention_bias``) and hands the bias it computes to the blocks after it.
    When that block goes, its table moves to the same place in the new first block, so the
    survivors see the bias they were trained with (UMT5, a table per block, has nothing to
    move)."""
    if not kept:
        return
    first = dict(kept[0].named_modules())
    for block in gone:
        for path, src in block.named_modules():
            dst = first.get(path)
            if (
                getattr(src, "has_relative_attention_bias", False) is True
                and isinstance(getattr(src, "relative_attention_bias", None), nn.Module)
                and dst is not None
                and getattr(dst, "has_relative_attention_bias", None) is False
            ):
                dst.relative_attention_bias = src.relative_attention_bias
                dst.has_relative_attention_bias = True


def remove_blocks(
    model: nn.Module, blocks: Iterable[Block | str], *, inplace: bool = False
) -> nn.Module:
    """Return ``model`` without ``blocks`` (Block objects or module names of the model, e.g.
    from :func:`find_blocks`). A deep copy unless ``inplace``; removing nothing returns an
    (unchanged) copy. In place, the model's HF config objects are replaced by edited copies,
    never edited: the config the caller built the model from stays valid. Survivors of each
    container are reindexed; named children of a Sequential keep their names."""
    names = _names(blocks)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"blocks listed twice: {', '.join(dup)}.")
    for a in names:
        for b in names:
            if b.startswith(a + "."):
                raise ValueError(f"cannot remove both {a!r} and its submodule {b!r}.")
    out = model if inplace else copy.deepcopy(model)
    if inplace and names:
        _own_configs(out)
    by_container: dict[str, tuple[nn.Module, list[str]]] = {}
    for n in names:
        cname, cont, key = _container_of(out, n)
        by_container.setdefault(cname, (cont, []))[1].append(key)
    for cname, (cont, keys) in by_container.items():
        items = list(cont._modules.items())
        removed = [i for i, (k, _) in enumerate(items) if k in keys]
        kept = [(k, m) for k, m in items if k not in keys]
        numeric = all(k.isdigit() for k, _ in items)
        cont._modules = OrderedDict(
            (str(i), m) if numeric else (k, m) for i, (k, m) in enumerate(kept)
        )
        _update_hf(out, cname, [m for _, m in items], removed, [m for _, m in kept])
    if names:
        setattr(out, RECORD_ATTR, pruned_steps(out) + [names])
    return out


def save_pruned(model: nn.Module, path: str | Path, base: dict | None = None) -> Path:
    """Write ``path/model.pt`` (state dict) and ``path/pruned.json`` (removal steps, parameter
    count, optional ``base``: a JSON-able description of how to build the unpruned model, e.g.
    ``{"arch": model.arch()}``). Returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    steps = pruned_steps(model)
    meta = {
        "format": FORMAT,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "removed": steps,
        "num_removed": sum(len(s) for s in steps),
        "num_params": count_params(model),
        "base": base,
    }
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "num_hidden_layers"):
        meta["num_hidden_layers"] = cfg.num_hidden_layers
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"base must be JSON-serialisable: {e}") from e
    save_checkpoint(path / STATE_FILE, model.state_dict())
    write_json(path / META_FILE, meta)
    return path


def read_meta(path: str | Path) -> dict:
    """The pruned.json of a directory written by :func:`save_pruned`."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: load_pruned needs a directory written by save_pruned "
            f"(with {META_FILE} and {STATE_FILE})."
        )
    meta = read_json(meta_path)  # a bounded regular file; RunDirError naming it if damaged
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path}: unknown format {got!r}, expected {FORMAT}.")
    return meta


def load_pruned(
    base_model_factory: Callable[[], nn.Module], path: str | Path, map_location="cpu"
) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned`: ``base_model_factory()`` builds the
    unpruned model (any weights), the recorded removals are replayed, then the saved state dict
    is loaded (strictly: a factory that builds another architecture fails with a clear error)."""
    path = Path(path)
    meta = read_meta(path)
    model = base_model_factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"base_model_factory must return an nn.Module, got {type(model).__name__}.")
    for step in meta["removed"]:
        try:
            model = remove_blocks(model, step, inplace=True)
        except ValueError as e:
            raise ValueError(
                f"{path}: cannot replay the recorded removal {step} on the factory's model "
                f"({e}). Does the factory build the same base architecture?"
            ) from e
    state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{path}: the saved weights do not fit the rebuilt model ({str(e).splitlines()[0]}). "
            "Does the factory build the same base architecture?"
        ) from e
    return model
