"""Warm restart: the pruned model keeps the trained weights of its surviving blocks and their
optimizer state (RAdam moments, Lookahead slow weights)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import torch
from torch import nn

from .. import runs
from ..models import create_model
from .check import DECISION_STATE
from .state import WarmStart


def remap_optimizer_state(
    old_sd: dict, old_model: nn.Module, new_model: nn.Module, new_sd: dict, rename: dict[str, str]
) -> dict:
    """Carry per-parameter optimizer state (RAdam moments, Lookahead slow weights) from the old
    model to the new one for every parameter whose (renamed) name and shape match; the rest
    start fresh. ``rename`` maps new block names to the old blocks they came from."""
    old_names = [n for n, _ in old_model.named_parameters()]
    old_shape = {n: p.shape for n, p in old_model.named_parameters()}
    old_index = {n: i for i, n in enumerate(old_names)}
    out = copy.deepcopy(new_sd)
    for j, (name, p) in enumerate(new_model.named_parameters()):
        block = ".".join(name.split(".")[:2])
        src = rename[block] + name[len(block) :] if block in rename else name
        i = old_index.get(src)
        if i is None or old_shape[src] != p.shape:
            continue
        base_old = old_sd["base_optimizer"]["state"]
        if i in base_old:
            out["base_optimizer"]["state"][j] = copy.deepcopy(base_old[i])
        la = old_sd.get("lookahead_state", {})
        if (0, i) in la:
            out.setdefault("lookahead_state", {})[(0, j)] = copy.deepcopy(la[(0, i)])
    return out


def load_decision_state(prev_dir: Path) -> dict:
    """decision_state.pt of a step: tensors and plain types only (``weights_only=True``: a
    crafted file cannot run code); RunDirError when it is missing or not such a file."""
    path = Path(prev_dir) / DECISION_STATE
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError):  # not torch's advice to load it unsafely
            why = "it holds more than tensors and plain values; loading it could run code"
        else:
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise runs.RunDirError(
            f"cannot read {path} ({why}); it holds the weights a warm restart continues from. "
            "Start the search over with --force (or in another --out)."
        ) from e
    if not isinstance(saved, dict) or not {"model", "optimizer"} <= set(saved):
        raise runs.RunDirError(f"{path} is not a decision state (model + optimizer).")
    return saved


def warm_model(prev_dir: Path, warm: WarmStart) -> tuple[nn.Module, dict]:
    """The pruned model with the previous step's trained weights and remapped optimizer state."""
    from ..train import TrainConfig, make_optimizer

    saved = load_decision_state(prev_dir)
    cfg_prev = TrainConfig.from_dict(runs.load_config(prev_dir))
    old = create_model(**runs.load_arch(prev_dir))
    try:
        old.load_state_dict(saved["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        msg = f"{prev_dir / DECISION_STATE} does not fit the step's model: {e}"
        raise runs.RunDirError(msg) from e
    new = old.without_blocks(warm.remove, carry_weights=True)
    keep = [i for i in range(len(old.block_names())) if i not in set(warm.remove)]
    rename = dict(zip(new.block_names(), [old.block_names()[i] for i in keep], strict=True))
    opt_old = make_optimizer(old.parameters(), cfg_prev)
    opt_old.load_state_dict(saved["optimizer"])
    opt_new = make_optimizer(new.parameters(), cfg_prev)
    sd = remap_optimizer_state(opt_old.state_dict(), old, new, opt_new.state_dict(), rename)
    return new, sd
