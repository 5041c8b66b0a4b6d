"""Search methods behind one interface (conflicting_bundles.search), on the synthetic dataset."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

import conflicting_bundles.data as data_mod
import conflicting_bundles.search.common as common
from conflicting_bundles.cli.search import RECOMMENDED
from conflicting_bundles.models import create_model
from conflicting_bundles.search import (
    Budget,
    SearchStart,
    create_search,
    hamming_kernel,
    kernel_logdet,
    ladder,
    list_searches,
    naswot_score,
    register_search,
    relu_codes,
    run_methods,
    write_outputs,
)

ALL = [
    "sh-ladder",
    "cb-sh",
    "random",
    "autotune",
    "autotune-warm",
    "autotune-calibrated",
    "oracle-depth",
    "naswot",
    "conflict-at-init",
    "fixed",
]
# The calibrated criterion is tested elsewhere; here the calibrated auto-tune runs with rel:0.01.
SPECS = [s if s != "autotune-calibrated" else "autotune-calibrated@rel:0.01" for s in ALL]


def tiny(seed: int = 0, depth: int = 5) -> SearchStart:
    budget = Budget(
        epochs=1, check_epochs=1, val_split=400, test_limit=200, samples=32, score_batch=32
    )
    return SearchStart("fnn", width=6, depth=depth, dataset="synthetic", budget=budget, seed=seed)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Every method from one tiny start, counting test-set reads in training and in search."""
    out = tmp_path_factory.mktemp("search")
    calls = {"train_test": 0, "final_test": 0, "loads": 0}
    mp = pytest.MonkeyPatch()
    original = data_mod.load_dataset

    def counted(counter: str):
        def load(name, split="train", *a, **k):
            if split == "test":
                calls[counter] += 1
            calls["loads"] += 1
            return original(name, split, *a, **k)

        return load

    # Every module that imported load_dataset (training's modules included) counts into
    # train_test, except the search's own final evaluation, which counts into final_test.
    for mod in list(sys.modules.values()):
        if mod is not None and mod.__name__.startswith("conflicting_bundles"):
            if getattr(mod, "load_dataset", None) is original:
                mp.setattr(mod, "load_dataset", counted("train_test"))
    mp.setattr(common, "load_dataset", counted("final_test"))
    torch.set_num_threads(1)
    try:
        results = run_methods(tiny(), SPECS, out, log=lambda s: None)
    finally:
        mp.undo()
    return out, results, calls


def test_registry_round_trip():
    assert [n for n in list_searches() if n in ALL] == ALL
    m = create_search("conflict-at-init@rel:0.01")
    assert (m.name, m.criterion) == ("conflict-at-init@rel:0.01", "rel:0.01")
    assert create_search("autotune").criterion == "reference"
    assert create_search("autotune-warm").restart == "warm"
    with pytest.raises(ValueError, match="unknown search method 'nope'"):
        create_search("nope")
    with pytest.raises(ValueError, match="criterion"):
        create_search("autotune@bogus")

    @register_search("test-only-method")
    class Dummy:
        criterion = None

        def run(self, start, work_dir):
            raise NotImplementedError

    assert isinstance(create_search("test-only-method"), Dummy)
    with pytest.raises(ValueError, match="already registered"):
        register_search("test-only-method")(lambda: None)


def test_naswot_kernel_hand_computed():
    codes = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 1]])
    # agreements: (0,1): unit 0 -> 1; (0,2): units 1, 2 -> 2; (1,2): none -> 0
    k = torch.tensor([[3.0, 1, 2], [1, 3, 0], [2, 0, 3]], dtype=torch.float64)
    assert torch.equal(hamming_kernel(codes), k)
    det = 3 * (9 - 0) - 1 * (3 - 0) + 2 * (0 - 6)  # = 12
    assert kernel_logdet(codes) == pytest.approx(math.log(det))
    assert kernel_logdet(torch.tensor([[1, 0], [1, 0]])) == -math.inf  # equal codes


def test_naswot_codes_of_a_model():
    torch.manual_seed(0)
    model = create_model("fnn", width=4, depth=3, in_shape=[1, 2, 2], num_classes=3)
    x = torch.randn(6, 1, 2, 2)
    codes = relu_codes(model, x)
    assert codes.shape == (6, 12) and codes.dtype == torch.bool
    h = x.reshape(6, -1)
    ref = []
    for layer in model.hidden:
        h = torch.relu(layer.fc(h))
        ref.append(h > 0)
    assert torch.equal(codes, torch.cat(ref, 1))
    assert naswot_score(model, x) == pytest.approx(kernel_logdet(codes))
    conv = create_model("plain", blocks=[1, 1, 0, 0], width_mult=0.125, in_shape=[1, 8, 8])
    assert math.isfinite(naswot_score(conv, torch.randn(4, 1, 8, 8), "plain"))


def test_ladders():
    assert ladder(tiny(depth=60)) == [1, 2, 3, 5, 8, 13, 21, 34, 55]
    assert ladder(tiny(depth=5)) == [1, 2, 3, 5]
    conv = SearchStart("plain", blocks=(3, 3, 5, 3), width_mult=0.125, dataset="synthetic")
    assert ladder(conv) == [(1, 1, 1, 1), (2, 2, 2, 2), (2, 2, 4, 2), (3, 3, 5, 3)]


