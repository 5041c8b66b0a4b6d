"""A small embedded dataset for tests and demos: no files, generated from a fixed seed.

10 classes of 1x28x28 images. Each class has a blocky prototype (a random 7x7 on/off pattern
upscaled 4x, so classes differ in many pixels); a sample is its prototype shifted by up to 2
pixels, scaled by a random contrast in [0.6, 1], plus Gaussian noise (sigma 0.2), clipped.
A small FNN learns it to high accuracy in an epoch or two, but not trivially (noise and shifts
give nonzero training loss), and distinct samples never coincide.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NUM_CLASSES", "SIZES", "make_synthetic"]

NUM_CLASSES = 10
SIZES = {"train": 2000, "test": 500}
_PROTOTYPE_SEED = 1234
_SPLIT_SEEDS = {"train": 1, "test": 2}


def _prototypes() -> np.ndarray:
    """(10, 28, 28) float in {0, 1}."""
    rng = np.random.default_rng(_PROTOTYPE_SEED)
    coarse = (rng.random((NUM_CLASSES, 7, 7)) < 0.4).astype(np.float64)
    return coarse.repeat(4, axis=1).repeat(4, axis=2)


def make_synthetic(split: str) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 1, 28, 28) uint8, labels (N,) int64; identical on every call and machine."""
    n = SIZES[split]
    rng = np.random.default_rng(_SPLIT_SEEDS[split])
    labels = np.arange(n, dtype=np.int64) % NUM_CLASSES  # balanced, interleaved
    rng.shuffle(labels)
    protos = _prototypes()[labels]  # (N, 28, 28)
    shifts = rng.integers(-2, 3, size=(n, 2))
    x = np.stack([np.roll(p, tuple(s), axis=(0, 1)) for p, s in zip(protos, shifts, strict=True)])
    x = x * rng.uniform(0.6, 1.0, size=(n, 1, 1)) + rng.normal(0.0, 0.2, size=x.shape)
    images = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return images[:, None], labels
