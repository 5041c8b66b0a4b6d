"""The search methods behind one interface (``run(start, work_dir) -> SearchResult``).

- ``autotune``: the paper (METHOD §5): reference criterion, variant all, fresh restart;
  ``autotune-warm``: the same with warm restarts; ``autotune-calibrated``: the paper's loop
  with the calibrated criterion (``Criterion.parse("calibrated")``).
- ``oracle-depth``: train every ladder depth, keep the best by validation accuracy (the
  accuracy ceiling of depth search; it pays for every training).
- ``naswot``: Mellor et al. 2021, scored at initialisation for every ladder depth; train only
  the argmax.
- ``conflict-at-init``: the deepest ladder depth whose last layer is not conflicting at
  initialisation (under ``criterion``); train only that.
- ``fixed``: a small default (FNN depth 2; conv one block per stage), a floor.

Successive halving (``sh-ladder``, ``cb-sh``) and ``random`` (an expectation over the ladder)
are in halving.py.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .. import runs
from ..autotune import AutotuneConfig, autotune, final_run_dir
from ..console import make_console
from ..data import dataset_info
from ..metric import Criterion
from ..probes import measure
from .common import (
    Trained,
    finish,
    first_batch,
    fresh_model,
    ladder,
    last_val_acc,
    size_name,
    train_candidate,
    train_config,
    train_part,
)
from .naswot import naswot_score
from .records import SearchResult, SearchStart
from .registry import register_search


def _from_trained(
    name: str, crit: str | None, start: SearchStart, t: Trained, extra_s=0.0, extra_cpu=0.0, **d
):
    return finish(
        name,
        crit,
        start,
        t.model,
        t.val_acc,
        t.epochs,
        1,
        t.wall_s + extra_s,
        d,
        cpu_s=t.cpu_s + extra_cpu,
    )


class Autotune:
    """The auto-tune loop of conflicting_bundles.autotune with the start's budget."""

    def __init__(self, criterion: str = "reference", restart: str = "fresh", variant="all"):
        Criterion.parse(criterion)  # a clear error now rather than after the first training
        self.name, self.criterion, self.restart, self.variant = (
            "autotune",
            criterion,
            restart,
            variant,
        )

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        out = Path(work_dir) / "autotune" / f"{self.restart}-{self.variant}-{self.criterion}"
        b = start.budget
        tcfg = train_config(start, start.size, out, measure_samples=b.samples)
        cfg = AutotuneConfig(
            out=str(out),
            variant=self.variant,
            restart=self.restart,
            check_epochs=b.check_epochs,
            samples=b.samples,
            criterion=self.criterion,
            train=tcfg.to_dict(),
        )
        started = (out / "autotune_state.json").exists()
        c0 = time.process_time()
        res = autotune(
            cfg, resume=started, force=not started, console=make_console(quiet=not start.progress)
        )
        last = final_run_dir(out)
        model, _ = runs.load_model(last, "last")
        details = {
            "steps": [
                {
                    "step": s.get("step"),
                    "blocks": s.get("blocks"),
                    "epochs_trained": s.get("epochs_trained"),
                    "removed": len(s.get("removed") or []),
                    "status": s.get("status"),
                }
                for s in res.steps
            ],
            "variant": self.variant,
            "restart": self.restart,
            "status": getattr(res, "status", "completed"),
        }
        return finish(
            self.name,
            Criterion.parse(self.criterion).name,
            start,
            model,
            last_val_acc(last),
            res.total_epochs,
            len(res.steps),
            res.wall_time,
            details,
            cpu_s=time.process_time() - c0,  # this invocation's (a resumed one: its part only)
        )


@register_search("autotune")
def _autotune(criterion: str = "reference", variant: str = "all") -> Autotune:
    return Autotune(criterion, "fresh", variant)


@register_search("autotune-warm")
def _autotune_warm(criterion: str = "reference", variant: str = "all") -> Autotune:
    return Autotune(criterion, "warm", variant)


