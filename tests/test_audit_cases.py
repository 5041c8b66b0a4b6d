"""Regression tests for the reliability audit's failed cases (/work/shared/audit/README.md;
rerun script: experiments/audit/rerun.py). Each bad input must end in a specific message and a
non-zero exit status, with no traceback and nothing written or lost. Synthetic data only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from conflicting_bundles import bundle_stats, metric
from conflicting_bundles.cli import app
from conflicting_bundles.models import MAX_PARAMETERS, ConvNetConfig, create_model, fnn

B = "--dataset synthetic --epochs 1 --train-limit 64 --test-limit 32 --threads 1 -q".split()


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def clean_failure(r, *fragments: str) -> None:
    """rc != 0, no traceback (the CLI exited itself), every fragment in the output."""
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    text = " ".join(r.output.split())
    assert "Traceback" not in text, text
    for f in fragments:
        assert f.lower() in text.lower(), (f, text)


def nothing_written(path) -> bool:
    return not path.exists() or all(p.name == ".lock" for p in path.iterdir())


# ------------------------------------------------------------------ bad model shapes
@pytest.mark.parametrize(
    "case, args, fragment",
    [
        ("depth0", ["--model", "fnn", "--width", "5", "--depth", "0"], "probe points"),
        ("blocks0000", ["--model", "plain", "--blocks", "0,0,0,0"], "probe points"),
        ("wm_huge", ["--model", "plain", "--layers", "4", "--width-mult", "1e9"], "MAX_PARAMETERS"),
        ("fnn_huge", ["--model", "fnn", "--width", "10000000", "--depth", "30"], "parameters"),
    ],
)
def test_train_refuses_bad_shape_before_writing(tmp_path, case, args, fragment):
    out = tmp_path / case
    clean_failure(invoke("train", *args, *B, "--out", out), fragment)
    assert nothing_written(out)


def test_autotune_refuses_empty_start(tmp_path):
    out = tmp_path / "atb0"
    r = invoke("autotune", "--model", "plain", "--start-blocks", "0,0,0,0", *B, "--out", out)
    clean_failure(r, "no blocks")
    assert nothing_written(out)


def test_size_limit_is_checked_before_allocation():
    for name, kw in [("plain", {"layers": 20}), ("resnet", {"layers": 10, "width_mult": 0.25})]:
        m = create_model(name, in_channels=3, **kw)
        assert m.config.num_params_estimate() == sum(p.numel() for p in m.parameters())
    big = ConvNetConfig(blocks=(3, 12, 41, 3), residual=True, width_mult=8.0)
    assert big.num_params_estimate() > MAX_PARAMETERS
    with pytest.raises(ValueError, match="MAX_PARAMETERS"):
        create_model("resnet", layers=120, width_mult=8.0)  # would be 16 GB: refused at once
    with pytest.raises(ValueError, match="fnn 100000x300"):
        fnn(100_000, 300)


# ------------------------------------------------------------------ data directory
def test_data_dir_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x\n")
    clean_failure(
        invoke("train", "--model", "fnn", "--width", "5", "--depth", "2", *B[2:], "--dataset",
               "mnist", "--data-dir", f, "--out", tmp_path / "r"),
        "afile", "is a file, not a directory",
    )  # fmt: skip
    clean_failure(invoke("datasets", "--data-dir", f), "is a file, not a directory")


@pytest.mark.parametrize("blob", [b"", b"PK\x03\x04" + bytes(3000), os.urandom(5000)])
def test_datasets_flags_a_damaged_cache(tmp_path, blob):
    (tmp_path / "mnist.npz").write_bytes(blob)
    r = invoke("datasets", "--data-dir", tmp_path)
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if "│ mnist " in ln)
    assert "damaged" in row and "delete" in row, row
    from conflicting_bundles.data import describe_datasets

    rows = {d["name"]: d for d in describe_datasets(tmp_path)}
    assert not rows["mnist"]["available"] and rows["mnist"]["damaged"]
    assert rows["synthetic"]["available"] and rows["synthetic"]["damaged"] is None


# ------------------------------------------------------------------ prune on damaged runs
@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    from conflicting_bundles.train import TrainConfig, train

    out = tmp_path_factory.mktemp("audit") / "good"
    cfg = TrainConfig(model="fnn", model_kwargs={"width": 16, "depth": 3}, dataset="synthetic",
                      epochs=1, train_limit=128, test_limit=32, out=str(out), progress=False,
                      tensorboard=False)  # fmt: skip
    train(cfg)
    return out


def _damage(good, dst, kind):
    shutil.copytree(good, dst)
    ck = dst / "checkpoints"
    if kind == "trunc_last":  # prune reads last.pt, as every command on a run
        f = ck / "last.pt"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif kind == "zero_last":
        for n in ("last.pt", "best.pt"):
            (ck / n).write_bytes(b"")
    elif kind == "garbage_last":
        for n in ("last.pt", "best.pt"):
            (ck / n).write_bytes(os.urandom(20_000))
    elif kind == "bad_arch":
        (dst / "arch.json").write_text((good / "arch.json").read_text()[:20])
    elif kind == "arch_not_model":
        (dst / "arch.json").write_text('{"name": "fnn", "width": "x"}')
    return dst


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("trunc_last", ["last.pt", "damaged"]),
        ("zero_last", ["last.pt", "empty (0 bytes)"]),
        ("garbage_last", ["last.pt", "damaged", "weights_only=True"]),
        ("bad_arch", ["arch.json", "unreadable"]),
        ("arch_not_model", ["arch.json", "does not describe a model"]),
    ],
)
def test_prune_names_the_damaged_file(good_run, tmp_path, kind, fragments):
    d = _damage(good_run, tmp_path / kind, kind)
    out = tmp_path / "pruned"
    r = invoke("prune", "--model", d, "--dataset", "synthetic", "--test-limit", "32",
               "--samples", "16", "--out", out)  # fmt: skip
    clean_failure(r, *fragments)
    assert not out.exists()  # nothing written, not even an empty --out


def test_prune_out_is_a_file(good_run, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = invoke("prune", "--model", good_run, "--dataset", "synthetic", "--out", tmp_path / "afile")
    clean_failure(r, "afile", "is a file, not a directory")


def test_prune_pickle_file_runs_no_code(tmp_path):
    flag = tmp_path / "pwned"
    code = (
        "import os, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {flag}',))\n"
        f"torch.save(Evil(), '{tmp_path / 'evil.pt'}')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    r = invoke("prune", "--model", tmp_path / "evil.pt", "--dataset", "synthetic")
    clean_failure(r, "--trust-pickle")
    assert not flag.exists()


# ------------------------------------------------------------------ huge label values
@pytest.mark.parametrize("label", [2_000_000, 10**9, 10**12])
def test_bundle_stats_huge_label_is_cheap(label):
    g = torch.Generator().manual_seed(0)
    acts = torch.randint(0, 3, (64, 2), generator=g).float()  # few bundles, mixed labels
    y = torch.arange(64) % 10
    y_big = y.clone()
    y_big[y == 9] = label  # class 9 renamed: the same partition, so the same entropy
    ref, got = bundle_stats(acts, y), bundle_stats(acts, y_big)
    assert got.num_bundles == ref.num_bundles and torch.equal(got.sizes, ref.sizes)
    assert got.entropy == pytest.approx(ref.entropy, rel=1e-12, abs=1e-15)
    assert ref.entropy > 0


def test_sparse_entropy_matches_dense(monkeypatch):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (2000,), generator=g)
    y = torch.randint(0, 10, (2000,), generator=g)
    assert metric.DENSE_COUNT_LIMIT >= 40 * 10  # small tables keep the bit-exact dense path
    dense = metric.bundle_entropy_from_ids(ids, y, 40, 10)
    monkeypatch.setattr(metric, "DENSE_COUNT_LIMIT", 0)  # force the O(N) pair counting
    sparse = metric.bundle_entropy_from_ids(ids, y, 40, 10)
    assert torch.equal(dense[1], sparse[1]) and dense[0] > 0
    assert sparse[0] == pytest.approx(dense[0], rel=1e-12)