def test_bad_starts_and_budgets_are_clear():
    with pytest.raises(ValueError, match="validation split"):
        Budget(val_split=0)
    with pytest.raises(ValueError, match="leaves no training samples"):
        Budget(val_split=500, train_limit=400)
    with pytest.raises(ValueError, match="depth"):
        SearchStart("fnn", width=4, depth=0)
    with pytest.raises(ValueError, match="blocks"):
        SearchStart("plain", blocks=(1, 2))


def test_every_method_runs_and_touches_test_once(searched):
    out, results, calls = searched
    assert [r.method for r in results] == SPECS
    assert calls["loads"] > len(SPECS)  # the patch saw the trainings' loads ...
    assert calls["train_test"] == 0  # ... and no training loaded the test set
    start = tiny()
    sizes = ladder(start)
    # one evaluation per final network; random's expectation has one per ladder depth
    assert calls["final_test"] == len(SPECS) - 1 + len(sizes)
    by = {r.method: r for r in results}
    for r in results:
        assert 0.0 <= r.test_acc <= 1.0 and 0.0 <= r.val_acc <= 1.0
        assert r.epochs >= 0 and r.wall_s > 0 and r.cpu_s > 0
        if r.method != "random":
            assert 1 <= r.size <= start.depth and r.params <= r.start_params
    oracle = by["oracle-depth"]
    assert oracle.epochs == len(sizes) * start.budget.epochs and oracle.trainings == len(sizes)
    assert oracle.val_acc == max(oracle.details["val_acc"])
    assert oracle.size == sizes[oracle.details["val_acc"].index(oracle.val_acc)]
    rnd = by["random"]
    assert rnd.size == sizes and rnd.test_acc == pytest.approx(sum(rnd.details["test_acc"]) / 4)
    assert rnd.details["val_acc"] == oracle.details["val_acc"]  # the same trainings
    for name in ("naswot", "conflict-at-init", "fixed", "random"):
        assert by[name].epochs == start.budget.epochs and by[name].trainings == 1
    scores = [-math.inf if s is None else s for s in by["naswot"].details["scores"]]
    assert by["naswot"].size == sizes[scores.index(max(scores))]
    flags = by["conflict-at-init"].details["conflicting"]
    ok = [s for s, f in zip(sizes, flags, strict=True) if not f]
    assert by["conflict-at-init"].size == (ok[-1] if ok else sizes[0])
    assert by["fixed"].size == 2
    assert by["autotune"].criterion == "reference"
    assert by["autotune-calibrated@rel:0.01"].criterion == "rel:0.01"
    # the same candidate trained once: fixed and oracle's depth-2 run share their weights
    assert by["fixed"].val_acc == oracle.details["val_acc"][sizes.index(2)]


def test_rerun_reuses_results_without_training(searched, monkeypatch):
    out, results, _ = searched

    def no_training(*a, **k):
        raise AssertionError("a cached method trained again")

    monkeypatch.setattr(common, "train", no_training)
    again = run_methods(tiny(), ["fixed", "oracle-depth"], out, log=lambda s: None)
    before = {r.method: r.to_dict() for r in results}
    assert [r.to_dict() for r in again] == [before["fixed"], before["oracle-depth"]]


def test_outputs_lead_with_the_answer(searched):
    out, results, _ = searched
    report = write_outputs(out, tiny(), results)
    data = json.loads((out / "search.json").read_text())
    assert len(data["results"]) == len(SPECS)
    assert (out / "search.csv").read_text().count("\n") == len(SPECS) + 1
    assert (out / "search_cost.png").stat().st_size > 0
    html = report.read_text()
    assert html.index("Best by validation accuracy") < html.index("<table")


def test_cli_search(tmp_path):
    from typer.testing import CliRunner

    from conflicting_bundles.cli import app

    base = ["search", "-d", "synthetic", "--width", "6", "--depth", "3", "--epochs", "1"]
    base += ["--test-limit", "100", "--samples", "16", "-q", "-o", str(tmp_path)]
    runner = CliRunner()
    r = runner.invoke(app, base + ["--methods", "fixed"])
    assert r.exit_code == 1 and "--val-split is required" in r.output
    r = runner.invoke(app, base + ["--val-split", "400", "--methods", "fixed,nope"])
    assert r.exit_code == 1 and "unknown search method 'nope'" in r.output
    assert not (tmp_path / "runs").exists()  # nothing trained before the spec was checked
    r = runner.invoke(app, base + ["--val-split", "400", "--optimizer", "lbfgs"])
    assert r.exit_code == 1 and "unknown optimizer 'lbfgs'" in r.output
    r = runner.invoke(app, base + ["--val-split", "400", "--optimizer", "adam", "--lr", "2e-3"])
    assert r.exit_code == 0, r.output  # no --methods: the recommended method beside fixed
    data = json.loads((tmp_path / "search.json").read_text())
    assert [x["method"] for x in data["results"]] == [RECOMMENDED, "fixed"]
    assert data["start"]["budget"]["optimizer"] == "adam"
    assert data["start"]["budget"]["lr"] == 2e-3
    cfg = json.loads(next((tmp_path / "runs").glob("*/config.json")).read_text())
    assert (cfg["optimizer"], cfg["lr"]) == ("adam", 2e-3)  # every training gets the recipe
    r = runner.invoke(app, base + ["--val-split", "400", "--methods", "recommended,fixed,random"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "search.json").read_text())
    assert [x["method"] for x in data["results"]] == [RECOMMENDED, "fixed", "random"]
    assert "search from fnn 3x6" in r.output and (tmp_path / "report.html").exists()
