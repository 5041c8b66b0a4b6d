"""What every model family shares: named removable blocks, probe kinds, lesioning and surgery.

A family subclasses :class:`BlockNet` and provides its blocks (modules with a ``bypassed`` flag
that makes their forward return the shortcut), ``block_info()``, ``arch()``, the probe points of
each kind and ``_rebuilt(keep)``, a fresh model holding only the kept blocks.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..probes import ProbePoint

__all__ = ["MAX_PARAMETERS", "BlockNet", "Indices", "check_size"]

# Largest model a family builds: 2e9 parameters (8 GB of float32 weights, about 4x that to
# train with Adam). Checked from the config before any weight tensor is allocated.
MAX_PARAMETERS = 2_000_000_000


def check_size(what: str, num_params: int) -> None:
    """Refuse a model whose estimated parameter count exceeds :data:`MAX_PARAMETERS`."""
    if num_params > MAX_PARAMETERS:
        raise ValueError(
            f"{what} would have about {num_params:.3g} parameters ({4 * num_params / 2**30:.3g} "
            f"GiB of float32 weights), above the limit of {MAX_PARAMETERS:.0e} (MAX_PARAMETERS); "
            "choose a smaller width (--width / --width-mult)."
        )


MAX_LAYERS = 10_000  # blocks of one model: more builds modules for minutes before any check


def check_layers(what: str, n: int) -> None:
    """Refuse a model of more than :data:`MAX_LAYERS` blocks before building any of them."""
    if n > MAX_LAYERS:
        raise ValueError(
            f"{what} would have {n:,} blocks, above the limit of {MAX_LAYERS:,} (MAX_LAYERS); "
            "choose a smaller depth."
        )


# Blocks are named by index in forward order (0..n-1) or by name ("c.12", "hidden.3").
Indices = int | str | Iterable[int | str]


class BlockNet(nn.Module):
    """Base of our model families; see ARCHITECTURE.md "Our models"."""

    name: str = ""  # registry name, written into arch()
    probe_kinds: tuple[str, ...] = ()  # the first one is the default

    # ---------------------------------------------------------------- family interface
    def _block_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def block_info(self) -> list[dict]:
        """One dict per block in forward order: name, index, stage, position_in_stage,
        projecting (shortcut is a projection), lesionable (has a shortcut of the right shape)."""
        raise NotImplementedError

    def arch(self) -> dict:
        """JSON-able structure; ``create_model(**arch)`` rebuilds it with fresh weights."""
        raise NotImplementedError

    def _points(self, kind: str) -> list[ProbePoint]:
        raise NotImplementedError

    def _rebuilt(self, keep: list[int]) -> BlockNet:
        """A fresh model of the same family and settings holding only blocks ``keep``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared API
    def block_names(self) -> list[str]:
        """Removable units in forward order, e.g. ["a.0", "a.1", "b.0", ...]."""
        return [d["name"] for d in self.block_info()]

    def stage_of(self, index: int | str) -> str:
        """Stage of a block: "a".."d" for conv nets, "hidden" for FNNs."""
        return self.block_info()[self._resolve(index)[0]]["stage"]

    def probe_points(self, kind: str | None = None) -> list[ProbePoint]:
        """Declared probe points of ``kind`` (default: ``probe_kinds[0]``) in forward order;
        names are block names."""
        kind = self.probe_kinds[0] if kind is None else kind
        if kind not in self.probe_kinds:
            raise ValueError(
                f"{self.name} has no probe kind {kind!r}; kinds: {', '.join(self.probe_kinds)} "
                f"(default {self.probe_kinds[0]!r})."
            )
        return self._points(kind)

    def _resolve(self, indices: Indices) -> list[int]:
        """Block indices (sorted, unique) from ints and/or block names."""
        names = self.block_names()
        if isinstance(indices, (int, str)) or not isinstance(indices, Iterable):
            indices = [indices]
        out: set[int] = set()
        for i in indices:
            if isinstance(i, str):
                if i not in names:
                    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                    raise ValueError(f"no block named {i!r}; blocks: {shown or '(none)'}.")
                out.add(names.index(i))
                continue
            if isinstance(i, bool):
                raise TypeError(f"block index must be an int or a block name, got {i!r}.")
            try:
                j = operator.index(i)
            except TypeError:
                raise TypeError(
                    f"block index must be an int or a block name, got {type(i).__name__}."
                ) from None
            if not 0 <= j < len(names):
                raise ValueError(
                    f"block index {j} out of range: this model has {len(names)} blocks "
                    f"(indices 0..{len(names) - 1})."
                )
            out.add(j)
        return sorted(out)

    @contextmanager
    def lesioned(self, indices: Indices) -> Iterator[BlockNet]:
        """Inside the context, blocks ``indices`` return their shortcut (identity, or the
        projection of projecting blocks) instead of running. No copy; the previous state is
        restored on exit, also when the body raises. Nesting is allowed."""
        idx = self._resolve(indices)
        info = self.block_info()
        bad = [info[i]["name"] for i in idx if not info[i]["lesionable"]]
        if bad:
            raise ValueError(
                f"cannot lesion {', '.join(bad)} of this {self.name}: the block changes the "
                "tensor shape and has no shortcut to replace it (only residual blocks have a "
                "projection). Lesion shape-preserving blocks only."
            )
        mods = self._block_modules()
        saved = [(mods[i], mods[i].bypassed) for i in idx]
        try:
            for m, _ in saved:
                m.bypassed = True
            yield self
        finally:
            for m, state in saved:
                m.bypassed = state

    def without_blocks(self, indices: Indices, carry_weights: bool = True) -> BlockNet:
        """A new model of the same family with blocks ``indices`` removed (removing every
        block is allowed: an FNN becomes a linear classifier, a conv net stem + GAP + fc).

        carry_weights: every state entry (parameters and BatchNorm buffers) of the new model
        takes the value of its counterpart (surviving block, stem, head) when the shapes match,
        else keeps its fresh init. Device, dtype and train/eval mode follow this model.
        """
        drop = set(self._resolve(indices))
        keep = [i for i in range(len(self.block_names())) if i not in drop]
        new = self._rebuilt(keep)
        self._follow(new)
        if carry_weights:
            old_names = self.block_names()
            rename = {n: old_names[k] for n, k in zip(new.block_names(), keep, strict=True)}
            self._carry_into(new, rename)
        return new

    def _follow(self, new: nn.Module) -> None:
        p = next(self.parameters(), None)
        if p is not None:
            new.to(device=p.device, dtype=p.dtype)
        new.train(self.training)

    def _carry_into(self, new: nn.Module, rename: dict[str, str]) -> None:
        """Copy state entries into ``new`` where shapes match; ``rename`` maps new block names
        to the old blocks they came from (other keys, e.g. stem/head, map to themselves)."""
        src = self.state_dict()
        dst = new.state_dict()
        for key in dst:
            block = ".".join(key.split(".")[:2])  # "c.12.conv1.weight" -> "c.12"
            skey = rename[block] + key[len(block) :] if block in rename else key
            s = src.get(skey)
            if s is not None and s.shape == dst[key].shape:
                dst[key] = s
        with torch.no_grad():
            new.load_state_dict(dst)
