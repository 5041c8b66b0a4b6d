"""Auto-tune: the removal rules, the pure state transition, whole searches on the embedded
synthetic data (FNN and a plain conv net with warm restart), the resampled guard, resume after
a kill (simulated at the exact file boundaries, and a real SIGKILL), refusals, --force."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from conflicting_bundles import rundir, runs
from conflicting_bundles.autotune import (
    AutotuneConfig,
    ConflictCheck,
    SearchDidNotConverge,
    SearchState,
    StepOutcome,
    WarmStart,
    advance,
    autotune,
    decide_removal,
    final_run_dir,
    remap_optimizer_state,
)
from conflicting_bundles.autotune import check as check_mod
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
    with pytest.raises(ValueError, match="restart must be one of"):
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


QUIET = Console(quiet=True)


def _search(out: Path, **kw) -> AutotuneConfig:
    """A 2-step FNN search (12 blocks -> 4) of about a second."""
    train = _train_cfg(out.parent, model_kwargs={"width": 6, "depth": 12}, **kw.pop("train", {}))
    return AutotuneConfig(out=str(out), check_epochs=2, train=train, **kw)


# ------------------------------------------------------------------ the pure state transition
def _state(**kw) -> SearchState:
    arch = {"name": "fnn", "width": 4, "depth": 5}
    return SearchState(config={}, start_arch=arch, arch=arch, **kw)


def _shrink(arch: dict, remove: list[int]) -> dict:
    return {**arch, "depth": arch["depth"] - len(remove)}


def test_advance_fresh_warm_and_done():
    d = {"epoch": 2, "remove": [1, 3]}
    st = advance(_state(), StepOutcome({"step": 0}, d), "fresh", _shrink)
    assert st.arch["depth"] == 3 and st.warm is None and not st.done
    assert st.steps == [{"step": 0}]
    st = advance(st, StepOutcome({"step": 1}, {"epoch": 1, "remove": [0]}), "fresh", _shrink)
    assert st.arch["depth"] == 2
    # warm: the carried weights' epochs add up over the steps
    w = advance(_state(), StepOutcome({"step": 0}, d), "warm", _shrink)
    assert w.warm == WarmStart(offset=2, remove=[1, 3])
    w = advance(w, StepOutcome({"step": 1}, {"epoch": 3, "remove": [0]}), "warm", _shrink)
    assert w.warm == WarmStart(offset=5, remove=[0])
    # no decision: done, the architecture stays, nothing is carried
    end = advance(w, StepOutcome({"step": 2}, None), "warm", _shrink)
    assert end.done and end.warm is None and end.arch == w.arch and len(end.steps) == 3
    # the input state is not changed (pure)
    assert len(w.steps) == 2 and not w.done


def test_advance_refuses_a_removal_that_does_not_shrink():
    with pytest.raises(RuntimeError, match="did not shrink"):
        advance(_state(), StepOutcome({}, {"epoch": 0, "remove": [1]}), "fresh", lambda a, r: a)


def test_state_round_trips_through_json():
    st = _state(steps=[{"step": 0}], warm=WarmStart(3, [2]), wall_time=1.5)
    back = SearchState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st


def test_config_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown auto-tune field.*varaint"):
        AutotuneConfig.from_dict({"varaint": "all"})


# -------------------------------------------------------------------------- the guards
class _Res:
    def __init__(self, name: str, entropy: float):
        self.name, self.entropy, self.num_bundles = name, entropy, 1 if entropy == 0 else 3
        self.conflicting = entropy > 0


class _FakeState:
    """What ConflictCheck reads from a TrainState: measure(), the model, the run dir."""

    def __init__(self, run_dir: Path, last: float, every: list[float]):
        self.run_dir, self._last, self._every = run_dir, last, every
        self.model = create_model("fnn", width=4, depth=len(every), in_shape=(1, 4, 4))
        self.stop_reason = None

    def measure(self, which, **kw):
        if which == "last":
            return [_Res("hidden.last", self._last)]
        return [_Res(f"hidden.{i}", e) for i, e in enumerate(self._every)]

    def stop(self, reason):
        self.stop_reason = reason


def test_resampled_guard_measures_the_next_samples(tmp_path, monkeypatch):
    """The cheap check fires but the all-block pass sees no conflict: every block is measured
    again on the next N samples, and that pass decides (guard "resampled")."""
    calls = []

    def shifted(state, kind, n, crit):
        calls.append((kind, n, crit))
        return [_Res(f"hidden.{i}", e) for i, e in enumerate([0.0, 0.5, 0.0, 0.2])]

    monkeypatch.setattr(check_mod, "measure_shifted", shifted)
    state = _FakeState(tmp_path, last=0.3, every=[0.0, 0.0, 0.0, 0.0])
    check = ConflictCheck(AutotuneConfig(samples=16, criterion="raw"))
    check._check(state, 0)
    assert calls == [(None, 16, "raw")]
    assert check.decision["guard"] == "resampled"
    assert check.decision["remove"] == [1, 3]  # what the resampled pass flags, variant all
    assert check.decision["entropies"] == [0.0, 0.5, 0.0, 0.2]
    assert runs.read_json(tmp_path / "decision.json") == check.decision
    assert "remove ['hidden.1', 'hidden.3']" in state.stop_reason
    # the all-block pass reproduces the conflict: no resampling, no guard
    calls.clear()
    state = _FakeState(tmp_path, last=0.3, every=[0.0, 0.4, 0.0, 0.0])
    check = ConflictCheck(AutotuneConfig())
    check._check(state, 0)
    assert calls == [] and check.decision["guard"] == "" and check.decision["remove"] == [1]


# -------------------------------------------------------------------------- whole searches
@pytest.fixture(scope="module")
def fnn_search(tmp_path_factory):
    out = tmp_path_factory.mktemp("at") / "ref"
    cfg = AutotuneConfig(
        out=str(out), check_epochs=2, train=_train_cfg(tmp_path_factory.getbasetemp())
    )
    return cfg, autotune(cfg, console=QUIET)


def test_search_prunes_a_deep_narrow_fnn(fnn_search):
    cfg, res = fnn_search
    steps = res.steps
    assert len(steps) >= 2, "a 24-layer width-6 FNN forms conflicting bundles at init"
    first = steps[0]
    # the decision removed exactly the blocks whose entropy was > 0 (variant all, no guard)
    flagged = [n for n, e in zip(first["block_names"], first["entropies"], strict=True) if e > 0]
    assert first["guard"] == ""
    assert first["removed"] == flagged and flagged
    assert steps[-1]["status"] == "completed" and res.status == "completed"
    assert steps[-1]["num_blocks"] == steps[0]["num_blocks"] - len(flagged) or len(steps) > 2
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
    assert summary["criterion"] == "reference" and summary["status"] == "completed"
    assert summary["cost"]["final"]["params"] < summary["cost"]["start"]["params"]
    with pytest.raises(runs.RunDirError, match="--resume"):
        autotune(cfg, console=QUIET)
    # the folder resolves to its final step wherever a run directory is expected
    final = final_run_dir(out)
    assert final == out / "steps" / f"step_{len(steps) - 1:03d}"
    assert runs.load_arch(final)["depth"] == res.final_arch["depth"]
    assert final_run_dir(final) == final  # a plain run directory is itself


def test_resume_refuses_other_settings_naming_the_keys(fnn_search, tmp_path):
    cfg, _ = fnn_search
    d = tmp_path / "copy"
    shutil.copytree(cfg.out, d)
    other = AutotuneConfig(
        out=str(d),
        check_epochs=2,
        train=_train_cfg(Path(cfg.out).parent.parent, seed=7, lr=0.01, dataset="mnist"),
    )
    with pytest.raises(runs.RunDirError) as e:
        autotune(other, resume=True, console=QUIET)
    msg = str(e.value)
    for key in ("train.seed: run has 0, given 7", "train.lr", "train.dataset"):
        assert key in msg
    with pytest.raises(runs.RunDirError, match="check_epochs: run has 2, given 3"):
        autotune(dataclasses.replace(cfg, out=str(d), check_epochs=3), resume=True, console=QUIET)
    # runtime fields may change: the finished search is read back, nothing retrained
    stamp = (d / "steps" / "step_000" / "summary.json").stat().st_mtime_ns
    train = {**cfg.train, "threads": 2, "data_dir": cfg.train["data_dir"] + "/."}
    res = autotune(dataclasses.replace(cfg, out=str(d), train=train), resume=True, console=QUIET)
    assert res.final_arch == fnn_search[1].final_arch
    assert (d / "steps" / "step_000" / "summary.json").stat().st_mtime_ns == stamp


def test_force_deletes_only_the_search_files(fnn_search, tmp_path):
    cfg, _ = fnn_search
    d = tmp_path / "forced"
    shutil.copytree(cfg.out, d)
    mine = {"my_notes.json": "{}", "my_table.csv": "a\n1\n", "my_plot.png": "x", "x.txt": "y"}
    for name, text in mine.items():
        (d / name).write_text(text)
    (d / "steps" / "step_999").mkdir()  # a stale step of the old search goes too
    res = autotune(_search(d, train={"data_dir": cfg.train["data_dir"]}), force=True, console=QUIET)
    assert res.steps[0]["num_blocks"] == 12  # the new search, not the old one
    for name, text in mine.items():
        assert (d / name).read_text() == text, name
    assert not (d / "steps" / "step_999").exists()


def test_search_files_without_a_state_are_not_replaced_silently(tmp_path):
    out = tmp_path / "odd"
    (out / "steps" / "mine").mkdir(parents=True)
    with pytest.raises(runs.RunDirError, match="no autotune_state.json: pass --force"):
        autotune(_search(out), console=QUIET)
    assert (out / "steps" / "mine").is_dir()


def test_a_second_search_on_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "busy"
    with rundir.locked(out, "another autotune"):
        with pytest.raises(rundir.RunInUseError, match="in use by pid"):
            autotune(_search(out), console=QUIET)
    assert not (out / "autotune_state.json").exists()


def test_search_stops_shrinking_at_one_block(tmp_path):
    """tol:1e9 bundles everything: every block conflicts at every check. The search removes
    all but the first block (keep-one), then trains that net without looping forever."""
    cfg = AutotuneConfig(
        out=str(tmp_path / "one"),
        check_epochs=2,
        criterion="tol:1e9",
        train=_train_cfg(tmp_path, model_kwargs={"width": 6, "depth": 3}),
    )
    res = autotune(cfg, console=QUIET)
    assert [s["num_blocks"] for s in res.steps] == [3, 1]
    assert res.steps[0]["guard"] == "keep-one"
    assert res.steps[0]["removed"] == ["hidden.1", "hidden.2"]
    assert res.steps[1]["status"] == "completed"
    assert res.steps[1]["unresolved_conflict"] is True
    assert res.summary["criterion"] == "tol:1e9"
    with pytest.raises(SearchDidNotConverge, match="max_steps=1"):
        autotune(dataclasses.replace(cfg, max_steps=1), force=True, console=QUIET)


def test_warm_restart_carries_weights_and_continues(tmp_path):
    cfg = AutotuneConfig(
        out=str(tmp_path / "warm"),
        check_epochs=3,
        restart="warm",
        check_timing="after",
        train=_train_cfg(tmp_path, epochs=3),
    )
    res = autotune(cfg, console=QUIET)
    assert len(res.steps) >= 2
    # warm: the budget continues (a net pruned at the end of the budget still gets one epoch)
    assert res.total_epochs <= 3 + 1
    assert res.steps[1]["restart"] == "warm"
    carried = res.steps[0]["prune_epoch"]
    step1 = json.loads((Path(cfg.out) / "steps" / "step_001" / "config.json").read_text())
    assert step1["epochs"] == max(1, 3 - carried)


def test_conv_net_search_first_stage_warm(tmp_path):
    """A plain conv net end to end: stage-based removal (first-stage) and a warm restart whose
    next step starts from the surviving blocks' weights and BatchNorm buffers."""
    kw = {"blocks": [2, 2, 1, 1], "width_mult": 0.0625}
    cfg = AutotuneConfig(
        out=str(tmp_path / "plain"),
        check_epochs=2,
        variant="first-stage",
        restart="warm",
        criterion="coarse:16",
        train=_train_cfg(tmp_path, model="plain", model_kwargs=kw, keep_every_checkpoint=True),
    )
    res = autotune(cfg, console=QUIET)
    assert len(res.steps) >= 2 and res.status == "completed"
    out = Path(cfg.out)
    stages = {"a": 0, "b": 1, "c": 2, "d": 3}
    for k, s in enumerate(res.steps[:-1]):
        info = [{"stage": n.split(".")[0]} for n in s["block_names"]]
        d = decide_removal(s["entropies"], info, "first-stage")
        assert s["removed"] == [s["block_names"][i] for i in d.remove]
        assert len({n.split(".")[0] for n in s["removed"]}) == 1  # one stage
        nxt = res.steps[k + 1]["blocks"]
        for name in s["removed"]:
            assert nxt[stages[name[0]]] < s["blocks"][stages[name[0]]]
        # the next step's epoch-0 weights are this step's trained ones, BatchNorm included
        old = torch.load(out / "steps" / f"step_{k:03d}" / "decision_state.pt", weights_only=True)
        new = runs.load_checkpoint(out / "steps" / f"step_{k + 1:03d}", "0")["model"]
        assert any("running_mean" in key for key in new)
        for key, v in new.items():
            if key in old["model"] and old["model"][key].shape == v.shape:
                assert torch.equal(v, old["model"][key]), key
    assert res.final_arch["blocks"] == res.steps[-1]["blocks"]


