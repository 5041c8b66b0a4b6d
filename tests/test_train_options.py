"""TrainConfig options: validation split, test_eval, optimizer choice (config, summary, CLI)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conflicting_bundles import runs
from conflicting_bundles.cli import app
from conflicting_bundles.data import load_dataset
from conflicting_bundles.train import TrainConfig, make_optimizer, split_validation, train
from conftest import tiny_train_config as tiny


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------ validation split
def test_split_validation_is_seeded_disjoint_and_ordered():
    ds = load_dataset("synthetic", "train", limit=200)
    ids = ds.images.reshape(len(ds), -1).float().sum(1)  # a fingerprint of each sample
    tr, va = split_validation(ds, 50, seed=0)
    assert (len(tr), len(va)) == (150, 50)
    tr_ids, va_ids = (
        set(tr.images.reshape(150, -1).float().sum(1).tolist()),
        set(va.images.reshape(50, -1).float().sum(1).tolist()),
    )
    assert tr_ids | va_ids == set(ids.tolist()) and not (tr_ids & va_ids)
    tr2, va2 = split_validation(ds, 50, seed=0)
    assert torch.equal(va.images, va2.images) and torch.equal(tr.labels, tr2.labels)
    _, va3 = split_validation(ds, 50, seed=1)
    assert not torch.equal(va.images, va3.images)
    # The training part keeps the original order (its first samples are the first kept ones).
    pos = {v: i for i, v in enumerate(ids.tolist())}
    order = [pos[v] for v in tr.images.reshape(150, -1).float().sum(1).tolist()]
    assert order == sorted(order)
    assert split_validation(ds, 0, seed=0) == (ds, None)
    with pytest.raises(ValueError, match="leaves no training samples"):
        split_validation(ds, 200, seed=0)


def test_val_split_rows_summary_and_best(tmp_path):
    res = train(tiny(tmp_path / "r", epochs=3, val_split=64, val_seed=5))
    rows = res.metrics[1:]
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["val_loss"] > 0 for r in rows)
    s = runs.load_summary(tmp_path / "r")
    assert s["val_acc"] == pytest.approx(sum(r["val_acc"] for r in rows) / 3)
    assert s["val_acc_last"] == rows[-1]["val_acc"]
    assert (s["val_split"], s["val_seed"]) == (64, 5)
    best = runs.load_checkpoint(tmp_path / "r", "best")
    assert best["best"]["metric"] == "val_acc"
    assert best["best"]["value"] == max(r["val_acc"] for r in rows)
    assert best["epoch"] == best["best"]["epoch"]
    # Training and the bundle metric saw only the 192 samples outside the validation split.
    assert all(r["steps"] == 3 for r in rows)  # 192 / 64
    assert runs.load_config(tmp_path / "r")["val_split"] == 64


def test_best_checkpoint_is_never_chosen_on_test_data(tmp_path):
    """Without a validation split best.pt follows training accuracy, even with the test set
    evaluated every epoch (issue 21, 7b): the test set never takes part in a choice."""
    res = train(tiny(tmp_path / "r", epochs=3))
    rows = res.metrics[1:]
    assert all(r["test_acc"] is not None for r in rows)
    best = runs.load_checkpoint(tmp_path / "r", "best")["best"]
    assert best["metric"] == "train_acc"
    assert best["value"] == max(r["train_acc"] for r in rows)


def test_val_split_independent_of_run_seed(tmp_path):
    """Runs of different seeds share one validation set; another val_seed gives another."""
    from conflicting_bundles.train import load_splits

    a = load_splits(tiny(tmp_path / "a", seed=0, val_split=40))[1]
    b = load_splits(tiny(tmp_path / "b", seed=7, val_split=40))[1]
    c = load_splits(tiny(tmp_path / "c", seed=0, val_split=40, val_seed=1))[1]
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_no_test_eval_leaves_test_fields_empty(tmp_path):
    res = train(tiny(tmp_path / "r", test_eval=False, val_split=32))
    assert all(r["test_acc"] is None and r["test_loss"] is None for r in res.metrics)
    s = res.summary
    for k in ("test_acc", "test_acc_std", "test_acc_epochs", "best_test_acc", "best_epoch"):
        assert s[k] is None, k
    assert s["val_acc"] is not None
    res = train(tiny(tmp_path / "q", test_eval=False))
    assert runs.load_checkpoint(tmp_path / "q", "best")["best"]["metric"] == "train_acc"


def test_test_set_is_never_loaded_without_test_eval(tmp_path, monkeypatch):
    import conflicting_bundles.train.components as train_mod

    splits = []
    real = train_mod.load_dataset

    def spy(name, split="train", *a, **kw):
        splits.append(split)
        return real(name, split, *a, **kw)

    monkeypatch.setattr(train_mod, "load_dataset", spy)
    train(tiny(tmp_path / "r", epochs=1, test_eval=False))
    assert splits == ["train"]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"val_split": -1}, "val_split must be an integer >= 0"),
        ({"val_seed": 1.5}, "val_seed must be an integer >= 0"),
        ({"val_split": 256}, "leaves no training samples"),
        ({"test_eval": "no"}, "test_eval must be True or False"),
        ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'; choose one of radam-lookahead"),
    ],
)
def test_option_validation(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg):
        train(tiny(tmp_path / "r", **kw))
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------ optimizer
def test_make_optimizer_kinds():
    params = [torch.nn.Parameter(torch.zeros(3))]
    radam = make_optimizer(params, TrainConfig())
    assert type(radam).__name__ == "Lookahead"
    adam = make_optimizer(params, TrainConfig(optimizer="adam", lr=2e-3))
    assert isinstance(adam, torch.optim.AdamW) and adam.defaults["lr"] == 2e-3
    sgd = make_optimizer(params, TrainConfig(optimizer="sgd", lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_optimizer_recorded_and_resumable(tmp_path, name):
    out = tmp_path / name
    train(tiny(out, epochs=1, optimizer=name, lr=0.01))
    assert runs.load_config(out)["optimizer"] == name
    assert runs.load_summary(out)["optimizer"] == name
    res = train(tiny(out, epochs=2, optimizer=name, lr=0.01), resume=True)
    assert res.summary["epochs_completed"] == 2
    with pytest.raises(ValueError, match="optimizer: run has"):
        train(tiny(out, epochs=3, lr=0.01), resume=True)


def test_resume_of_a_run_written_before_the_new_fields(tmp_path):
    out = tmp_path / "old"
    train(tiny(out, epochs=1))
    cfg = runs.load_config(out)
    for k in ("val_split", "val_seed", "test_eval", "optimizer"):
        del cfg[k]
    runs.write_json(out / runs.CONFIG, cfg)
    assert train(tiny(out, epochs=2), resume=True).status == "completed"


def test_cli_optimizer_and_val_split(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["train", "--model", "fnn", "--width", "8", "--depth", "2", "--dataset", "synthetic"]
    args += ["--epochs", "1", "--train-limit", "128", "--test-limit", "32", "--no-tensorboard"]
    r = runner.invoke(
        app, [*args, "--optimizer", "adam", "--val-split", "32", "--out", str(out), "-q"]
    )
    assert r.exit_code == 0, r.output
    s = runs.load_summary(out)
    assert s["optimizer"] == "adam" and s["val_split"] == 32 and s["val_acc"] is not None
    r = runner.invoke(app, [*args, "--optimizer", "lbfgs", "--out", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 1 and "unknown optimizer 'lbfgs'" in flat(r.output)
    r = runner.invoke(app, [*args, "--no-test-eval", "--out", str(tmp_path / "y"), "-q"])
    assert r.exit_code == 0, r.output
    assert runs.load_summary(tmp_path / "y")["test_acc"] is None


# ------------------------------------------------------------------------------ user factory
FACTORY_MODULE = """
from torch import nn
from conflicting_bundles.probes import ProbePoint

