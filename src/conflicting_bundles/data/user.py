"""The user's own data: a folder of images (``load_dataset("folder:PATH")``) and torch
``Dataset`` / ``DataLoader`` objects or tensors (:func:`from_torch`), both turned into the
project's :class:`ArrayDataset` and made known to the registry, so ``dataset_info``,
``iterate`` and ``TrainConfig(dataset=...)`` accept them like a built-in dataset.

Folder layouts (class = sub-folder name, classes sorted; .jpg/.jpeg/.png):

    PATH/train/<class>/*  and  PATH/val/<class>/* (or PATH/test/<class>/*)
    PATH/<class>/*        one folder: every 5th image of each class (sorted by file name) is
                          the test split, the rest the training split

``folder:PATH?size=N`` letterboxes every image to N x N RGB (default 32). Decoded images are
cached in the data directory (folders/*.npz), keyed by the files' names, sizes and times.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .common import ArrayDataset, DatasetError, load_npz, save_npz
from .imagefolder import IMAGE_SUFFIXES, letterbox
from .sources import SPLITS, DatasetInfo, Source

__all__ = ["FOLDER_PREFIX", "FolderSource", "MemorySource", "from_torch", "user_source"]

FOLDER_PREFIX = "folder:"
DEFAULT_SIZE = 32
TEST_EVERY = 5  # one-folder layout: every 5th image per class is held out as the test split
_TEST_DIRS = ("val", "test")
_MEMORY: dict[str, MemorySource] = {}
_FOLDERS: dict[str, FolderSource] = {}
RESERVED: set[str] = set()  # registered dataset names (data.registry adds each one)


# ------------------------------------------------------------------------------ image folders
MAX_SIZE = 1024  # ?size=N: N x N x 3 bytes per image, all of them in memory


def parse_folder_name(name: str) -> tuple[Path, int]:
    """ "folder:PATH?size=N" -> (PATH, N)."""
    spec = name[len(FOLDER_PREFIX) :]
    path, _, query = spec.partition("?")
    size = DEFAULT_SIZE
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key != "size" or not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"dataset {name!r}: unknown option {part!r}; the only option is ?size=N "
                f"(images are letterboxed to N x N, default {DEFAULT_SIZE})"
            )
        size = int(value)
        if size > MAX_SIZE:
            raise ValueError(
                f"dataset {name!r}: size={size} is more than {MAX_SIZE} (each image is decoded "
                f"to size x size x 3 bytes and kept in memory); choose a smaller size"
            )
    if not path:
        raise ValueError("dataset 'folder:' needs a path: folder:PATH or folder:PATH?size=N")
    return Path(path).expanduser(), size


def _classes(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class FolderSource(Source):
    """Images in class folders under ``path`` (either layout of the module docstring)."""

    path: Path = Path()
    classes: tuple[str, ...] = ()

    @classmethod
    def from_name(cls, name: str) -> FolderSource:
        path, size = parse_folder_name(name)
        if not path.is_dir():
            raise DatasetError(f"dataset {name!r}: {path} is not a directory of class folders")
        top = path / "train" if (path / "train").is_dir() else path
        classes = tuple(_classes(top))
        if len(classes) < 2:
            raise DatasetError(
                f"dataset {name!r}: {top} holds {len(classes)} class folder(s); put the images "
                f"of each class in its own sub-folder (at least 2), e.g. {top}/cat/1.jpg"
            )
        info = DatasetInfo(name, (3, size, size), len(classes))
        return cls(info, "cifar", (0, 0), path=path, classes=classes)

    def split_dirs(self) -> tuple[Path, Path | None]:
        """(train folder, test folder); test None = the one-folder layout."""
        if (self.path / "train").is_dir():
            test = next((self.path / t for t in _TEST_DIRS if (self.path / t).is_dir()), None)
            if test is None:
                raise DatasetError(
                    f"{self.path}: has train/ but no val/ or test/ next to it; add one, or put "
                    f"the class folders directly in {self.path} (every {TEST_EVERY}th image "
                    "then forms the test split)"
                )
            return self.path / "train", test
        return self.path, None

    def files(self, split: str) -> tuple[list[Path], list[int]]:
        train_dir, test_dir = self.split_dirs()
        base = train_dir if split == "train" or test_dir is None else test_dir
        if test_dir is not None and split == "test":
            unknown = set(_classes(test_dir)) - set(self.classes)
            if unknown:
                raise DatasetError(f"{test_dir}: class folders {sorted(unknown)} not in train/")
        files, labels = [], []
        for label, c in enumerate(self.classes):
            found = _images(base / c) if (base / c).is_dir() else []
            if test_dir is None:
                held = split == "test"
                found = [
                    f for i, f in enumerate(found) if (i % TEST_EVERY == TEST_EVERY - 1) == held
                ]
            files += found
            labels += [label] * len(found)
        if not files:
            raise DatasetError(
                f"{base}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) for split {split!r}"
            )
        return files, labels

    def candidates(self, root):
        return [self.path]

    def locate(self, root):
        return self.path if self.path.is_dir() else None

    def cache_path(self, root: Path, split: str, files: list[Path]) -> Path:
        h = hashlib.sha1(f"{self.path.resolve()}|{self.info.in_shape[1]}|{split}".encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return root / "folders" / f"{self.path.name}-{split}-{h.hexdigest()[:16]}.npz"

    def read(self, root, split):
        files, labels = self.files(split)
        cache = self.cache_path(root, split, files)
        if cache.is_file():
            arrays = load_npz(cache, ("x", "y"))
            return arrays["x"], arrays["y"]
        print(f"decoding {len(files)} images from {self.path} ({split}; cached in {cache})")
        x = np.stack([letterbox(f, self.info.in_shape[1]) for f in files])
        y = np.asarray(labels, dtype=np.int64)
        save_npz(cache, x=x, y=y)
        return x, y

    def fetch(self, root):
        raise DatasetError(f"{self.path}: a local folder cannot be downloaded")

    def obtain(self, root):
        return f"a folder of class sub-folders with images at {self.path}"


# ------------------------------------------------------------------------- torch data in memory
@dataclass(frozen=True)
class MemorySource(Source):
    """Splits handed over in this process by :func:`from_torch`."""

    splits: tuple[tuple[str, ArrayDataset], ...] = ()

    def candidates(self, root):
        return []

    def locate(self, root):
        return Path("<in memory>")

    def read(self, root, split):
        found = dict(self.splits)
        if split not in found:
            raise DatasetError(
                f"dataset {self.info.name!r} has no {split!r} split in this process; pass it "
                f"with from_torch(data, name={self.info.name!r}, split={split!r})"
            )
        return found[split].images.numpy(), found[split].labels.numpy()

    def obtain(self, root):
        return "from_torch(...) in this process"


def _image_tensor(img) -> torch.Tensor:
    """One image as uint8 (C, H, W): a tensor (C, H, W) uint8 or float in [0, 1], a PIL image
    or a numpy array (H, W, C) / (H, W)."""
    if not isinstance(img, torch.Tensor):
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise TypeError(f"an image must be (H, W) or (H, W, C), got shape {arr.shape}")
        img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return _to_uint8(img[None])[0]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images: uint8 kept, floats in [0, 1] scaled to 0..255."""
    if x.dim() == 3:
        x = x[:, None]  # (N, H, W) gray
    if x.dim() != 4:
        raise TypeError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"float images must lie in [0, 1] (raw pixels / 255), got [{lo:.3g}, {hi:.3g}]: "
            "pass un-normalised images; the project applies its own preprocessing"
        )
    return (x * 255).round().to(torch.uint8)