def test_a_crafted_decision_state_is_refused_without_running_code(tmp_path):
    """decision_state.pt is loaded with weights_only=True: a pickle that runs code is refused."""
    cfg = _search(tmp_path / "w", restart="warm")
    autotune(cfg, console=QUIET)
    out = Path(cfg.out)
    # back to the state right after step 0 decided, with an evil decision_state.pt
    st = SearchState.from_dict(runs.read_json(out / "autotune_state.json"))
    shutil.rmtree(out / "steps" / "step_001")
    dec = runs.read_json(out / "steps" / "step_000" / "decision.json")
    st = dataclasses.replace(
        st, steps=st.steps[:1], done=False, warm=WarmStart(dec["epoch"], dec["remove"])
    )
    st.arch = create_model(**st.start_arch).without_blocks(dec["remove"]).arch()
    runs.write_json(out / "autotune_state.json", st.to_dict())
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil(), "optimizer": {}}, out / "steps" / "step_000" / "decision_state.pt")
    with pytest.raises(runs.RunDirError, match="cannot read .*decision_state.pt"):
        autotune(cfg, resume=True, console=QUIET)
    assert not marker.exists()


# ------------------------------------------------------------------ interrupted at a boundary
class Killed(BaseException):
    """Stands for SIGKILL at one exact point: nothing after it runs."""


