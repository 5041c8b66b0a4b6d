"""``checkerboard:K``: a 2-D start where depth matters (issue 21), generated, no files.

A sample is a point (x, y) in [0, 1]^2 with label (floor(K x) + floor(K y)) mod 2: a K x K
board of two classes. 20,000 training and 10,000 test points, drawn uniformly from fixed seeds
(the test set from a different seed than the training set), identical on every machine.

Stored like every dataset here, as uint8 "pixels": a sample is (1, 1, 2) (two values; an FNN
flattens it to 2 inputs). Each coordinate is one of 256 levels v in {0..255}, the point is
(v + 0.5) / 256 (so the board is exact for K dividing 256: 1, 2, 4, 8, ...) and the network
sees v / 255. Recipe ``points``: no augmentation, evaluation and training alike x / 255.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .sources import DatasetInfo, Source

__all__ = [
    "DEFAULT_K",
    "MAX_K",
    "PREFIX",
    "RECIPE",
    "SIZES",
    "CheckerboardSource",
    "install_recipe",
    "make_checkerboard",
    "parse_k",
]

PREFIX = "checkerboard:"
DEFAULT_K = 4  # the member `cbundles datasets` lists
MAX_K = 64
SIZES = {"train": 20000, "test": 10000}
SEEDS = {"train": 2021, "test": 2022}  # different seeds: the test set is no copy of training
RECIPE = "points"
LEVELS = 256


def parse_k(name: str) -> int | None:
    """K of ``checkerboard:K``; None when ``name`` is not of the family; ValueError (one line,
    what to write instead) for a malformed K."""
    if not name.startswith(PREFIX):
        return None
    text = name[len(PREFIX) :]
    if not text.isdigit() or not 1 <= int(text) <= MAX_K:
        raise ValueError(
            f"dataset {name!r}: K must be a whole number from 1 to {MAX_K}, e.g. "
            f"{PREFIX}{DEFAULT_K}."
        )
    return int(text)


@lru_cache(maxsize=16)
def _make(k: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEEDS[split])
    v = rng.integers(0, LEVELS, size=(SIZES[split], 2))  # the same points for every K
    cells = np.floor(k * (v + 0.5) / LEVELS).astype(np.int64)
    labels = cells.sum(axis=1) % 2
    images = v.astype(np.uint8).reshape(-1, 1, 1, 2)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def make_checkerboard(k: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 1, 1, 2) uint8, labels (N,) int64 in {0, 1}; the same on every call."""
    images, labels = _make(int(k), split)
    return images.copy(), labels.copy()


def _identity(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    return x


def install_recipe() -> None:
    """Add the ``points`` recipe (no preprocessing beyond x / 255, no augmentation) to
    augment.RECIPES. Called at use (augment imports the registry, so not at import time)."""
    from . import augment

    augment.RECIPES.setdefault(RECIPE, (_identity, _identity))


@dataclass(frozen=True)
class CheckerboardSource(Source):
    k: int = DEFAULT_K

    @classmethod
    def of(cls, k: int) -> CheckerboardSource:
        info = DatasetInfo(f"{PREFIX}{k}", (1, 1, 2), 2)
        return cls(info, RECIPE, (SIZES["train"], SIZES["test"]), k)

    def candidates(self, root):
        return []

    def locate(self, root):
        return Path("<built in>")

    def read(self, root, split):
        return make_checkerboard(self.k, split)

    def obtain(self, root):
        return f"built in (generated from fixed seeds); any K: {PREFIX}K, K = 1..{MAX_K}"
