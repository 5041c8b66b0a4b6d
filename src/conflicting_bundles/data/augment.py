"""Preprocessing, augmentation (docs/method.md §4) and the batch iterator.

Batched torch ops; all randomness comes from one ``torch.Generator`` seeded from (seed, epoch),
so a batch stream is reproducible and independent of the global RNG. Each recipe follows the
reference TF pipeline (peerdavid/conflicting-bundles, data/*.py) step by step, in its order:

    gray (MNIST, Fashion, synthetic)  eval: x/255
        train: x/255, pad 2 + random crop 28, brightness +-0.25
    cifar  eval: standardise(x/255)
        train: standardise, pad 3 + random crop 32, random flip, brightness +-0.25
    svhn   eval: standardise(x/255)
        train: pad 2 + random crop 32, standardise, brightness +-0.25
    imagenette  eval: standardise(x/255)
        train: pad 5 + random crop 128, random flip, standardise, brightness +-0.25

Brightness is applied after standardisation, as in the reference: before it, the mean subtraction
would cancel it exactly. Padding is with zeros (``tf.image.resize_with_pad``). No clipping.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .common import ArrayDataset

__all__ = [
    "brightness",
    "iterate",
    "make_generator",
    "num_batches",
    "preprocess",
    "random_crop",
    "random_flip",
    "standardize",
]

BRIGHTNESS = 0.25


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation like ``tf.image.per_image_standardization``:
    (x - mean) / max(std, 1/sqrt(numel)) over each image's C*H*W values. x: (B, C, H, W)."""
    flat = x.flatten(1)
    mean = flat.mean(1)
    std = flat.std(1, correction=0).clamp_min(1.0 / math.sqrt(flat.shape[1]))
    return (x - mean[:, None, None, None]) / std[:, None, None, None]


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` on each side, then crop back to (H, W) at a random offset per image."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def brightness(x: torch.Tensor, max_delta: float, g: torch.Generator) -> torch.Tensor:
    """Add one uniform delta in [-max_delta, max_delta) per image (tf.image.random_brightness)."""
    delta = (torch.rand(x.shape[0], generator=g) * 2.0 - 1.0) * max_delta
    return x + delta.to(x.device)[:, None, None, None]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _train_gray(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = random_crop(x, 2, g)
    return brightness(x, BRIGHTNESS, g)


def _train_cifar(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = standardize(x)
    x = random_crop(x, 3, g)
    x = random_flip(x, g)
    return brightness(x, BRIGHTNESS, g)


def _train_svhn(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = random_crop(x, 2, g)
    x = standardize(x)
    return brightness(x, BRIGHTNESS, g)


def _train_imagenette(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = random_crop(x, 5, g)
    x = random_flip(x, g)
    x = standardize(x)
    return brightness(x, BRIGHTNESS, g)


def _no_lookup(name: str) -> str:
    raise RuntimeError("no dataset registry installed its recipe lookup (import .data first)")


# dataset name -> its recipe: data.registry installs its recipe_of here when the package is
# imported (this module sits below the registry and imports nothing of it).
_recipe_of: Callable[[str], str] = _no_lookup


def set_recipe_lookup(fn: Callable[[str], str]) -> None:
    """Install the dataset-name -> recipe lookup (data.registry.recipe_of)."""
    global _recipe_of
    _recipe_of = fn


# recipe -> (eval transform, train transform), both on x/255 in float32.
RECIPES: dict[str, tuple[Callable, Callable]] = {
    "gray": (_identity, _train_gray),
    "cifar": (standardize, _train_cifar),
    "svhn": (standardize, _train_svhn),
    "imagenette": (standardize, _train_imagenette),
}


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if hasattr(images, "shape") else type(images)
        raise TypeError(f"expected a uint8 tensor (N, C, H, W) of raw pixels, got {got}")


def preprocess(name: str, images: torch.Tensor) -> torch.Tensor:
    """Evaluation preprocessing of dataset ``name``: uint8 (N, C, H, W) -> float32 (N, C, H, W).
    The same as ``iterate(..., augment=False)``."""
    _check_images(images)
    return RECIPES[_recipe_of(name)][0](images.float() / 255.0)


def make_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch) through numpy's SeedSequence, so nearby
    (seed, epoch) pairs give unrelated streams."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    hi, lo = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(((int(hi) << 32) | int(lo)) & (2**63 - 1))


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate(
    ds: ArrayDataset,
    batch_size: int,
    *,
    shuffle: bool,
    augment: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    device: torch.device | str | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x float32 (B, C, H, W), y int64 (B,)) of ``ds``, one pass.

    shuffle: a fresh permutation per (seed, epoch). augment: training augmentation, else the
    evaluation preprocessing. Identical (seed, epoch, batch_size) give identical batches.
    device: where the preprocessing runs and the batches live (random draws stay on the CPU,
    so the stream does not depend on it). Arguments are checked here, not at the first batch.
    shard: (rank, world) for data-parallel training. Every rank forms the same global batches
    of ``batch_size`` (same order, same augmentation draws as one process) and keeps its
    contiguous slice ``[ceil(B*rank/world), ceil(B*(rank+1)/world))``, so the slices of all
    ranks concatenate to the single-process batch. Every rank yields the same number of batches;
    rank 0's slice is never empty, the last ranks' are when a batch has fewer samples than
    ranks. With augmentation each rank augments the whole global batch, then slices (the
    random draws are made per batch).
    """
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if shard is not None:
        r, w = shard
        if not (isinstance(r, numbers.Integral) and isinstance(w, numbers.Integral) and 0 <= r < w):
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    eval_fn, train_fn = RECIPES[_recipe_of(ds.name)]
    g = make_generator(seed, epoch)
    n = len(ds)
    order = torch.randperm(n, generator=g) if shuffle else None
    stop = num_batches(n, batch_size, drop_last) * batch_size

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, min(stop, n), batch_size):
            if order is None:  # contiguous slices: no gather copy
                x, y = ds.images[i : i + batch_size], ds.labels[i : i + batch_size]
            else:
                j = order[i : i + batch_size]
                x, y = ds.images[j], ds.labels[j]
            if shard is not None:
                b = len(y)
                part = slice(-(-b * shard[0] // shard[1]), -(-b * (shard[0] + 1) // shard[1]))
                y = y[part]
                if not augment:  # per-image preprocessing, no draws: slice first
                    x = x[part]
            x = x.to(device).float() / 255.0
            x = train_fn(x, g) if augment else eval_fn(x)
            if shard is not None and augment:
                x = x[part]
            yield x, y.to(device)

    return batches()