def _kill_after_write(monkeypatch, suffix: str) -> None:
    real = runs.write_json

    def write_json(path, obj):
        real(path, obj)
        if str(path).endswith(suffix):
            monkeypatch.setattr(runs, "write_json", real)
            raise Killed(str(path))

    monkeypatch.setattr(runs, "write_json", write_json)


def _kill_before_write(monkeypatch, suffix: str) -> None:
    real = runs.write_json

    def write_json(path, obj):
        if str(path).endswith(suffix):
            monkeypatch.setattr(runs, "write_json", real)
            raise Killed(str(path))
        real(path, obj)

    monkeypatch.setattr(runs, "write_json", write_json)


@pytest.mark.parametrize(
    "timing, kill, how",
    [
        ("before", "step_000/decision.json", "after"),  # audit A1: decision, no summary
        ("after", "step_000/decision.json", "after"),  # the decided epoch was never saved
        ("after", "step_000/summary.json", "before"),  # saved, only summary.json missing
    ],
)
def test_resume_after_a_kill_between_decision_and_summary(tmp_path, monkeypatch, timing, kill, how):
    ref = autotune(_search(tmp_path / "ref", check_timing=timing), console=QUIET)
    cfg = _search(tmp_path / "k", check_timing=timing)
    (_kill_after_write if how == "after" else _kill_before_write)(monkeypatch, kill)
    with pytest.raises(Killed):
        autotune(cfg, console=QUIET)
    step0 = Path(cfg.out) / "steps" / "step_000"
    assert (step0 / "decision.json").is_file() and not (step0 / "summary.json").exists()
    res = autotune(cfg, resume=True, console=QUIET)
    assert res.steps == ref.steps
    assert res.final_arch == ref.final_arch
    a, b = (runs.load_summary(Path(c) / "steps" / "step_000") for c in (tmp_path / "ref", cfg.out))
    skip = ("train_time", "wall_time", "total_time")
    assert {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def test_cli_exits_1_when_a_step_diverged(tmp_path):
    from conflicting_bundles.cli import app

    args = ["autotune", "--dataset", "synthetic", "--model", "fnn", "--width", "10"]
    args += ["--depth", "5", "--epochs", "2", "--check-epochs", "1", "--train-limit", "256"]
    args += ["--test-limit", "64", "--lr", "1e3", "-q", "--data-dir", str(tmp_path / "data")]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "nan")])
    assert r.exit_code == 1, r.output
    assert "diverged" in " ".join(r.output.split())
    s = json.loads((tmp_path / "nan" / "autotune.json").read_text())
    assert s["status"] == "diverged" and s["test_acc"] is None


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