@register_search("autotune-calibrated")
def _autotune_calibrated(criterion: str = "calibrated", variant: str = "all") -> Autotune:
    return Autotune(criterion, "fresh", variant)


@register_search("oracle-depth")
class OracleDepth:
    """Train every ladder depth; the best validation accuracy wins (cost: all of them)."""

    criterion = None

    def __init__(self) -> None:
        self.name = "oracle-depth"

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        trained = [(s, train_candidate(start, s, work_dir)) for s in ladder(start)]
        vals = [-1.0 if t.val_acc is None else t.val_acc for _, t in trained]
        best = max(range(len(trained)), key=lambda i: vals[i])  # first of ties: the shallowest
        t = trained[best][1]
        return finish(
            self.name,
            None,
            start,
            t.model,
            t.val_acc,
            sum(x.epochs for _, x in trained),
            len(trained),
            sum(x.wall_s for _, x in trained),
            {"ladder": [size_name(s) for s, _ in trained], "val_acc": vals},
            cpu_s=sum(x.cpu_s for _, x in trained),
        )


@register_search("naswot")
class Naswot:
    """Mellor et al. 2021 at initialisation on one training batch; train only the argmax."""

    criterion = None

    def __init__(self) -> None:
        self.name = "naswot"

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        t0, c0 = time.perf_counter(), time.process_time()
        x, _ = first_batch(
            train_part(start), start.budget.score_batch, shuffle=True, seed=start.seed
        )
        sizes = ladder(start)
        scores = [naswot_score(fresh_model(start, s), x, start.family) for s in sizes]
        pick = max(range(len(sizes)), key=lambda i: scores[i])  # -inf everywhere: the shallowest
        score_s, score_c = time.perf_counter() - t0, time.process_time() - c0
        t = train_candidate(start, sizes[pick], work_dir)
        shown = [None if math.isinf(s) else s for s in scores]
        sizes_shown = [size_name(s) for s in sizes]
        return _from_trained(
            self.name, None, start, t, score_s, score_c, ladder=sizes_shown, scores=shown
        )


@register_search("conflict-at-init")
class ConflictAtInit:
    """The deepest ladder depth whose last layer has no conflicting bundle at initialisation
    (the first ``samples`` training samples, ``criterion``); the shallowest if all conflict."""

    def __init__(self, criterion: str = "reference") -> None:
        self.criterion = Criterion.parse(criterion).name
        self.name = "conflict-at-init"

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        t0, c0 = time.perf_counter(), time.process_time()
        b = start.budget
        batch = first_batch(train_part(start), b.samples, shuffle=False, seed=start.seed)
        ncls = dataset_info(start.dataset).num_classes
        sizes, flags = ladder(start), []
        for s in sizes:
            last = measure(
                fresh_model(start, s),
                [batch],
                n_samples=b.samples,
                batch_size=b.batch_size,
                criterion=self.criterion,
                num_classes=ncls,
            )[-1]
            flags.append(bool(last.conflicting))
        ok = [i for i, f in enumerate(flags) if not f]
        pick = ok[-1] if ok else 0
        score_s, score_c = time.perf_counter() - t0, time.process_time() - c0
        t = train_candidate(start, sizes[pick], work_dir)
        return _from_trained(
            self.name,
            self.criterion,
            start,
            t,
            score_s,
            score_c,
            ladder=[size_name(s) for s in sizes],
            conflicting=flags,
        )


@register_search("fixed")
class Fixed:
    """A small default: FNN depth 2 (``depth``), conv nets one block per non-empty stage."""

    criterion = None

    def __init__(self, depth: int = 2) -> None:
        self.name, self.depth = "fixed", depth

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult:
        if start.family == "fnn":
            size = min(self.depth, start.depth)
        else:
            size = tuple(1 if b else 0 for b in start.blocks)
        return _from_trained(self.name, None, start, train_candidate(start, size, work_dir))
