"""`cbundles lesion` piped: a headline naming the test set (the run's own --test-limit unless
one is given), one plain progress line per evaluated lesion set ("lesion i/n sets  elapsed ..
eta .."), lines inside a long evaluation at least every INTERVAL seconds, silence with -q /
progress=False.

The run: resnet blocks [3, 1, 1, 1] (6 blocks), width 1/16, 1 epoch on 256 synthetic samples,
trained with test_limit 200 (the synthetic test split has 500)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from conflicting_bundles import runs
from conflicting_bundles.cli import app
from conflicting_bundles.console import set_progress
from conflicting_bundles.lesion import LesionConfig, lesion_run
from conflicting_bundles.lesion import signals as lesion_signals
from conflicting_bundles.lesion.progress import StudyProgress
from conflicting_bundles.lesion.run import describe_test_set, resolve_test_limit
from conflicting_bundles.train import TrainConfig, train

LINE = re.compile(r"^lesion (\d+)/(\d+) sets  elapsed \S+ \S+  eta \S+( \S+)?$")
RUN_LIMIT = 200


@pytest.fixture(autouse=True)
def _progress_reset(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    yield
    set_progress(None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesion-progress") / "run"
    cfg = TrainConfig(
        model="resnet",
        model_kwargs={"blocks": [3, 1, 1, 1], "width_mult": 1 / 16},
        dataset="synthetic",
        epochs=1,
        train_limit=256,
        test_limit=RUN_LIMIT,
        out=str(out),
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    return out


def lesion_cli(run_dir, out, *extra: str):
    args = ["lesion", str(run_dir), "--repeats", "2", "--out", str(out), *extra]
    r = CliRunner().invoke(app, args)  # CliRunner's output is not a terminal
    assert r.exit_code == 0, r.output
    return r.output.splitlines(), json.loads((out / "lesion_summary.json").read_text())


def progress_lines(lines: list[str]) -> list[tuple[int, int]]:
    return [(int(m[1]), int(m[2])) for m in map(LINE.match, lines) if m]


def test_piped_cli_prints_a_line_per_evaluated_set(run_dir, tmp_path):
    lines, s = lesion_cli(run_dir, tmp_path / "les")
    found = progress_lines(lines)
    # every lesion set the study evaluated (each is one entry of the fresh cache) has its line,
    # numbered 1..n, the last one n/n
    evaluated = len(runs.read_json(tmp_path / "les" / "lesion_cache.json")["acc"])
    assert [i for i, _ in found] == list(range(1, evaluated + 1))
    assert found[-1] == (evaluated, evaluated)
    # at least one line per distinct lesion set: the intact model, each single block, the
    # random sets of every group and k (draws shared by groups counted once)
    sets = _study_sets(tmp_path / "les", s)
    assert len(sets) > 10 and len(found) >= len(sets)
    assert f"lesion {evaluated}/{evaluated} sets evaluated in" in "\n".join(lines)
    assert not any("\r" in line for line in lines)
    # the headline comes first and names the test set and where its size comes from
    assert lines[0].startswith("lesion study of ")
    assert f"test set: {RUN_LIMIT} samples (the run's --test-limit)" in lines[0]
    first = next(i for i, x in enumerate(lines) if LINE.match(x))
    assert 0 < first < next(i for i, x in enumerate(lines) if x.startswith("Blocks"))
    # again: every set is in the cache, nothing is counted, the closing line says so
    again, _ = lesion_cli(run_dir, tmp_path / "les")
    assert not progress_lines(again)
    assert re.search(r"lesion: 0 lesion sets to evaluate .* already in lesion_cache", again[2])
    assert "lesion 0/0 sets evaluated in" in "\n".join(again)


def _study_sets(out, s: dict) -> set[tuple[int, ...]]:
    """The distinct lesion sets of the study in ``out``: the intact model, each lesionable
    block alone and the random sets of the curves, drawn again from its blocks (seeded)."""
    from conflicting_bundles.lesion import plans
    from conflicting_bundles.lesion.study import plan_sets

    cfg = LesionConfig(**s["config"])
    blocks = runs.read_csv(out / "lesion_blocks.csv")
    lesionable = [b["index"] for b in blocks if b["lesionable"]]
    max_k = cfg.max_k or len(lesionable)
    drawn = {
        tuple(x)
        for p in plans(blocks, lesionable, cfg)
        for k in range(1, p.max_k(max_k) + 1)
        for x in plan_sets(p, k, cfg)[0]
    }
    return drawn | {()} | {(i,) for i in lesionable}


def test_the_runs_test_limit_is_the_default_and_an_option_overrides_it(run_dir, tmp_path):
    _, s = lesion_cli(run_dir, tmp_path / "a", "-q")
    assert s["num_test_samples"] == RUN_LIMIT
    assert s["test_set"]["source"] == "run" and s["test_set"]["limit"] == RUN_LIMIT
    assert s["base_test_acc"] * RUN_LIMIT == pytest.approx(round(s["base_test_acc"] * RUN_LIMIT))

    lines, s = lesion_cli(run_dir, tmp_path / "b", "--test-limit", "50")
    assert s["num_test_samples"] == 50 and s["test_set"]["source"] == "given"
    assert "test set: 50 samples (--test-limit 50 given; the run used 200)" in lines[0]

    lines, s = lesion_cli(run_dir, tmp_path / "c", "--test-limit", "0")  # the whole split
    assert s["num_test_samples"] == 500 and s["test_set"]["limit"] is None
    assert (
        "test set: 500 samples (the whole split, --test-limit 0 given; the run used 200)"
        in (lines[0])
    )


def test_quiet_and_progress_false_print_nothing(run_dir, tmp_path, capfd):
    lines, _ = lesion_cli(run_dir, tmp_path / "q", "-q")
    assert not progress_lines(lines) and not any(x.startswith("lesion study of") for x in lines)
    capfd.readouterr()
    set_progress(False)
    res = lesion_run(
        run_dir, LesionConfig(repeats=1, max_k=1), tmp_path / "lib", progress=False, report=False
    )
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert res.summary["test_set"]["samples"] == RUN_LIMIT


def test_resolve_and_describe_the_test_limit():
    tc = TrainConfig(dataset="synthetic", test_limit=500)
    assert resolve_test_limit(LesionConfig(), tc) == (500, "run")
    assert resolve_test_limit(LesionConfig(test_limit=64), tc) == (64, "given")
    assert resolve_test_limit(LesionConfig(test_limit=0), tc) == (None, "given")
    assert resolve_test_limit(LesionConfig(), TrainConfig(dataset="synthetic")) == (None, "run")
    assert describe_test_set(500, 500, "run", 500) == (
        "test set: 500 samples (the run's --test-limit)"
    )
    assert describe_test_set(10000, None, "run", None) == (
        "test set: 10000 samples (the whole split, as the run)"
    )
    assert "the run used the whole split" in describe_test_set(64, 64, "given", None)
    with pytest.raises(ValueError, match="test_limit must be >= 0"):
        LesionConfig(test_limit=-1)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_inside_a_long_evaluation_and_throttled_above_bars(capsys):
    set_progress(False)  # piped: a line per set, and every 10 s inside one
    clock = FakeClock()
    p = StudyProgress(True, interval=10.0, clock=clock)
    p.total = 3
    p.begin()
    clock.t = 4.0
    p.batch(100, 500)  # 4 s since the last line: nothing yet
    clock.t = 12.0
    p.batch(300, 500)
    clock.t = 20.0
    p.end()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "lesion 0/3 sets (set 1: 60% of the test set)  elapsed 12 s  eta 48 s",
        "lesion 1/3 sets  elapsed 20 s  eta 40 s",
    ]
    set_progress(True)  # a terminal: the bar counts sets, a line only every 10 s
    bars = StudyProgress(True, interval=10.0, clock=clock)
    bars.total = 5
    for _ in range(5):
        bars.begin()
        clock.t += 3.0
        bars.end()
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("lesion ")]
    assert lines == ["lesion 4/5 sets  elapsed 12 s  eta 3.0 s"]
    silent = StudyProgress(False, clock=clock)
    silent.begin(), silent.end(), silent.batch(1, 2), silent.finish()
    assert capsys.readouterr().out == ""


def test_accuracy_reports_each_batch():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    seen = []
    acc = lesion_signals.accuracy(model, x, y, 4, on_batch=lambda i, n: seen.append((i, n)))
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert acc == lesion_signals.accuracy(model, x, y, 10)
