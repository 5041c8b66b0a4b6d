"""Successive halving with and without the bundle filter, the random expectation, resumable
candidate trainings and the benchmark's verdicts (search.halving, search.criteria)."""

from __future__ import annotations

import math

import pytest
import torch

import conflicting_bundles.search.halving as halving
from conflicting_bundles.search import Budget, SearchStart, create_search, ladder
from conflicting_bundles.search import criteria as cr
from conflicting_bundles.search.common import train_to
from conflicting_bundles.search.halving import SuccessiveHalving, conflicting_tail


def tiny(epochs: int = 2, depth: int = 5) -> SearchStart:
    budget = Budget(epochs=epochs, val_split=400, test_limit=200, samples=32, optimizer="adam")
    return SearchStart("fnn", width=6, depth=depth, dataset="synthetic", budget=budget, threads=1)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_conflicting_tail():
    assert conflicting_tail([False, False, True, True]) == [2, 3]
    assert conflicting_tail([True, False, True, False, True]) == [4]  # only beyond a healthy one
    assert conflicting_tail([True, True]) == []  # every rung conflicts: the signal says nothing
    assert conflicting_tail([False, False]) == []


def test_sh_ladder_halves_and_resumes(tmp_path):
    start = tiny(epochs=2)
    r = create_search("sh-ladder", min_epochs=1).run(start, tmp_path)
    rounds = r.details["rounds"]
    sizes = [str(s) for s in ladder(start)]
    assert [x["epochs"] for x in rounds] == [1, 2]
    assert rounds[0]["rungs"] == sizes and len(rounds[1]["rungs"]) == 2  # ceil(4 / 2)
    kept = sorted(zip(rounds[0]["val_acc"], [-i for i in range(4)], strict=True))[::-1][:2]
    assert rounds[1]["rungs"] == sorted((sizes[-i] for _, i in kept), key=sizes.index)
    last = dict(zip(rounds[1]["rungs"], rounds[1]["val_acc"], strict=True))
    assert r.val_acc == max(last.values()) and str(r.size) in last
    assert r.epochs == 2 * 1 + 2 * 2  # two rungs stopped at 1 epoch, two went on to 2
    assert r.trainings == 4 and r.criterion is None and r.cpu_s > 0


def test_cb_sh_drops_the_conflicting_tail(tmp_path, monkeypatch):
    start = tiny(epochs=2)
    seen = []

    def flags(self, start, models, batch):
        seen.append(len(models))
        return [False] * (len(models) - 1) + [True]  # the deepest conflicts at every check

    monkeypatch.setattr(SuccessiveHalving, "_flags", flags)
    r = create_search("cb-sh", min_epochs=1).run(start, tmp_path)
    checks = r.details["checks"]
    assert [c["when"] for c in checks] == ["init", "epoch 1"] and seen == [4, 3]
    assert checks[0]["dropped"] == ["5"] and checks[1]["dropped"] == ["3"]
    assert r.details["rounds"][0]["rungs"] == ["1", "2"] and r.criterion == "reference"
    assert not (tmp_path / "sh" / "cb-sh" / "fnn-5").exists()  # dropped at init: never trained
    assert r.trainings == 3


def test_wall_budget_stops_promoting(tmp_path):
    r = SuccessiveHalving(None, min_epochs=1, budget_s=1e-6).run(tiny(epochs=4), tmp_path)
    assert len(r.details["rounds"]) == 1 and r.epochs == 4  # one round of 4 rungs x 1 epoch


def test_train_to_resumes_and_adds_cost(tmp_path):
    start = tiny(epochs=3, depth=2)
    one = train_to(start, 2, tmp_path / "a", 1)
    three = train_to(start, 2, tmp_path / "a", 3)
    straight = train_to(start, 2, tmp_path / "b", 3)
    assert (one.epochs, three.epochs) == (1, 3) and three.wall_s > one.wall_s
    assert three.val_acc == straight.val_acc  # resumed = one longer run
    for a, b in zip(three.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.allclose(a, b)
    again = train_to(start, 2, tmp_path / "a", 3)  # reused: the recorded cost
    assert again.wall_s == three.wall_s


def test_frozen_knobs_are_the_factory_defaults():
    m = create_search("cb-sh")
    assert (m.min_epochs, m.eta, m.check_init, m.check_first) == (
        halving.MIN_EPOCHS,
        halving.ETA,
        halving.CB_CHECK_INIT,
        halving.CB_CHECK_FIRST,
    )
    with pytest.raises(ValueError, match="eta >= 2"):
        create_search("sh-ladder", eta=1)


def row(method, start, seed, acc, wall, kind="depth-matters", size=3):
    return {"method": method, "start": start, "seed": seed, "split": "held-out", "kind": kind,
            "test_acc": acc, "wall_s": wall, "size": size, "epochs": 1}  # fmt: skip


def test_paired_and_gate_by_hand():
    rows = [row("a", "s", i, 0.5 + d, 1.0) for i, d in enumerate([0.01, 0.02, 0.03])]
    rows += [row("b", "s", i, 0.5, 4.0) for i in range(3)]
    p = cr.paired(rows, "a", "b", [("s", 0), ("s", 1), ("s", 2)])
    assert p["n"] == 3 and p["mean_points"] == pytest.approx(2.0)
    assert p["t"] == pytest.approx(2.0 / (1.0 / math.sqrt(3))) and p["wall_ratio"] == 0.25
    g_rows = [row("oracle-depth", "s", 0, 0.9, 9, size=8), row("fixed", "s", 0, 0.7, 1, size=2)]
    g = cr.gate(g_rows, "s", 0, [1, 2, 8, 13])
    assert g["passed"] and g["margin_points"] == pytest.approx(20.0)
    g_rows[0]["size"] = 13  # at the ladder's end: no interior optimum
    assert not cr.gate(g_rows, "s", 0, [1, 2, 8, 13])["passed"]


def test_criteria_and_recommendation():
    rows = []
    for i in range(6):
        rows += [row("fixed", "d", i, 0.80, 1), row("oracle-depth", "d", i, 0.95, 40)]
        rows += [row("cb-sh", "d", i, 0.94, 6), row("sh-ladder", "d", i, 0.94, 10)]
    for i in range(2):
        rows += [row(m, "n", i, 0.9, w, "no-harm") for m, w in (("fixed", 1), ("cb-sh", 2))]
        rows += [row("sh-ladder", "n", i, 0.9, 5, "no-harm")]
        rows += [row("oracle-depth", "n", i, 0.9, 50, "no-harm")]
    c = cr.criteria(rows)
    assert c["C1"]["met"] and c["C3"]["met"]
    assert c["C2"]["met"] and c["C2"]["value"]["wall_ratio"] == pytest.approx(0.55)  # <= 0.6x
    assert c["C4"]["met"]  # the ablation is 1 / 0.55 = 1.8x slower at equal accuracy
    assert cr.recommend(c, True) == "cb-sh"
    for r in rows:
        if r["method"] == "sh-ladder":
            r["wall_s"] = 6.2  # mean ratio 0.81: the filter saves too little
    c = cr.criteria(rows)
    assert not c["C4"]["met"] and not c["C2"]["met"]
    assert cr.recommend(c, True) == "sh-ladder" and cr.recommend(c, False) == "fixed"
    assert all(set(v) == {"value", "target", "met"} for k, v in c.items() if k != "method")
