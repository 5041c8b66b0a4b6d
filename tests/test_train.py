"""Training loop: run-directory files, metrics, exact resume, divergence, refusals, CLI.

All runs are tiny (synthetic data, a 3x16 FNN or a 1/16-width plain net, 1-3 epochs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from conflicting_bundles import runs
from conflicting_bundles.cli import app
from conflicting_bundles.data import DatasetNotFoundError, iterate, load_dataset
from conflicting_bundles.metric import bundle_stats
from conflicting_bundles.models import create_model
from conflicting_bundles.train import (
    ROW_COLUMNS,
    TIME_COLUMNS,
    TrainConfig,
    make_optimizer,
    train,
)


def tiny(out, **kw) -> TrainConfig:
    base = dict(
        model="fnn",
        model_kwargs={"width": 16, "depth": 3},
        dataset="synthetic",
        epochs=2,
        train_limit=256,
        test_limit=128,
        out=str(out),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**{**base, **kw})


def flat(text: str) -> str:
    return " ".join(text.split())  # undo terminal line wrapping


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


class InterruptAt:
    """Simulates a kill: KeyboardInterrupt when epoch ``epoch`` is about to start."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_start(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------ files, metrics
def test_run_files_metrics_and_summary(tmp_path):
    out = tmp_path / "run"
    res = train(tiny(out, measure_all_layers=True, tensorboard=True))
    assert res.status == "completed"
    for name in ("config.json", "arch.json", "metrics.csv", "metrics.jsonl", "layers.csv"):
        assert (out / name).is_file(), name
    assert (out / "summary.json").is_file()
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints/best.pt").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    assert not list(out.rglob("*.tmp")), "atomic writes must not leave temp files"

    rows = runs.read_csv(out / "metrics.csv")
    assert list(rows[0])[: len(ROW_COLUMNS)] == list(ROW_COLUMNS)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[0]["train_loss"] is None and rows[0]["num_bundles"] is not None
    for r in rows[1:]:
        assert 0.0 <= r["train_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert r["train_loss"] > 0 and r["w_max"] > 0 and r["epoch_time"] > 0
        assert 1 <= r["num_bundles"] <= 64 and r["bundle_entropy"] >= 0.0
        assert r["bundle_layer"] == "hidden.2" and r["lr"] == 1e-3
    assert untimed(runs.load_metrics(out)) == untimed(res.metrics)

    layers = runs.read_csv(out / "layers.csv")
    assert [(r["epoch"], r["layer"]) for r in layers] == [
        (e, f"hidden.{i}") for e in range(3) for i in range(3)
    ]
    last = [r for r in layers if r["layer"] == "hidden.2"]
    assert [r["entropy"] for r in last] == [r["bundle_entropy"] for r in rows]

    s = runs.load_summary(out)
    assert s["test_acc"] == pytest.approx(sum(r["test_acc"] for r in rows[1:]) / 2)
    assert s["num_bundles_mean"] == pytest.approx(sum(r["num_bundles"] for r in rows) / 3)
    assert s["params"] == sum(p.numel() for p in res.model.parameters())
    assert s["epochs_completed"] == 2 and s["status"] == "completed"

    # arch.json + last.pt rebuild the trained model exactly.
    model, ckpt = runs.load_model(out, "last")
    assert ckpt["epoch"] == 2
    x = torch.randn(5, 1, 28, 28)
    res.model.eval()
    assert torch.equal(model(x), res.model(x))


def test_bundle_metric_matches_an_independent_computation(tmp_path):
    """The recorded last-epoch metric equals bundle_stats on the last hidden layer's output
    of the first 64 plain training samples with the run's lr, batch size and w_max."""
    res = train(tiny(tmp_path / "r", epochs=1, batch_size=32, lr=2e-3))
    model = res.model.eval()
    ds = load_dataset("synthetic", "train", limit=256)
    x, y = next(iterate(ds, 64, shuffle=False, augment=False))
    h = x.reshape(64, -1)
    with torch.no_grad():
        for layer in model.hidden:
            h = torch.relu(layer.fc(h))
    w_max = max(float(p.detach().abs().max()) for p in model.parameters())
    st = bundle_stats(h, y, num_classes=10, w_max=w_max, lr=2e-3, batch_size=32)
    row = res.metrics[-1]
    assert (row["num_bundles"], row["bundle_entropy"]) == (st.num_bundles, st.entropy)
    assert row["w_max"] == w_max


def test_training_learns(tmp_path):
    # RAdam's rectification makes the first few hundred steps slow; small batches, a larger lr.
    cfg = tiny(tmp_path / "r", epochs=3, train_limit=512, lr=3e-2, batch_size=16, augment=False)
    res = train(cfg)
    losses = [r["train_loss"] for r in res.metrics[1:]]
    assert losses[2] < losses[1] < losses[0]
    assert res.summary["final_train_acc"] > 0.5  # chance is 0.1


def test_eval_and_measure_schedule(tmp_path):
    res = train(tiny(tmp_path / "r", epochs=7, train_limit=64, eval_every=2, measure_every=3))
    tested = [r["epoch"] for r in res.metrics if r["test_acc"] is not None]
    measured = [r["epoch"] for r in res.metrics if r["num_bundles"] is not None]
    assert tested == [2, 3, 4, 5, 6, 7]  # every 2nd epoch, and always the last 5
    assert measured == [0, 3, 6, 7]  # init, every 3rd, and the last
    assert res.summary["test_acc_epochs"] == [3, 4, 5, 6, 7]


def test_config_dict_roundtrip():
    cfg = TrainConfig(model="plain", model_kwargs={"layers": 20}, lr=5e-4, train_limit=100)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 1.0})


