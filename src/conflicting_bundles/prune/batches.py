"""Batch plumbing shared by the scorers, healing and the runner.

A *batch* is ``(inputs, labels)`` or ``inputs`` alone. *Inputs* are a tensor (``model(x)``), a
tuple/list (positional arguments) or a mapping such as a tokenizer's ``BatchEncoding``
(keyword arguments). A mapping's ``attention_mask`` (B, T) marks real tokens (1) and padding
(0); every scorer reads only the real tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .discovery import to_device

__all__ = [
    "split_batch",
    "batch_len",
    "slice_inputs",
    "iter_samples",
    "attention_mask",
    "decoder_blocks",
    "feature_rows",
    "first_inputs",
    "sample_rows",
    "pad_rows",
]


def split_batch(batch) -> tuple[object, torch.Tensor | None]:
    """(inputs, labels or None) from a batch: (x, y), [x, y], or x alone."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], None if batch[1] is None else torch.as_tensor(batch[1])
    return batch, None


def batch_len(x) -> int:
    """Number of samples of an input (tensor, mapping or tuple of tensors)."""
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    if isinstance(x, Mapping):
        return batch_len(next(v for v in x.values() if torch.is_tensor(v)))
    if isinstance(x, (tuple, list)):
        return batch_len(x[0])
    raise TypeError(f"cannot find the batch size of an input of type {type(x).__name__}.")


def slice_inputs(x, s: int, e: int):
    """Samples s..e-1 of an input (tensor, mapping or tuple of tensors); a mapping becomes a
    dict."""
    if isinstance(x, torch.Tensor):
        return x[s:e]
    if isinstance(x, Mapping):
        return {k: slice_inputs(v, s, e) if torch.is_tensor(v) else v for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(slice_inputs(v, s, e) if torch.is_tensor(v) else v for v in x)
    return x


def first_inputs(batches: Iterable, n: int = 2):
    """The first ``n`` samples of the first batch's inputs (an example for find_blocks)."""
    for batch in batches:
        x, _ = split_batch(batch)
        return slice_inputs(x, 0, n)
    raise ValueError("batches are empty: need at least one batch to run the model.")


def iter_samples(batches: Iterable, n_samples: int | None, device=None):
    """Yield (inputs, labels or None) from ``batches``, truncated to the first ``n_samples``
    samples (all if None), moved to ``device``."""
    have = 0
    for batch in batches:
        x, y = split_batch(batch)
        b = batch_len(x)
        take = b if n_samples is None else min(b, n_samples - have)
        if take <= 0:
            break
        if take < b:
            x, y = slice_inputs(x, 0, take), None if y is None else y[:take]
        yield to_device(x, device), None if y is None else y.to(device)
        have += take
        if n_samples is not None and have >= n_samples:
            break
    if have == 0:
        raise ValueError("batches yielded no samples: scoring needs at least one input batch.")


def attention_mask(x, key: str = "attention_mask") -> torch.Tensor | None:
    """The (B, T) boolean mask of real tokens of a mapping input (``key``: the encoder's
    ``attention_mask``, or ``decoder_attention_mask`` of an encoder-decoder input), or None."""
    if isinstance(x, Mapping):
        m = x.get(key)
        if torch.is_tensor(m) and m.dim() == 2:
            return m.bool()
    return None


def decoder_blocks(model: nn.Module, blocks) -> set[str]:
    """Names of the blocks that lie in the decoder stack of an encoder-decoder model (T5's
    ``decoder.block.N``: a module on the way has ``is_decoder`` set); their tokens are masked by
    ``decoder_attention_mask``, not by the encoder's ``attention_mask``."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return set()
    out = set()
    for b in blocks:
        parts = b.name.split(".")
        path = (model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts) + 1))
        if any(getattr(m, "is_decoder", False) is True for m in path):
            out.add(b.name)
    return out


def feature_rows(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D) -> (B, D); (B, T, D) -> (B*T, D), or only the rows where ``mask`` (B, T) is true;
    (B, C, *S) -> (B*prod(S), C); float32."""
    t = t.float()
    if t.dim() == 1:
        return t[:, None]
    if t.dim() == 2:
        return t
    if t.dim() == 3:
        if mask is not None and tuple(mask.shape) == tuple(t.shape[:2]):
            return t[mask.to(t.device)]
        return t.reshape(-1, t.shape[-1])
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def sample_rows(t: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One flat row per sample: (B, ...) -> B tensors. For a sequence (B, T, D) with a mask,
    each sample keeps only its real tokens, in order (t_i * D values), so padding (left or
    right, any length) does not change the row."""
    t = t.float()
    if t.dim() == 3 and mask is not None and tuple(mask.shape) == tuple(t.shape[:2]):
        m = mask.to(t.device)
        return [t[i][m[i]].reshape(-1) for i in range(t.shape[0])]
    return list(t.reshape(t.shape[0], -1))


def pad_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack 1-D rows of possibly different lengths, zero-padded at the end: (N, max len).
    Zero columns change neither which rows are equal nor max-norm distances between them."""
    width = max(r.numel() for r in rows)
    out = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out
