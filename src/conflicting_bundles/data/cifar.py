"""CIFAR-10 / CIFAR-100 "python version" pickles.

Each pickle is a dict with b"data": (N, 3072) uint8 (R, G, B planes of 32x32, row-major) and the
labels under b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100, 100 classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import CorruptDataError, safe_unpickle

__all__ = ["CIFAR10", "CIFAR100", "CifarLayout", "read_batch", "load_cifar"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant lives: ``folder`` (inside the extracted archive at ``url``) holds
    ``files[split]``; labels are under ``label_key``."""

    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: str
    url: str

    def complete(self, root: Path) -> bool:
        d = root / self.folder
        return all((d / f).is_file() for fs in self.files.values() for f in fs)


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key="labels",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
CIFAR100 = CifarLayout(
    folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    label_key="fine_labels",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 3, 32, 32) uint8, labels (N,) int64 from one pickle file."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CorruptDataError(f"{path}: cannot read ({exc})") from exc
    d = safe_unpickle(blob, path, encoding="bytes")
    if not isinstance(d, dict):
        raise CorruptDataError(f"{path}: expected a dict, got {type(d).__name__}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise CorruptDataError(f"{path}: missing 'data' or '{label_key}' (keys: {sorted(d)})")
    data, labels = np.asarray(d["data"]), np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptDataError(f"{path}: data is {data.dtype} {data.shape}, expected (N, 3072)")
    if labels.shape != (data.shape[0],):
        raise CorruptDataError(f"{path}: {labels.shape} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: Path, layout: CifarLayout, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All batches of ``split`` concatenated, in file order."""
    parts = [read_batch(root / layout.folder / f, layout.label_key) for f in layout.files[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