# ------------------------------------------------------------------------------ optimizer
def test_lookahead_radam_state_roundtrip(tmp_path):
    """Saving and loading the optimizer (slow weights, step counter, RAdam moments) mid-period
    continues bit-exactly; a fresh optimizer does not."""
    torch.manual_seed(0)
    cfg = TrainConfig()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))

    def steps(model, opt, n):
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    a = create_model("fnn", width=8, depth=2)
    opt_a = make_optimizer(a.parameters(), cfg)
    steps(a, opt_a, 8)  # one slow-weight sync (k=6) behind us, 2 steps into the next period
    slow = opt_a.state_dict()["lookahead_state"][(0, 0)]["slow_params"]
    assert not torch.equal(slow, a.hidden[0].fc.weight)  # slow and fast weights differ now
    runs.save_checkpoint(tmp_path / "o.pt", {"m": a.state_dict(), "o": opt_a.state_dict()})
    saved = torch.load(tmp_path / "o.pt", weights_only=True)  # no pickled code needed

    def restored(load_optimizer: bool):
        m = create_model("fnn", width=8, depth=2)
        m.load_state_dict(saved["m"])
        o = make_optimizer(m.parameters(), cfg)
        if load_optimizer:
            o.load_state_dict(saved["o"])
        return m, o

    b, opt_b = restored(True)
    c, opt_c = restored(False)
    steps(a, opt_a, 6)
    steps(b, opt_b, 6)
    steps(c, opt_c, 6)
    pairs = list(zip(a.parameters(), b.parameters(), c.parameters(), strict=True))
    assert all(torch.equal(pa, pb) for pa, pb, _ in pairs)
    assert any(not torch.equal(pa, pc) for pa, _, pc in pairs)


# ------------------------------------------------------------------------------ resume
def test_resume_reaches_exactly_the_uninterrupted_result(tmp_path):
    kw = dict(epochs=3, measure_all_layers=True, lr=3e-3)
    straight = train(tiny(tmp_path / "a", **kw))
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "b", **kw), callbacks=[InterruptAt(epoch=3)])
    assert runs.load_checkpoint(tmp_path / "b")["epoch"] == 2
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = train(tiny(tmp_path / "b", **kw), resume=True)

    assert resumed.status == "completed"
    assert untimed(runs.read_csv(tmp_path / "b" / "metrics.csv")) == untimed(
        runs.read_csv(tmp_path / "a" / "metrics.csv")
    )
    assert runs.read_csv(tmp_path / "b/layers.csv") == runs.read_csv(tmp_path / "a/layers.csv")
    for (ka, va), (kb, vb) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    assert resumed.summary["test_acc"] == straight.summary["test_acc"]