AUTOTUNE_KILL_SCRIPT = """
import json, os, signal, sys
from conflicting_bundles import runs
from conflicting_bundles.cli import app

real = runs.atomic_write_bytes

def write(path, data):  # a real SIGKILL once step 1 has written its first last.pt
    out = real(path, data)
    if str(path).endswith(os.path.join("step_001", "checkpoints", "last.pt")):
        os.kill(os.getpid(), signal.SIGKILL)
    return out

runs.atomic_write_bytes = write
app(json.loads(sys.argv[1]))
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_after_kill_gives_same_architecture(tmp_path):
    common = [
        "--dataset",
        "synthetic",
        "--model",
        "fnn",
        "--width",
        "6",
        "--depth",
        "12",
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
    from conflicting_bundles.cli import app

    ref = tmp_path / "ref"  # the reference and the resume run in this process: one subprocess
    r = CliRunner().invoke(app, ["autotune", *common, "--out", str(ref)])
    assert r.exit_code == 0, r.output
    killed = tmp_path / "killed"
    args = ["autotune", *common, "--out", str(killed)]
    p = subprocess.run(
        [sys.executable, "-c", AUTOTUNE_KILL_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (killed / "steps" / "step_001" / "checkpoints" / "last.pt").exists()
    assert not (killed / "autotune.json").exists()
    step0 = killed / "steps" / "step_000" / "metrics.csv"
    mtime = step0.stat().st_mtime_ns
    r = CliRunner().invoke(app, ["autotune", *common, "--out", str(killed), "--resume"])
    assert r.exit_code == 0, r.output
    a = json.loads((ref / "autotune.json").read_text())
    b = json.loads((killed / "autotune.json").read_text())
    assert a["final_arch"] == b["final_arch"]
    assert a["num_prunes"] == b["num_prunes"]
    assert a["test_acc"] == pytest.approx(b["test_acc"])
    assert step0.stat().st_mtime_ns == mtime, "a finished step was redone"
