"""Successive halving over the depth ladder, with and without the bundle filter, and the
expectation of a random ladder depth (issue 21, docs/search.md).

- ``sh-ladder``: every ladder depth trains ``min_epochs`` epochs; the best 1/eta by validation
  accuracy continue to eta times the epochs (resumed, not restarted), ... until one is left; it
  trains to the start's budget (``Budget.epochs``). ``budget_s`` (the wall budget B, seconds;
  None: no cap) stops promoting once spent: the best survivor by validation then wins.
- ``cb-sh``: the same, but deep rungs that are *conflicting* (the last layer has a conflicting
  bundle on the first ``samples`` training samples, under ``criterion``) are dropped, checked
  at initialisation (``check_init``) and after each rung's first epoch (``check_first``). Only
  the tail is dropped: rungs deeper than the deepest non-conflicting one (all conflicting:
  none dropped, the signal says nothing). Its ablation is ``sh-ladder`` with the same knobs.
- ``random``: the expected result of one ladder depth drawn uniformly: every depth is trained
  with the start's budget (shared with oracle-depth) and tested; the row holds the means.

Validation accuracy is the judge; the test set is read once per final network.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..data import dataset_info
from ..metric import Criterion
from ..probes import measure
from .common import (
    Trained,
    finish,
    first_batch,
    fresh_model,
    ladder,
    model_name,
    size_name,
    train_candidate,
    train_part,
    train_to,
)
from .records import SearchResult, SearchStart
from .registry import register_search

# The frozen knobs (tuned on the tuning rows only; docs/search.md "Protocol").
MIN_EPOCHS = 1
ETA = 2
CB_CRITERION = "reference"
CB_CHECK_INIT = True
CB_CHECK_FIRST = True


def _val(t: Trained) -> float:
    return -1.0 if t.val_acc is None else t.val_acc


def conflicting_tail(flags: list[bool]) -> list[int]:
    """Indices (into ``flags``, shallow to deep) of the rungs deeper than the deepest
    non-conflicting one; none when every rung conflicts."""
    ok = [i for i, f in enumerate(flags) if not f]
    return [] if not ok else list(range(ok[-1] + 1, len(flags)))


class SuccessiveHalving:
    """sh-ladder / cb-sh; see the module docstring. ``criterion`` None: no bundle filter."""

    def __init__(
        self,
        criterion: str | None = None,
        min_epochs: int = MIN_EPOCHS,
        eta: int = ETA,
        budget_s: float | None = None,
        check_init: bool = CB_CHECK_INIT,
        check_first: bool = CB_CHECK_FIRST,
    ) -> None:
        if int(min_epochs) < 1 or int(eta) < 2:
            raise ValueError(f"min_epochs >= 1 and eta >= 2 are required, got {min_epochs}, {eta}.")
        if budget_s is not None and not float(budget_s) > 0:
            raise ValueError(f"budget_s must be > 0 seconds, got {budget_s}.")
        self.criterion = None if criterion is None else Criterion.parse(criterion).name
        self.min_epochs, self.eta = int(min_epochs), int(eta)
        self.budget_s = None if budget_s is None else float(budget_s)
        self.check_init, self.check_first = bool(check_init), bool(check_first)
        self.name = "sh-ladder" if criterion is None else "cb-sh"

    def _flags(self, start: SearchStart, models, batch) -> list[bool]:
        ncls = dataset_info(start.dataset).num_classes
        b = start.budget
        return [
            bool(
                measure(
                    m,
                    [batch],
                    n_samples=b.samples,
                    lr=b.lr,
                    batch_size=b.batch_size,
                    criterion=self.criterion,
                    num_classes=ncls,
                )[-1].conflicting
            )
            for m in models
        ]

    def _filter(self, start, sizes, dirs, alive, latest, checks) -> tuple[list[int], float, float]:
        """The bundle checks (init, after epoch 1): the rungs left, and the wall and CPU
        seconds of the measurements (the epoch-1 trainings keep their own cost)."""
        t0, c0 = time.perf_counter(), time.process_time()
        b = start.budget
        batch = first_batch(train_part(start), b.samples, shuffle=False, seed=start.seed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        for when, on in (("init", self.check_init), ("epoch 1", self.check_first)):
            if not on or len(alive) < 2:
                continue
            if when == "epoch 1":
                latest.update({i: train_to(start, sizes[i], dirs[i], 1) for i in alive})
                models = [latest[i].model for i in alive]
            else:
                models = [fresh_model(start, sizes[i]) for i in alive]
            t0, c0 = time.perf_counter(), time.process_time()
            flags = self._flags(start, models, batch)
            drop = {alive[i] for i in conflicting_tail(flags)}
            checks.append(
                {
                    "when": when,
                    "rungs": [size_name(sizes[i]) for i in alive],
                    "conflicting": flags,
                    "dropped": [size_name(sizes[i]) for i in sorted(drop)],
                }
            )
            alive = [i for i in alive if i not in drop]
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
        return alive, wall, cpu

    def _halve(self, start, sizes, dirs, alive, latest, rounds, spent) -> list[int]:
        """Rounds of training and halving until one rung has the full budget (or the wall
        budget is spent); returns the rungs of the last round."""
        full = start.budget.epochs
        epochs = min(self.min_epochs, full) if len(alive) > 1 else full
        while True:
            latest.update({i: train_to(start, sizes[i], dirs[i], epochs) for i in alive})
            vals = [_val(latest[i]) for i in alive]
            rungs = [size_name(sizes[i]) for i in alive]
            rounds.append({"epochs": epochs, "rungs": rungs, "val_acc": vals})
            if epochs >= full or (self.budget_s is not None and spent() >= self.budget_s):
                return alive
            ranked = sorted(alive, key=lambda i: (-_val(latest[i]), i))  # ties: the shallower
            alive = sorted(ranked[: math.ceil(len(alive) / self.eta)])
            epochs = full if len(alive) == 1 else min(full, epochs * self.eta)

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        sizes = ladder(start)
        root = Path(work_dir) / "sh" / self.name
        dirs = [root / f"{model_name(start)}-{size_name(s)}" for s in sizes]
        latest: dict[int, Trained] = {}
        checks: list[dict] = []
        rounds: list[dict] = []
        alive, over_w, over_c = list(range(len(sizes))), 0.0, 0.0
        if self.criterion is not None:
            alive, over_w, over_c = self._filter(start, sizes, dirs, alive, latest, checks)

        def spent() -> float:
            return over_w + sum(t.wall_s for t in latest.values())

        alive = self._halve(start, sizes, dirs, alive, latest, rounds, spent)
        t = latest[min(alive, key=lambda i: (-_val(latest[i]), i))]
        knobs = {"min_epochs": self.min_epochs, "eta": self.eta, "budget_s": self.budget_s}
        if self.criterion is not None:
            knobs |= {"check_init": self.check_init, "check_first": self.check_first}
        details = {"ladder": [size_name(s) for s in sizes], "checks": checks}
        details |= {"rounds": rounds, "knobs": knobs}
        return finish(
            self.name,
            self.criterion,
            start,
            t.model,
            t.val_acc,
            sum(x.epochs for x in latest.values()),
            len(latest),
            spent(),
            details,
            cpu_s=over_c + sum(x.cpu_s for x in latest.values()),
        )


@register_search("sh-ladder")
def _sh_ladder(min_epochs: int = MIN_EPOCHS, eta: int = ETA, budget_s=None) -> SuccessiveHalving:
    return SuccessiveHalving(None, min_epochs, eta, budget_s)


@register_search("cb-sh")
def _cb_sh(
    criterion: str = CB_CRITERION,
    min_epochs: int = MIN_EPOCHS,
    eta: int = ETA,
    budget_s=None,
    check_init: bool = CB_CHECK_INIT,
    check_first: bool = CB_CHECK_FIRST,
) -> SuccessiveHalving:
    return SuccessiveHalving(criterion, min_epochs, eta, budget_s, check_init, check_first)


@register_search("random")
class RandomExpectation:
    """The expectation of one uniformly drawn ladder depth (means over the ladder of test and
    validation accuracy, parameters, latency and the cost of one training)."""

    criterion = None

    def __init__(self) -> None:
        self.name = "random"

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        sizes = ladder(start)
        per = []
        for s in sizes:
            t = train_candidate(start, s, work_dir)
            r = finish(self.name, None, start, t.model, t.val_acc, t.epochs, 1, t.wall_s,
                       cpu_s=t.cpu_s)  # fmt: skip
            per.append(r)
        n = len(per)

        def mean(key: str) -> float:
            return sum(getattr(r, key) or 0.0 for r in per) / n

        return SearchResult(
            method=self.name,
            start=start.label,
            dataset=start.dataset,
            seed=start.seed,
            final_arch={"expectation_over": [size_name(s) for s in sizes]},
            size=[r.size for r in per],
            params=round(mean("params")),
            start_params=per[0].start_params,
            latency_ms_b1=mean("latency_ms_b1"),
            latency_ms_b64=mean("latency_ms_b64"),
            val_acc=mean("val_acc"),
            test_acc=mean("test_acc"),
            epochs=round(mean("epochs")),
            trainings=1,
            wall_s=mean("wall_s"),
            criterion=None,
            cpu_s=mean("cpu_s"),
            details={
                "ladder": [size_name(s) for s in sizes],
                "test_acc": [r.test_acc for r in per],
                "val_acc": [r.val_acc for r in per],
                "wall_s": [r.wall_s for r in per],
            },
        )


__all__ = ["RandomExpectation", "SuccessiveHalving", "conflicting_tail"]
