"""train/measure safety: the run-directory lock, checkpoint order, refusals, damaged files,
unwritable output, markup in paths, piped logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from conflicting_bundles import rundir, runs
from conflicting_bundles.cli import app
from conflicting_bundles.train import train


def flat(text: str) -> str:
    return " ".join(text.split())


HOLD_SCRIPT = """
import json, os, sys, time
from conflicting_bundles.train import TrainConfig, train

class Hold:  # after epoch 1: tell the test, then wait until it says go
    def on_epoch_end(self, state):
        if state.epoch == 1:
            open(sys.argv[2], "w").close()
            while not os.path.exists(sys.argv[3]):
                time.sleep(0.02)

train(TrainConfig.from_dict(json.loads(sys.argv[1])), callbacks=[Hold()])
"""


@pytest.mark.subprocess
def test_a_running_train_locks_its_out(tmp_path, tiny_config):
    out = tmp_path / "conc"
    cfg = tiny_config(out, epochs=2)
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, json.dumps(cfg.to_dict()), str(ready), str(go)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is None  # the holder is alive while we try
        runner = CliRunner()
        args = ["train", "--model", "fnn", "--width", "16", "--depth", "3", "--seed", "1"]
        args += ["--dataset", "synthetic", "--epochs", "2", "--train-limit", "256"]
        r = runner.invoke(app, [*args, "--out", str(out), "--force", "-q"])
        assert r.exit_code == 1
        assert f"in use by pid {proc.pid} (cbundles train, since" in flat(r.output)
        assert "choose another --out" in flat(r.output)
        r = runner.invoke(app, ["train", "--resume", "--out", str(out), "-q"])
        assert r.exit_code == 1 and f"in use by pid {proc.pid}" in flat(r.output)
        with pytest.raises(rundir.RunInUseError):
            train(cfg, resume=True)
    finally:
        go.touch()
        proc.wait(timeout=120)
    assert proc.returncode == 0
    s = runs.load_summary(out)
    assert s["epochs_completed"] == 2 and runs.load_config(out)["seed"] == 0  # untouched


def test_best_checkpoint_is_written_before_last(tmp_path, tiny_config, monkeypatch):
    """A kill between the two writes must leave best.pt at least as new as last.pt."""
    order = []
    real = runs.atomic_write_bytes

    def spy(path, data):
        order.append(os.path.basename(path))
        return real(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", spy)
    train(tiny_config(tmp_path / "r", epochs=2))
    ckpts = [n for n in order if n.endswith(".pt")]
    first_best = ckpts.index("best.pt")
    assert ckpts[first_best + 1] == "last.pt"
    assert "summary.json" not in order[: order.index("last.pt")]
    # Rows of an epoch are written after its checkpoints.
    e1 = [i for i, n in enumerate(order) if n == "metrics.csv"][1]
    assert order[e1 - 1] == "last.pt"


def test_resume_refuses_to_shrink(tmp_path, tiny_config):
    out = tmp_path / "r"
    train(tiny_config(out, epochs=3))
    with pytest.raises(ValueError, match="has completed 3 epochs; --epochs 2 would shrink it"):
        train(tiny_config(out, epochs=2), resume=True)
    assert runs.load_config(out)["epochs"] == 3


def test_stale_temp_files_are_removed_on_resume(tmp_path, tiny_config):
    out = tmp_path / "r"
    train(tiny_config(out, epochs=1))
    stale = [out / ".metrics.csv.abc.tmp", out / "checkpoints" / ".last.pt.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (out / "mine.tmp").write_text("user file")
    train(tiny_config(out, epochs=2), resume=True)
    assert not any(p.exists() for p in stale)
    assert (out / "mine.tmp").exists()


def test_empty_and_damaged_checkpoints_have_specific_messages(tmp_path, tiny_config):
    out = tmp_path / "r"
    train(tiny_config(out, epochs=1))
    (out / "checkpoints" / "best.pt").write_bytes(b"")
    empty = r"is empty \(0 bytes\).*Use another checkpoint \(last\)"
    with pytest.raises(runs.RunDirError, match=empty):
        runs.load_checkpoint(out, "best")
    (out / "checkpoints" / "last.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(runs.RunDirError, match="is damaged or not a checkpoint"):
        runs.load_checkpoint(out, "last")
    r = CliRunner().invoke(app, ["measure", str(out), "--checkpoint", "best"])
    assert r.exit_code == 1 and "is empty (0 bytes)" in flat(r.output)
    assert "Traceback" not in r.output


def test_unwritable_out_is_refused_before_data_is_loaded(tmp_path, tiny_config, monkeypatch):
    import conflicting_bundles.train.components as comp

    def no_data(*a, **k):
        raise AssertionError("data loaded before the output was checked")

    monkeypatch.setattr(comp, "load_dataset", no_data)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(runs.RunDirError, match="disk full"):
        train(tiny_config(tmp_path / "r"))


def test_cli_disk_full_mid_run_says_what_to_do(tmp_path, monkeypatch):
    from conflicting_bundles.train import recorder

    real = recorder.Recorder.checkpoint

    def full(self, state, best, is_best):
        if state.epoch == 2:
            raise OSError(28, "No space left on device")
        real(self, state, best, is_best)

    monkeypatch.setattr(recorder.Recorder, "checkpoint", full)
    out = tmp_path / "r"
    args = ["train", "--model", "fnn", "--width", "8", "--depth", "2", "--dataset", "synthetic"]
    args += ["--epochs", "2", "--train-limit", "128", "--test-limit", "32", "--no-tensorboard"]
    r = CliRunner().invoke(app, [*args, "--out", str(out), "-q"])
    assert r.exit_code == 1
    msg = flat(r.output)
    assert "disk full" in msg and f"--resume --out {out}" in msg and "Traceback" not in r.output
    assert runs.load_checkpoint(out)["epoch"] == 1  # the last completed epoch is kept


def test_markup_in_paths_is_printed_verbatim(tmp_path):
    out = tmp_path / "c[/d]" / "[bold]x[/bold]"
    args = ["train", "--model", "fnn", "--width", "8", "--depth", "2", "--dataset", "synthetic"]
    args += ["--epochs", "1", "--train-limit", "128", "--test-limit", "32", "--no-tensorboard"]
    r = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"run directory: {out}" in r.output
    r = CliRunner().invoke(app, ["measure", str(out), "--samples", "32"])
    assert r.exit_code == 0, r.output
    assert str(out / "measure.csv") in r.output


def test_measure_prints_its_table_when_the_write_fails(tmp_path, tiny_config, monkeypatch):
    out = tmp_path / "r"
    train(tiny_config(out, epochs=1))
    import conflicting_bundles.cli.measure as cli_measure

    def readonly(path, rows):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(cli_measure, "write_csv", readonly)
    r = CliRunner().invoke(app, ["measure", str(out), "--samples", "32"])
    assert r.exit_code == 1
    assert "hidden.2" in r.output and "layers conflicting" in r.output  # the result is shown
    assert "read-only file system" in flat(r.output) and "--no-write" in flat(r.output)
    assert not (out / "measure.csv").exists()


LOG_SCRIPT = """
import json, sys
from conflicting_bundles.train import TrainConfig, train
train(TrainConfig.from_dict(json.loads(sys.argv[1])))
"""


@pytest.mark.subprocess
def test_piped_log_has_one_plain_line_per_epoch(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path / "r", epochs=3, progress=True)
    proc = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, json.dumps(cfg.to_dict())],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"},
    )
    assert proc.returncode == 0, proc.stderr
    both = proc.stdout + proc.stderr
    assert "\r" not in both  # no progress bars when piped
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["0/3", "1/3", "2/3", "3/3"]
    assert "test_acc" in proc.stdout and "│" in proc.stdout  # the summary table, untruncated


def test_progress_setting_and_tqdm_disable(monkeypatch):
    from conflicting_bundles import console

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    console.set_progress(True)
    try:
        assert console.progress_enabled()
        monkeypatch.setenv("TQDM_DISABLE", "1")
        assert not console.progress_enabled()
        monkeypatch.setenv("TQDM_DISABLE", "0")
        assert console.progress_enabled()
        console.set_progress(False)
        assert not console.progress_enabled()
    finally:
        console.set_progress(None)


def test_piped_console_does_not_truncate_names(capsys):
    from rich.table import Table

    from conflicting_bundles.console import make_console

    t = Table()
    t.add_column("name")
    t.add_column("x")
    long = "fashion-mnist-" + "y" * 150
    t.add_row(long, "1")
    make_console().print(t)
    assert long in capsys.readouterr().out


def test_bf16_and_channels_last_really_run(tmp_path, tiny_config, monkeypatch):
    """The training forward runs under bf16 autocast on channels_last inputs, while bundle
    measurement and evaluation see float32 activations."""
    seen = {"train": set(), "other": set(), "layout": set()}
    from conflicting_bundles.models.convnet import ConvNet

    real_forward = ConvNet.forward

    def forward(self, x):
        out = real_forward(self, x)
        key = "train" if self.training else "other"
        seen[key].add(out.dtype)
        if self.training:
            seen["layout"].add(x.is_contiguous(memory_format=torch.channels_last))
        return out

    monkeypatch.setattr(ConvNet, "forward", forward)
    cfg = tiny_config(
        tmp_path / "r",
        model="plain",
        model_kwargs={"blocks": [1, 1, 0, 0], "width_mult": 1 / 16},
        epochs=1,
        train_limit=64,
        test_limit=32,
        amp="bf16",
        channels_last=True,
    )
    res = train(cfg)
    assert res.status == "completed"
    assert seen["train"] == {torch.bfloat16} and seen["layout"] == {True}
    assert seen["other"] == {torch.float32}
    import math

    row = res.metrics[-1]
    assert math.isfinite(row["train_loss"]) and row["num_bundles"] is not None
