"""SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5 files).

X is (32, 32, 3, N) uint8 and y is (N, 1) with labels 1..10, where 10 stands for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .common import CorruptDataError

__all__ = ["FILES", "URL", "read_mat"]

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
URL = "http://ufldl.stanford.edu/housenumbers/"


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 3, 32, 32) uint8, labels (N,) int64 in 0..9."""
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/... on bad files
        raise CorruptDataError(
            f"{path}: not a readable SVHN .mat file ({type(exc).__name__}: {exc}); "
            "delete it and download it again"
        ) from exc
    if "X" not in mat or "y" not in mat:
        raise CorruptDataError(f"{path}: expected variables X and y, found {sorted(mat)}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise CorruptDataError(
            f"{path}: X has shape {x.shape} and y {y.shape}; expected (32, 32, 3, N) and (N, 1)"
        )
    if x.dtype != np.uint8:
        raise CorruptDataError(f"{path}: X is {x.dtype}, expected uint8 pixels")
    if y.size and not (1 <= y.min() and y.max() <= 10):
        raise CorruptDataError(f"{path}: labels outside 1..10 ({y.min()}..{y.max()})")
    y = y.astype(np.int64) % 10  # label 10 is the digit 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y
