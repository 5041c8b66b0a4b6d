"""Shared fixtures: a tiny synthetic training config factory and a run-directory path.

Every test gets a default timeout from pyproject.toml (pytest-timeout); markers: ``slow``,
``subprocess`` (and others declared there)."""

from __future__ import annotations

import os

import pytest

# Tests share the machine: one thread per process unless a test sets more.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def snapshot(folder) -> dict:
    """{relative path: bytes or 'dir'/'link -> target'} of everything under ``folder``: what a
    test compares before and after a command to show nothing was changed or deleted."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for n in dirs + files:
            p = os.path.join(root, n)
            key = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[key] = "link -> " + os.readlink(p)
            elif os.path.isdir(p):
                out[key] = "dir"
            else:
                with open(p, "rb") as f:
                    out[key] = f.read()
    return out


def tiny_train_config(out, **kw):
    """A 3x16 FNN on 256 synthetic samples, 2 epochs, no TensorBoard, no progress output;
    ``kw`` overrides any TrainConfig field."""
    from conflicting_bundles.train import TrainConfig

    base = dict(
        model="fnn",
        model_kwargs={"width": 16, "depth": 3},
        dataset="synthetic",
        epochs=2,
        train_limit=256,
        test_limit=64,
        out=str(out),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def tiny_config():
    """tiny_config(out, **overrides) -> TrainConfig (see tiny_train_config)."""
    return tiny_train_config


@pytest.fixture
def run_dir(tmp_path):
    """A path for one run directory (not created)."""
    return tmp_path / "run"
