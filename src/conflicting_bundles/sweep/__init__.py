"""Many independent runs at once, as Ray tasks: auto-tune over seeds x datasets, the FNN width x
depth grid, lesion repeats. A YAML file describes the sweep (``cbundles sweep sweep.yaml``):

    kind: autotune                  # autotune | train | grid-cell | lesion
    base: {variant: all, check_epochs: 10, train: {model: plain, ...}}  # every trial's config
    grid: {seed: [0, 1, 2], dataset: [mnist, fashion-mnist]}   # cartesian product = trials
    resources: {cpus: 1, gpus: 0}   # per trial
    retries: 2                      # a crashed trial runs again, resuming its checkpoints
    out: runs/sweep1

Grid keys: ``a.b.c`` sets that nested entry of the trial's config. A plain key is the first of
(1) a field of the kind's own config (AutotuneConfig for autotune, LesionConfig for lesion,
TrainConfig for train/grid-cell), (2) a TrainConfig field (autotune: in ``train``; lesion: in
``train`` when the trial trains its model), (3) a model argument (``model_kwargs``; checked
against the model's factory). For lesion, ``seed`` sets the lesion seed and, when the trial
trains its model, the training seed too.

Each trial writes its own run directory ``out/trials/<name>`` (name from the grid values). A
trial whose directory holds its final file (summary.json, autotune.json, lesion_summary.json) is
finished and never rerun: run the same command again to resume a sweep (unfinished trials
continue from their checkpoints), or add grid values to extend it. Results: ``results.csv`` (one
row per trial), ``sweep.json`` (spec, trials, summary), ``sweep.png``, ``report.html``, and a
summary table (mean +- std over seeds when ``seed`` is a grid key).

Ray: ``ray_address=None`` starts a local instance (stopped at the end); "auto" or "host:port"
joins a running cluster, whose nodes must all see ``out`` (and the data) at the same path.

Modules: spec (SweepSpec, load_spec), registry (Trial, TrialKind, register_kind), plan (trials
and where grid values land), kinds (the built-in kinds), executors (serial, worker processes,
Ray; shared with grid.py), results (summary over seeds, plot), runner (run_sweep).
"""

from . import kinds  # noqa: F401 - the built-in kinds register themselves (producers load lazily)
from .executors import execute
from .plan import plan
from .registry import KINDS, Trial, TrialKind, get_kind, register_kind
from .results import SweepResult, summarize_results
from .runner import run_sweep
from .spec import Resources, SweepSpec, load_spec

__all__ = [
    "KINDS",
    "Resources",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialKind",
    "execute",
    "get_kind",
    "load_spec",
    "plan",
    "register_kind",
    "run_sweep",
    "summarize_results",
]
