"""Auto-tune: the removal rules, a whole search on the embedded synthetic data, warm restart,
and resume after the process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conflicting_bundles.autotune import (
    AutotuneConfig,
    autotune,
    decide_removal,
    remap_optimizer_state,
)
from conflicting_bundles.models import create_model
from conflicting_bundles.train import TrainConfig, make_optimizer

INFO = [{"stage": s} for s in "aaabbbcc"]


@pytest.mark.parametrize(
    "ent, variant, remove, guard",
    [
        ([0, 0.3, 0, 0.1, 0, 0.2, 0, 0.5], "all", [1, 3, 5, 7], ""),
        ([0, 0.3, 0, 0.1, 0, 0.2, 0, 0.5], "first-and-rest", [1, 2], ""),
        ([0, 0, 0, 0.1, 0, 0.2, 0, 0.5], "first-and-rest", [3, 4, 5], ""),
        ([0, 0, 0, 0.1, 0, 0.2, 0, 0.5], "first-stage", [3, 5], ""),
        ([0] * 8, "all", [7], "last-block"),
        ([1.0] * 8, "all", list(range(1, 8)), "keep-one"),
        ([1.0] + [0] * 7, "first-and-rest", [0, 1, 2], ""),
    ],
)
def test_decide_removal(ent, variant, remove, guard):
    d = decide_removal(ent, INFO, variant)
    assert d.remove == remove
    assert d.guard == guard


def test_decide_removal_errors():
    with pytest.raises(ValueError, match="variant"):
        decide_removal([0.0], INFO[:1], "some")
    with pytest.raises(ValueError, match="entropies"):
        decide_removal([0.0, 1.0], INFO[:1])
    with pytest.raises(ValueError, match="--restart"):
        AutotuneConfig(restart="lukewarm")


def test_check_timing_defaults():
    assert AutotuneConfig(variant="all").check_timing == "before"
    assert AutotuneConfig(variant="first-and-rest").check_timing == "after"


def _train_cfg(tmp: Path, **kw) -> dict:
    cfg = dict(
        model="fnn",
        model_kwargs={"width": 6, "depth": 24},
        dataset="synthetic",
        data_dir=str(tmp / "data"),
        epochs=2,
        train_limit=256,
        test_limit=128,
        threads=1,
        progress=False,
        tensorboard=False,
    )
    cfg.update(kw)
    return cfg


def test_search_prunes_a_deep_narrow_fnn(tmp_path):
    cfg = AutotuneConfig(out=str(tmp_path / "at"), check_epochs=2, train=_train_cfg(tmp_path))
    res = autotune(cfg)
    steps = res.steps
    assert len(steps) >= 2, "a 24-layer width-6 FNN forms conflicting bundles at init"
    first = steps[0]
    # the decision removed exactly the blocks whose entropy was > 0
    flagged = [n for n, e in zip(first["block_names"], first["entropies"], strict=True) if e > 0]
    assert first["removed"] == flagged or first["guard"]
    assert steps[-1]["status"] == "completed"
    assert steps[-1]["num_blocks"] < steps[0]["num_blocks"]
    assert res.final_arch["depth"] == steps[-1]["num_blocks"]
    out = Path(cfg.out)
    for name in (
        "steps.csv",
        "steps.json",
        "autotune.json",
        "report.html",
        "depth.png",
        "prune_entropy.png",
        "accuracy.png",
    ):
        assert (out / name).exists(), name
    summary = json.loads((out / "autotune.json").read_text())
    assert summary["criterion"] == "reference"
    assert summary["cost"]["final"]["params"] < summary["cost"]["start"]["params"]
    with pytest.raises(Exception, match="--resume"):
        autotune(cfg)


def test_search_stops_shrinking_at_one_block(tmp_path):
    """tol:1e9 bundles everything: every block conflicts at every check. The search removes
    all but the first block (keep-one), then trains that net without looping forever."""
    cfg = AutotuneConfig(
        out=str(tmp_path / "one"),
        check_epochs=2,
        criterion="tol:1e9",
        train=_train_cfg(tmp_path, model_kwargs={"width": 6, "depth": 3}),
    )
    res = autotune(cfg)
    assert [s["num_blocks"] for s in res.steps] == [3, 1]
    assert res.steps[0]["guard"] == "keep-one"
    assert res.steps[1]["status"] == "completed"
    assert res.steps[1]["unresolved_conflict"] is True
    assert res.summary["criterion"] == "tol:1e9"


def test_warm_restart_carries_weights_and_continues(tmp_path):
    cfg = AutotuneConfig(
        out=str(tmp_path / "warm"),
        check_epochs=3,
        restart="warm",
        check_timing="after",
        train=_train_cfg(tmp_path, epochs=3),
    )
    res = autotune(cfg)
    assert len(res.steps) >= 2
    # warm: the budget continues (a net pruned at the end of the budget still gets one epoch)
    assert res.total_epochs <= 3 + 1
    assert res.steps[1]["restart"] == "warm"
    carried = res.steps[0]["prune_epoch"]
    step1 = json.loads((Path(cfg.out) / "steps" / "step_001" / "config.json").read_text())
    assert step1["epochs"] == max(1, 3 - carried)


def test_remap_optimizer_state_keeps_surviving_blocks():
    torch.manual_seed(0)
    old = create_model("fnn", width=5, depth=4, in_shape=(1, 4, 4), num_classes=3)
    tcfg = TrainConfig()
    opt = make_optimizer(old.parameters(), tcfg)
    for _ in range(7):  # past one Lookahead sync (k = 6)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(
            old(torch.randn(8, 1, 4, 4)), torch.randint(0, 3, (8,))
        ).backward()
        opt.step()
    new = old.without_blocks([1], carry_weights=True)
    rename = {"hidden.0": "hidden.0", "hidden.1": "hidden.2", "hidden.2": "hidden.3"}
    fresh = make_optimizer(new.parameters(), tcfg).state_dict()
    sd = remap_optimizer_state(opt.state_dict(), old, new, fresh, rename)
    old_idx = {n: i for i, (n, _) in enumerate(old.named_parameters())}
    for j, (n, _) in enumerate(new.named_parameters()):
        src = n.replace("hidden.1.", "hidden.2.", 1) if n.startswith("hidden.1.") else n
        src = n.replace("hidden.2.", "hidden.3.", 1) if n.startswith("hidden.2.") else src
        i = old_idx[src]
        a = sd["base_optimizer"]["state"][j]["exp_avg"]
        b = opt.state_dict()["base_optimizer"]["state"][i]["exp_avg"]
        assert torch.equal(a, b), n
    make_optimizer(new.parameters(), tcfg).load_state_dict(sd)  # loads cleanly


def test_resume_after_kill_gives_same_architecture(tmp_path):
    common = [
        "--dataset",
        "synthetic",
        "--model",
        "fnn",
        "--width",
        "6",
        "--depth",
        "24",
        "--epochs",
        "3",
        "--check-epochs",
        "2",
        "--train-limit",
        "256",
        "--test-limit",
        "128",
        "--data-dir",
        str(tmp_path / "data"),
        "-q",
    ]
    cli = [sys.executable, "-m", "conflicting_bundles.cli"]
    ref = tmp_path / "ref"
    subprocess.run(
        [*cli, "autotune", *common, "--out", str(ref)], check=True, capture_output=True, timeout=300
    )
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        [*cli, "autotune", *common, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = killed / "steps" / "step_001" / "checkpoints" / "last.pt"
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert marker.exists(), "the search should have reached step 1 before the kill"
    step0 = killed / "steps" / "step_000" / "metrics.csv"
    mtime = step0.stat().st_mtime_ns
    subprocess.run(
        [*cli, "autotune", *common, "--out", str(killed), "--resume"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    a = json.loads((ref / "autotune.json").read_text())
    b = json.loads((killed / "autotune.json").read_text())
    assert a["final_arch"] == b["final_arch"]
    assert a["num_prunes"] == b["num_prunes"]
    assert a["test_acc"] == pytest.approx(b["test_acc"])
    assert step0.stat().st_mtime_ns == mtime, "a finished step was redone"
