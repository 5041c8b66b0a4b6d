"""IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.

Layout: two zero bytes, a dtype code, the number of dimensions d, d big-endian uint32 sizes,
then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .common import CorruptDataError, DatasetError, download_url

__all__ = ["IDX_FILES", "download_idx", "find_idx_dir", "load_idx_split", "read_idx"]

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# split -> (images file, labels file), without the optional ".gz".
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decompress whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDataError(f"{path}: cannot read/decompress IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise CorruptDataError(
            f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'} (expected "
            "0000 + dtype code + ndim, e.g. 00000803 for images); not an IDX file or corrupt"
        )
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDataError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file has "
            f"{len(raw) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_idx_dir(candidates: list[Path]) -> Path | None:
    """The first directory holding all four IDX files (plain or .gz), else None."""
    for d in candidates:
        if all(_find(d, f) for files in IDX_FILES.values() for f in files):
            return d
    return None


def load_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 1, H, W) uint8 and labels (N,) int64 of one split."""
    img_stem, lab_stem = IDX_FILES[split]
    img_path, lab_path = _find(directory, img_stem), _find(directory, lab_stem)
    if img_path is None or lab_path is None:
        raise DatasetError(f"{directory}: missing {img_stem}(.gz) or {lab_stem}(.gz)")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptDataError(
            f"{img_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise CorruptDataError(
            f"{lab_path}: {labels.shape} labels do not match {images.shape[0]} images in {img_path}"
        )
    return images[:, None], labels.astype(np.int64)


def download_idx(base_urls: list[str], directory: Path) -> None:
    """Fetch the four ``.gz`` IDX files into ``directory``, trying each mirror in turn."""
    errors = []
    for base in base_urls:
        try:
            for files in IDX_FILES.values():
                for stem in files:
                    if _find(directory, stem) is None:
                        download_url(f"{base}{stem}.gz", directory / f"{stem}.gz")
            return
        except DatasetError as exc:
            errors.append(str(exc))
    raise DatasetError("all mirrors failed:\n  " + "\n  ".join(errors))
