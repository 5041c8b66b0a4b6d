"""Datasets: loaders for MNIST, Fashion-MNIST, CIFAR-10/100, SVHN, Imagenette and a built-in
synthetic set; preprocessing and seeded augmentation; a deterministic batch iterator.

    ds = load_dataset("mnist", "train", limit=512)       # ArrayDataset, uint8 (N, 1, 28, 28)
    for x, y in iterate(ds, 64, shuffle=True, augment=True, seed=0, epoch=3): ...
    ds = load_dataset("folder:/data/pets?size=64")      # class sub-folders of images
    ds = from_torch(torch_dataset, name="mine")          # a torch Dataset / DataLoader
"""

from .augment import iterate, make_generator, num_batches, preprocess
from .common import ArrayDataset, CorruptDataError, DatasetError, DatasetNotFoundError
from .registry import (
    DatasetInfo,
    dataset_info,
    default_data_dir,
    describe_datasets,
    list_datasets,
    load_dataset,
)
from .user import from_torch

__all__ = [
    "ArrayDataset",
    "CorruptDataError",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_info",
    "default_data_dir",
    "describe_datasets",
    "from_torch",
    "iterate",
    "list_datasets",
    "load_dataset",
    "make_generator",
    "num_batches",
    "preprocess",
]