def _collect(data, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a (images, labels) pair, a DataLoader (batches) or a map-style
    Dataset (samples)."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        return _to_uint8(x[:limit]), torch.as_tensor(y[:limit]).long()
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys, n = [], [], 0
        for batch in data:
            x, y = batch[0], batch[1]
            xs.append(_to_uint8(torch.as_tensor(x)))
            ys.append(torch.as_tensor(y).long().reshape(-1))
            n += len(ys[-1])
            if limit is not None and n >= limit:
                break
        if not xs:
            raise ValueError("the DataLoader yielded no batches")
        return torch.cat(xs)[:limit], torch.cat(ys)[:limit]
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(
            f"expected a torch Dataset, a DataLoader or (images, labels) tensors, got "
            f"{type(data).__name__}"
        )
    n = len(data) if limit is None else min(limit, len(data))
    if n == 0:
        raise ValueError("the dataset is empty")
    samples = [data[i] for i in range(n)]
    x = torch.stack([_image_tensor(s[0]) for s in samples])
    y = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.int64)
    return x, y


def from_torch(
    data,
    *,
    name: str,
    split: str = "train",
    num_classes: int | None = None,
    recipe: str | None = None,
    limit: int | None = None,
) -> ArrayDataset:
    """Turn user data into an :class:`ArrayDataset` and register it as dataset ``name``
    (split ``split``), so ``load_dataset(name, split)``, ``dataset_info(name)`` and
    ``TrainConfig(dataset=name)`` use it in this process (not in other processes: grid
    workers and torchrun ranks need a folder or a registered loader instead).

    data: a map-style Dataset of (image, label) samples, a DataLoader of (x, y) batches, or
    (images (N, C, H, W), labels (N,)) tensors. Images: uint8 or float in [0, 1] (raw pixels,
    not normalised), tensors (C, H, W), PIL images or arrays (H, W[, C]); all of one size.
    num_classes: default 1 + the largest label (of this and the other registered split).
    recipe: preprocessing/augmentation recipe (augment.RECIPES): default "gray" for one
    channel, "cifar" otherwise (standardise; crop, flip, brightness when augmenting).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if name in RESERVED or name.startswith(FOLDER_PREFIX) or not name:
        raise ValueError(f"name {name!r} is taken by a built-in dataset; choose another")
    x, y = _collect(data, limit)
    old = _MEMORY.get(name)
    others = [ds for s, ds in (old.splits if old else ()) if s != split]
    if others and others[0].images.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"{name!r} {split}: images {tuple(x.shape[1:])} differ from the other split's "
            f"{tuple(others[0].images.shape[1:])}"
        )
    if num_classes is None:
        num_classes = 1 + max([int(y.max())] + [int(o.labels.max()) for o in others])
    ds = ArrayDataset(x.contiguous(), y.contiguous(), int(num_classes), name)
    if recipe is None:
        recipe = old.recipe if old else ("gray" if x.shape[1] == 1 else "cifar")
    info = DatasetInfo(name, tuple(x.shape[1:]), int(num_classes))
    kept = tuple((s, d) for s, d in (old.splits if old else ()) if s != split)
    _MEMORY[name] = MemorySource(info, recipe, (0, 0), splits=(*kept, (split, ds)))
    return ds


def user_source(name: str) -> Source | None:
    """The source of a user dataset name (folder:PATH or registered by from_torch), or None."""
    if name in _MEMORY:
        return _MEMORY[name]
    if name.startswith(FOLDER_PREFIX):
        if name not in _FOLDERS:
            _FOLDERS[name] = FolderSource.from_name(name)
        return _FOLDERS[name]
    return None
