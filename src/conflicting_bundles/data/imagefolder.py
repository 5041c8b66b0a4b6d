"""Folders of images, one sub-folder per class (the Imagenette layout):
``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG``.

Images are letterboxed to size x size like ``tf.image.resize_with_pad`` in the reference: scaled
(bilinear) so the longer side fits, centred, zero padding. Decoding thousands of JPEGs is slow,
so the registry caches the result as npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .common import CorruptDataError, DatasetError

__all__ = ["IMAGE_SUFFIXES", "SPLIT_FOLDERS", "letterbox", "list_classes", "read_image_folder"]

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
SPLIT_FOLDERS = {"train": "train", "test": "val"}


def list_classes(root: Path) -> list[str]:
    """Class names = the sorted sub-folders of ``root/train`` (so train and val agree)."""
    return sorted(p.name for p in (root / SPLIT_FOLDERS["train"]).iterdir() if p.is_dir())


def letterbox(path: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8: the RGB image at ``path`` scaled to fit and centred on black."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale (>= size), faster
            im = im.convert("RGB")
            w, h = im.size
            scale = size / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            canvas = Image.new("RGB", (size, size))
            canvas.paste(im, ((size - nw) // 2, (size - nh) // 2))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDataError(f"{path}: cannot decode image ({exc})") from exc
    return np.asarray(canvas, dtype=np.uint8).transpose(2, 0, 1)


def read_image_folder(
    root: Path, split: str, size: int, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 3, size, size) uint8, labels (N,) int64 (index into ``classes``), files in
    sorted order."""
    folder = root / SPLIT_FOLDERS[split]
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    unknown = set(found) - set(classes)
    if unknown:
        raise DatasetError(f"{folder}: class folders {sorted(unknown)} do not exist in train/")
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        d = folder / name
        if d.is_dir():
            hits = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += hits
            labels += [label] * len(hits)
            empty += [] if hits else [name]
    if empty and split == "train":  # a class that cannot be learnt: a mistake, not data
        raise DatasetError(
            f"{folder}: class folders without images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
            f"{', '.join(empty)}; add images or remove the folders"
        )
    if not files:
        raise DatasetError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    print(f"decoding {len(files)} images from {folder} (once; the result is cached)", flush=True)
    images = np.stack([letterbox(f, size) for f in files])
    return images, np.asarray(labels, dtype=np.int64)