KILL_SCRIPT = """
import os, signal, sys
from conflicting_bundles.train import TrainConfig, train

class Kill:
    def on_epoch_end(self, state):  # epoch 2 trained, its row and checkpoint not yet written
        if state.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

train(TrainConfig.from_dict(__import__("json").loads(sys.argv[1])), callbacks=[Kill()])
"""


def test_resume_after_sigkill_in_a_subprocess(tmp_path):
    kw = dict(epochs=3, lr=3e-3)
    cfg = tiny(tmp_path / "b", **kw)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg.to_dict())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert runs.load_checkpoint(tmp_path / "b")["epoch"] == 1
    assert [r["epoch"] for r in runs.read_csv(tmp_path / "b" / "metrics.csv")] == [0, 1]
    resumed = train(cfg, resume=True)
    straight = train(tiny(tmp_path / "a", **kw))
    assert untimed(resumed.metrics) == untimed(straight.metrics)
    assert untimed(runs.read_csv(tmp_path / "b" / "metrics.csv")) == untimed(
        runs.read_csv(tmp_path / "a" / "metrics.csv")
    )


def test_resume_can_extend_and_refuses_changes(tmp_path):
    out = tmp_path / "r"
    train(tiny(out, epochs=1))
    res = train(tiny(out, epochs=2), resume=True)
    assert [r["epoch"] for r in res.metrics] == [0, 1, 2]
    assert runs.load_config(out)["epochs"] == 2
    with pytest.raises(ValueError, match="lr: run has 0.001, given 0.5"):
        train(tiny(out, epochs=3, lr=0.5), resume=True)


def test_resume_without_a_run_or_checkpoint(tmp_path):
    with pytest.raises(runs.RunDirError, match="nothing to resume"):
        train(tiny(tmp_path / "missing"), resume=True)
    out = tmp_path / "r"
    train(tiny(out, epochs=1))
    os.remove(out / "checkpoints" / "last.pt")
    with pytest.raises(runs.RunDirError, match="no checkpoints/last.pt"):
        train(tiny(out), resume=True)