class Net(nn.Module):
    def __init__(self, hidden, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x))

    def probe_points(self, kind=None):
        return [ProbePoint("body", self.body)]

def make_net(hidden=8, in_shape=(1, 28, 28), num_classes=10):
    return Net(hidden, in_shape, num_classes)

def plain(hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
"""


def test_user_model_factory_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_models_h4a.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r"
    res = train(tiny(out, model="my_models_h4a:make_net", model_kwargs={"hidden": 12}))
    assert res.status == "completed" and res.metrics[-1]["bundle_layer"] == "body"
    arch = runs.load_arch(out)
    assert arch["factory"] == "my_models_h4a:make_net" and arch["kwargs"]["hidden"] == 12
    with pytest.raises(runs.RunDirError, match="--factory my_models_h4a:make_net"):
        runs.load_model(out)  # never imported on the run directory's say-so
    model, _ = runs.load_model(out, factory="my_models_h4a:make_net")
    x = torch.randn(3, 1, 28, 28)
    res.model.eval()
    assert torch.equal(model(x), res.model(x))

    runner = CliRunner()
    r = runner.invoke(app, ["train", "--resume", "--out", str(out), "--epochs", "3", "-q"])
    assert r.exit_code == 1 and "pass --model my_models_h4a:make_net" in flat(r.output)
    r = runner.invoke(
        app, ["train", "--resume", "--out", str(out), "--epochs", "3", "-q", "-m", arch["factory"]]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["measure", str(out), "--samples", "32", "--factory", arch["factory"]])
    assert r.exit_code == 0 and "body" in r.output, r.output


def test_user_model_errors(tmp_path, monkeypatch):
    (tmp_path / "my_models_h4b.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="cannot import 'no_such_mod_h4'"):
        train(tiny(tmp_path / "a", model="no_such_mod_h4:f"))
    with pytest.raises(ValueError, match="has no 'nope'"):
        train(tiny(tmp_path / "b", model="my_models_h4b:nope"))
    with pytest.raises(ValueError, match="rejected the arguments"):
        train(tiny(tmp_path / "e", model="my_models_h4b:plain", model_kwargs={"depth": 3}))
    plain = dict(model="my_models_h4b:plain", model_kwargs={})
    with pytest.raises(ValueError, match="declares no probe points.*--samples 0"):
        train(tiny(tmp_path / "c", **plain))
    res = train(tiny(tmp_path / "d", **plain, measure_samples=0))
    assert res.status == "completed"
    for name in "abce":
        assert not (tmp_path / name).exists()
