"""The user's own data: folders of images (``folder:PATH``) and torch Dataset / DataLoader /
tensors (``from_torch``) become ArrayDatasets the registry, iterate and train accept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conflicting_bundles.data import (
    ArrayDataset,
    DatasetError,
    dataset_info,
    from_torch,
    iterate,
    load_dataset,
    user,
)

RNG = np.random.default_rng(0)


def write_images(folder, classes: dict[str, int], size=(20, 12)) -> None:
    """``count`` PNGs per class; class i's images are filled with value 40 * (i + 1)."""
    for i, (c, count) in enumerate(classes.items()):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            arr = np.full((size[1], size[0], 3), 40 * (i + 1), dtype=np.uint8)
            Image.fromarray(arr).save(folder / c / f"{j:03d}.png")


def test_folder_with_train_and_val(tmp_path, monkeypatch):
    root = tmp_path / "pets"
    write_images(root / "train", {"cat": 3, "dog": 2})
    write_images(root / "val", {"cat": 1, "dog": 2})
    name = f"folder:{root}?size=16"
    info = dataset_info(name)
    assert info.in_shape == (3, 16, 16) and info.num_classes == 2
    tr = load_dataset(name, "train", data_dir=tmp_path / "data")
    te = load_dataset(name, "test", data_dir=tmp_path / "data")
    assert isinstance(tr, ArrayDataset) and tr.images.shape == (5, 3, 16, 16)
    assert tr.labels.tolist() == [0, 0, 0, 1, 1] and te.labels.tolist() == [0, 1, 1]
    # letterboxed: 20x12 -> 16x10 centred, zero rows above and below; the class colour inside
    assert int(tr.images[0, 0, 0, 0]) == 0 and int(tr.images[0, 0, 8, 8]) == 40
    assert int(tr.images[3, 0, 8, 8]) == 80
    assert len(list((tmp_path / "data" / "folders").glob("*.npz"))) == 2

    def no_decoding(*a, **kw):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(user, "letterbox", no_decoding)
    again = load_dataset(name, "train", data_dir=tmp_path / "data")
    assert torch.equal(again.images, tr.images)
    x, y = next(iterate(tr, 4, shuffle=True, augment=True, seed=0))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.shape == (4,)


def test_one_folder_holds_out_every_fifth_image(tmp_path):
    write_images(tmp_path / "flat", {"a": 10, "b": 5, "c": 6})
    name = f"folder:{tmp_path / 'flat'}"
    tr = load_dataset(name, "train", data_dir=tmp_path / "d", limit=None)
    te = load_dataset(name, "test", data_dir=tmp_path / "d")
    assert tr.images.shape[1:] == (3, 32, 32)  # default size
    assert te.labels.tolist() == [0, 0, 1, 2] and len(tr) == 21 - 4


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'nope'}", data_dir=tmp_path)
    write_images(tmp_path / "one", {"only": 2})
    with pytest.raises(DatasetError, match="at least 2"):
        dataset_info(f"folder:{tmp_path / 'one'}")
    with pytest.raises(ValueError, match=r"\?size=N"):
        dataset_info(f"folder:{tmp_path}?colour=1")
    write_images(tmp_path / "tr" / "train", {"a": 1, "b": 1})
    with pytest.raises(DatasetError, match="no val/ or test/"):
        load_dataset(f"folder:{tmp_path / 'tr'}", "test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="folder:PATH"):
        dataset_info("no-such-dataset")


class Samples(torch.utils.data.Dataset):
    """Map-style dataset of (float (1, 8, 8) in [0, 1], label)."""

    def __init__(self, n: int):
        self.x = torch.from_numpy(RNG.random((n, 1, 8, 8), dtype=np.float32))
        self.y = [i % 3 for i in range(n)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_from_torch_dataset_loader_and_tensors():
    data = Samples(10)
    ds = from_torch(data, name="mine-a")
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (10, 1, 8, 8)
    assert torch.equal(ds.images, (data.x * 255).round().to(torch.uint8))
    assert ds.labels.tolist() == data.y and ds.num_classes == 3
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    from_torch(loader, name="mine-a", split="test", limit=6)
    te = load_dataset("mine-a", "test")
    assert len(te) == 6 and torch.equal(te.images, ds.images[:6])
    assert dataset_info("mine-a").in_shape == (1, 8, 8)
    assert torch.equal(load_dataset("mine-a", "train", limit=4).labels, ds.labels[:4])
    x, _ = next(iterate(ds, 5, shuffle=False, augment=False))
    assert torch.allclose(x, ds.images[:5].float() / 255)  # gray recipe: x / 255
    imgs = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    t = from_torch((imgs, torch.tensor([0, 1, 0, 1])), name="mine-b", num_classes=4)
    assert torch.equal(t.images, imgs) and dataset_info("mine-b").num_classes == 4


def test_from_torch_pil_samples():
    pil = [(Image.fromarray(np.full((6, 7, 3), v, dtype=np.uint8)), v % 2) for v in (10, 20, 30)]
    ds = from_torch(pil, name="mine-pil")
    assert ds.images.shape == (3, 3, 6, 7) and int(ds.images[2, 1, 0, 0]) == 30


def test_from_torch_errors():
    with pytest.raises(ValueError, match="built-in"):
        from_torch(Samples(2), name="mnist")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        from_torch((torch.randn(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)), name="mine-c")
    with pytest.raises(TypeError, match="Dataset, a DataLoader"):
        from_torch(42, name="mine-c")
    from_torch(Samples(3), name="mine-d")
    with pytest.raises(DatasetError, match="no 'test' split"):
        load_dataset("mine-d", "test")


def test_train_on_a_folder(tmp_path):
    from conflicting_bundles import TrainConfig, train

    write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    cfg = TrainConfig(
        model="fnn",
        model_kwargs={"width": 8, "depth": 2},
        dataset=f"folder:{tmp_path / 'imgs'}?size=8",
        epochs=1,
        batch_size=4,
        measure_samples=8,
        out=str(tmp_path / "run"),
        tensorboard=False,
        progress=False,
        data_dir=str(tmp_path / "data"),
    )
    res = train(cfg)
    assert res.summary["status"] == "completed" and res.summary["dataset"] == cfg.dataset
