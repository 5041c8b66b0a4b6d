"""Shared pieces of the data package: the in-memory dataset, errors, and file helpers (safe
unpickling, downloads, archive extraction, npz caches). Format modules build on these."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ArrayDataset",
    "CorruptDataError",
    "DatasetError",
    "DatasetNotFoundError",
    "download_url",
    "extract_tar",
    "load_npz",
    "safe_unpickle",
    "save_npz",
]


class DatasetError(RuntimeError):
    """Base class of every data error raised by this package."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset is not on disk (the message says where we looked and how to get it)."""


class CorruptDataError(DatasetError, ValueError):
    """A data file exists but cannot be read (the message names the file)."""


@dataclass
class ArrayDataset:
    """A whole split in memory.

    images: (N, C, H, W) uint8, raw pixels (preprocessing happens per batch in ``iterate``).
    labels: (N,) int64 in [0, num_classes).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ArrayDataset '{self.name}': images must be uint8 (N, C, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ArrayDataset '{self.name}': labels must be int64 of shape "
                f"({self.images.shape[0]},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.labels.numel() and not (
            0 <= int(self.labels.min()) <= int(self.labels.max()) < self.num_classes
        ):
            raise ValueError(
                f"ArrayDataset '{self.name}': labels must lie in [0, {self.num_classes}), got "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> ArrayDataset:
        """The first n samples (all of them if n >= len), as views, not copies."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        return ArrayDataset(self.images[:n], self.labels[:n], self.num_classes, self.name)


# ----------------------------------------------------------------------------------------------
# Safe unpickling. Dataset pickles (CIFAR batches, mnist.pkl.gz) only hold dicts, lists, bytes and
# numpy arrays; a plain pickle.load would run any code a tampered file names, so only the numpy
# array constructors are allowed.

_ALLOWED_GLOBALS = {
    (mod, name)
    for core in ("numpy.core", "numpy._core")
    for mod, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core"):  # numpy >= 2 moved numpy.core to numpy._core
            try:
                return super().find_class(module.replace("numpy.core", "numpy._core"), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def safe_unpickle(data: bytes, path: Path | str, encoding: str = "bytes") -> object:
    """Unpickle ``data`` (read from ``path``) allowing numpy arrays only; CorruptDataError names
    ``path`` when the bytes are not such a pickle."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()
    except Exception as exc:  # any failure inside pickle means the file is unusable
        raise CorruptDataError(
            f"{path}: not a readable dataset pickle ({type(exc).__name__}: {exc}). "
            "The file is truncated or corrupt: delete it and obtain it again."
        ) from exc


# ----------------------------------------------------------------------------------------------
# Downloads and archives (only used with download=True; never in tests).


def download_url(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` (written to a temporary name first, so an interrupted download
    never leaves a truncated file under the final name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    print(f"downloading {url} -> {dest}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f, length=1 << 20)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url}: {exc}. Download it by hand and save it as {dest}."
        ) from exc
    os.replace(tmp, dest)
    return dest


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract a .tar/.tar.gz into ``dest``, refusing members that escape it."""
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.11.4: check paths ourselves
                root = dest.resolve()
                for m in tar.getmembers():
                    if not (root / m.name).resolve().is_relative_to(root):
                        raise tarfile.TarError(f"member {m.name!r} escapes {dest}")
                tar.extractall(dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptDataError(
            f"{archive}: cannot extract ({exc}); delete it and download again."
        ) from exc


# ----------------------------------------------------------------------------------------------
# npz caches of decoded arrays.


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed npz atomically (temp file + rename): readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache is as readable as its sources
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read ``keys`` from a cache written by :func:`save_npz` (no pickled objects allowed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except Exception as exc:
        raise CorruptDataError(
            f"{path}: unreadable cache ({type(exc).__name__}: {exc}); delete it to rebuild it."
        ) from exc