# ------------------------------------------------------------------------------ divergence
class PoisonAt:
    """From epoch ``epoch`` on, the model's logits are NaN."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_start(self, state):
        if state.epoch == self.epoch:
            state.model.head.register_forward_hook(lambda m, i, o: o * float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "r"
    res = train(tiny(out, epochs=3), callbacks=[PoisonAt(2)])
    assert res.status == "diverged"
    assert "epoch 2, step 1/4" in res.message and "learning rate" in res.message
    ckpt = runs.load_checkpoint(out)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert [r["epoch"] for r in runs.load_metrics(out)] == [0, 1]
    assert runs.load_summary(out)["status"] == "diverged"


def test_huge_lr_diverges(tmp_path):
    res = train(tiny(tmp_path / "r", lr=1e6))
    assert res.status == "diverged" and "Lower the learning rate (now 1e+06)" in res.message
    assert all(
        torch.isfinite(v).all() for v in runs.load_checkpoint(tmp_path / "r")["model"].values()
    )


# ------------------------------------------------------------------------------ callbacks, models
def test_callback_stop_and_measure_helper(tmp_path):
    seen = {}

    class Probe:
        def on_epoch_end(self, state):
            res = state.measure("all", n_samples=32)
            seen["layers"] = [r.name for r in res]
            seen["n"] = res[0].num_samples
            state.row["my_metric"] = 1.5
            state.stop("enough")

    res = train(tiny(tmp_path / "r", epochs=5), callbacks=[Probe()])
    assert res.status == "stopped" and res.message == "enough"
    assert [r["epoch"] for r in res.metrics] == [0, 1]
    assert seen == {"layers": ["hidden.0", "hidden.1", "hidden.2"], "n": 32}
    assert runs.read_csv(tmp_path / "r" / "metrics.csv")[1]["my_metric"] == 1.5
    assert runs.load_summary(tmp_path / "r")["message"] == "enough"


def test_ready_model_is_trained_and_described(tmp_path):
    torch.manual_seed(3)
    pruned = create_model("fnn", width=16, depth=4).without_blocks([1])
    w0 = max(float(p.detach().abs().max()) for p in pruned.parameters())
    res = train(tiny(tmp_path / "r", epochs=1), model=pruned)
    assert res.model is pruned
    assert res.metrics[0]["w_max"] == w0  # the given weights, not a fresh init
    assert runs.load_arch(tmp_path / "r") == pruned.arch()
    assert runs.load_config(tmp_path / "r")["model_kwargs"]["depth"] == 3


def test_tiny_plain_net_one_epoch(tmp_path):
    cfg = tiny(
        tmp_path / "p",
        model="plain",
        model_kwargs={"layers": 10, "width_mult": 1 / 16},
        epochs=1,
        train_limit=128,
        test_limit=64,
        measure_all_layers=True,
    )
    res = train(cfg)
    assert res.status == "completed"
    layers = runs.read_csv(tmp_path / "p" / "layers.csv")
    assert [r["layer"] for r in layers if r["epoch"] == 1] == ["a.0", "b.0", "c.0", "d.0"]
    assert res.metrics[-1]["bundle_layer"] == "d.0"
    assert runs.load_arch(tmp_path / "p")["in_channels"] == 1  # from the dataset


# ------------------------------------------------------------------------------ refusals
def test_refuses_to_overwrite_a_run_unless_forced(tmp_path):
    out = tmp_path / "r"
    train(tiny(out, epochs=1, measure_all_layers=True))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunDirError, match="already holds a run.*--resume.*--force"):
        train(tiny(out, epochs=1))
    res = train(tiny(out, epochs=1), force=True)
    assert res.status == "completed"
    assert not (out / "layers.csv").exists()  # the old run's files are gone
    assert (out / "notes.txt").read_text() == "mine"  # nothing else is touched


def test_clear_errors_for_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'mlp'"):
        train(tiny(tmp_path / "a", model="mlp"))
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'"):
        train(tiny(tmp_path / "b", dataset="mnsit"))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        train(tiny(tmp_path / "c", batch_size=0))
    with pytest.raises(ValueError, match="unknown criterion"):
        train(tiny(tmp_path / "d", criterion="fuzzy"))
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        train(tiny(tmp_path / "e", dataset="cifar10", data_dir=str(tmp_path / "no-data")))
    for name in "abcde":
        assert not (tmp_path / name).exists()  # nothing written for a run that cannot start


# ------------------------------------------------------------------------------ CLI
def test_cli_train_then_measure(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["train", "--model", "fnn", "--width", "16", "--depth", "3", "--dataset", "synthetic"]
    args += ["--epochs", "1", "--train-limit", "256", "--test-limit", "64", "--out", str(out)]
    r = runner.invoke(app, [*args, "--no-tensorboard", "-q"])
    assert r.exit_code == 0, r.output
    assert runs.load_summary(out)["epochs_completed"] == 1

    r = runner.invoke(app, ["measure", str(out), "--samples", "100", "--checkpoint", "best"])
    assert r.exit_code == 0, r.output
    rows = runs.read_csv(out / "measure.csv")
    assert [x["layer"] for x in rows] == ["hidden.0", "hidden.1", "hidden.2"]
    assert all(x["num_samples"] == 100 and x["margin"] > 0 for x in rows)
    assert "hidden.2" in flat(r.output) and "margin" in flat(r.output)

    r = runner.invoke(app, [*args, "-q"])  # same out again
    assert r.exit_code == 1 and "already holds a run" in flat(r.output)
    r = runner.invoke(app, ["train", "--resume", "--out", str(out), "--epochs", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert runs.load_summary(out)["epochs_completed"] == 2


def test_cli_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--model", "fnn", "--width", "4", "--print-config"])
    assert r.exit_code == 0 and "model_kwargs: {width: 4, depth: 10}" in r.output  # the default
    r = runner.invoke(app, ["train", "--model", "plain", "--depth", "3", "--layers", "10"])
    assert r.exit_code == 1 and "fnn only" in flat(r.output)
    r = runner.invoke(app, ["measure", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "does not exist" in flat(r.output)
    r = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "nope" in flat(r.output)


def test_amp_value_is_validated(tmp_path):
    """(That bf16 and channels_last really take effect: test_train_safety.py.)"""
    with pytest.raises(ValueError, match="amp must be None or 'bf16'"):
        train(tiny(tmp_path / "r2", amp="fp8"))
