"""``--pack-data DIR``: the datasets the GPU check needs, small enough to travel with the tree.

DIR becomes a data directory the loaders read as it is (``--data-dir DIR``):

    DIR/mnist.npz                  MNIST, both splits, compressed (train_x (60000, 1, 28, 28)
                                   uint8, train_y int64, test_x, test_y): the loader's own cache
    DIR/fashion-mnist/*.gz         the four gzip IDX files of Fashion-MNIST, copied as they are

About 42 MiB in all. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from conflicting_bundles.data import DatasetNotFoundError, default_data_dir, load_dataset
from conflicting_bundles.data.idx import IDX_FILES, find_idx_dir

FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pack_data(dest: str | os.PathLike, data_dir: str | None = None) -> dict:
    """Write MNIST and Fashion-MNIST into ``dest``; returns {file: bytes}."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, data_dir=data_dir)  # fetched with pip if needed
        arrays[f"{split}_x"] = ds.images.numpy()
        arrays[f"{split}_y"] = ds.labels.numpy()
    fd, tmp = tempfile.mkstemp(dir=dest, suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, dest / "mnist.npz")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    root = default_data_dir(data_dir)
    found = find_idx_dir([root / "fashion-mnist", *FASHION_DIRS])
    if found is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST not found in "
            f"{root / 'fashion-mnist'} or {FASHION_DIRS[0]}: install it with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or put the 4 IDX .gz files "
            f"in {root / 'fashion-mnist'}, then run --pack-data again."
        )
    (dest / "fashion-mnist").mkdir(exist_ok=True)
    for files in IDX_FILES.values():
        for stem in files:
            src = next(p for p in found.iterdir() if p.name.startswith(stem))
            _atomic_copy(src, dest / "fashion-mnist" / src.name)
    # the packed folder must load exactly as the source does
    for name in ("mnist", "fashion-mnist"):
        load_dataset(name, "test", data_dir=str(dest), limit=10)
    files = [p for p in sorted(dest.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return {str(p.relative_to(dest)): p.stat().st_size for p in files}
