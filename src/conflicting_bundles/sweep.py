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
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runs

__all__ = [
    "KINDS",
    "Resources",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialKind",
    "execute",
    "load_spec",
    "plan",
    "register_kind",
    "run_sweep",
    "summarize_results",
]

SPEC_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
TRIALS_DIR = "trials"
SPEC_KEYS = ("kind", "base", "grid", "resources", "retries", "out")


# ------------------------------------------------------------------------------------ spec
@dataclass
class Resources:
    """What one trial reserves on the Ray cluster (fractions allowed, e.g. gpus: 0.5)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class SweepSpec:
    """One sweep: ``kind`` of run, the ``base`` config, the ``grid`` of values to vary."""

    kind: str
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)  # key -> list of values
    out: str = "runs/sweep"
    resources: Resources = field(default_factory=Resources)
    retries: int = 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "the sweep spec") -> SweepSpec:
        if not isinstance(d, dict):
            raise ValueError(f"{source} must be a mapping with keys {', '.join(SPEC_KEYS)}.")
        unknown = sorted(set(d) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SPEC_KEYS)}."
            )
        if "kind" not in d:
            raise ValueError(f"{source}: `kind` is missing; one of {', '.join(KINDS)}.")
        if d["kind"] not in KINDS:
            raise ValueError(f"{source}: unknown kind {d['kind']!r}; one of {', '.join(KINDS)}.")
        base = d.get("base") or {}
        if not isinstance(base, dict):
            raise ValueError(f"{source}: `base` must be a mapping (the config of every trial).")
        grid = d.get("grid") or {}
        if not isinstance(grid, dict):
            raise ValueError(f"{source}: `grid` must map keys to lists of values.")
        grid = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in grid.items()}
        empty = [k for k, v in grid.items() if not v]
        if empty:
            raise ValueError(f"{source}: grid key(s) {', '.join(empty)} have no values.")
        res = d.get("resources") or {}
        if not isinstance(res, dict) or set(res) - {"cpus", "gpus"}:
            raise ValueError(f"{source}: `resources` takes cpus and gpus, got {res!r}.")
        resources = Resources(**res)
        for name in ("cpus", "gpus"):
            v = getattr(resources, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{source}: resources.{name} must be a number >= 0, got {v!r}.")
        retries = d.get("retries", 2)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"{source}: retries must be an integer >= 0, got {retries!r}.")
        out = d.get("out", "runs/sweep")
        return cls(d["kind"], base, grid, str(out), resources, retries)


_EXP_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(x):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; make such strings floats."""
    if isinstance(x, dict):
        return {k: _numbers(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_numbers(v) for v in x]
    if isinstance(x, str) and _EXP_NUMBER.match(x):
        return float(x)
    return x


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep YAML (or JSON) file; clear errors for what is wrong in it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep spec {path} not found.")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    return SweepSpec.from_dict(_numbers(d), source=str(path))


# ------------------------------------------------------------------------------------ trials
@dataclass
class Trial:
    """One run of the sweep: its grid values, its resolved config, its run directory."""

    name: str
    params: dict
    config: dict
    dir: str


@dataclass(frozen=True)
class TrialKind:
    """How to build, run and read one kind of trial. ``run`` resumes what an earlier attempt
    left in ``trial.dir``; ``row`` reads the result from the files; ``metrics`` are summarised
    over seeds, the first is plotted."""

    name: str
    final_file: str
    build: Callable[[SweepSpec, dict], dict]
    run: Callable[[Trial], None]
    row: Callable[[Trial], dict]
    metrics: tuple[str, ...] = ()

    def finished(self, trial: Trial) -> bool:
        return (Path(trial.dir) / self.final_file).is_file()


def _set(cfg: dict, path: str, value) -> None:
    """cfg["a"]["b"]["c"] = value for path "a.b.c" (creating missing mappings)."""
    *parents, last = path.split(".")
    d = cfg
    for i, k in enumerate(parents):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"grid key {path!r}: {'.'.join(parents[: i + 1])} is not a mapping.")
    d[last] = value


def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_model_kwargs(tcfg: dict, where: str) -> None:
    """Model arguments must be ones the model factory takes (a typo would only fail later, in
    the trial)."""
    import inspect

    from .models import model_signature

    kw = tcfg.get("model_kwargs") or {}
    params = model_signature(tcfg.get("model", "fnn")).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise ValueError(
            f"{where}: {', '.join(unknown)} is neither a config field nor an argument of model "
            f"{tcfg.get('model', 'fnn')!r} (its arguments: {', '.join(params)})."
        )


def _train_config(spec: SweepSpec, tcfg: dict, where: str) -> dict:
    """Defaults for a trial's training run, then validation (TrainConfig + model arguments)."""
    from .data import dataset_info
    from .train import TrainConfig

    tcfg = dict(tcfg)
    tcfg.setdefault("progress", False)  # trials run side by side: no progress bars
    tcfg.setdefault("threads", max(1, int(spec.resources.cpus)))
    if tcfg.get("data_dir") is not None:
        tcfg["data_dir"] = str(Path(tcfg["data_dir"]).expanduser().resolve())
    try:
        TrainConfig.from_dict(tcfg).validate()
        dataset_info(tcfg.get("dataset", "mnist"))  # an unknown name fails here, not in a trial
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    _check_model_kwargs(tcfg, where)
    return tcfg


def _apply(params: dict, cfg: dict, own: set[str], train_key: str | None) -> None:
    """Put each grid value where it belongs (see the module docstring)."""
    from .train import TrainConfig

    train_fields = _field_names(TrainConfig)
    for key, v in params.items():
        if "." in key:
            _set(cfg, key, v)
        elif key in own:
            cfg[key] = v
        else:
            tcfg = cfg.setdefault(train_key, {}) if train_key else cfg
            if key in train_fields:
                tcfg[key] = v
            else:
                tcfg.setdefault("model_kwargs", {})[key] = v


def _build_train(spec: SweepSpec, params: dict) -> dict:
    cfg = copy.deepcopy(spec.base)
    if spec.kind == "grid-cell":
        cfg.setdefault("model", "fnn")
    _apply(params, cfg, set(), None)
    return _train_config(spec, cfg, f"trial {params}")


def _build_autotune(spec: SweepSpec, params: dict) -> dict:
    from .autotune import AutotuneConfig

    cfg = copy.deepcopy(spec.base)
    own = _field_names(AutotuneConfig) - {"train"}
    unknown = sorted(set(cfg) - own - {"train"})
    if unknown:
        raise ValueError(
            f"base: unknown auto-tune field(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(own))} and train (the training config)."
        )
    _apply(params, cfg, own, "train")
    cfg["train"] = _train_config(spec, cfg.get("train", {}), f"trial {params}")
    try:
        AutotuneConfig(**cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"trial {params}: {e}") from None
    return cfg


LESION_KEYS = {"run", "checkpoint", "train", "lesion", "data_dir", "device", "threads"}


def _build_lesion(spec: SweepSpec, params: dict) -> dict:
    from .lesion import LesionConfig

    cfg = copy.deepcopy(spec.base)
    unknown = sorted(set(cfg) - LESION_KEYS)
    if unknown:
        raise ValueError(
            f"base: unknown lesion key(s) {', '.join(unknown)}; valid: {', '.join(LESION_KEYS)} "
            "(LesionConfig fields go under `lesion`)."
        )
    if ("run" in cfg) == ("train" in cfg):
        raise ValueError(
            "base of a lesion sweep needs exactly one of `run` (a trained run directory) or "
            "`train` (a training config: each trial trains its own model first)."
        )
    lesion_fields = _field_names(LesionConfig)
    for key, v in params.items():
        if "." in key or key in LESION_KEYS:
            _set(cfg, key, v)
        elif key in lesion_fields:
            cfg.setdefault("lesion", {})[key] = v
            if key == "seed" and "train" in cfg:
                cfg["train"]["seed"] = v  # a repeat trains its own model too
        elif "train" in cfg:
            _apply({key: v}, cfg, set(), "train")
        else:
            raise ValueError(
                f"grid key {key!r} is not a LesionConfig field, and the trials train no model "
                f"(base has `run`); LesionConfig fields: {', '.join(sorted(lesion_fields))}."
            )
    try:
        LesionConfig(**cfg.get("lesion", {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"trial {params}: lesion: {e}") from None
    cfg.setdefault("threads", max(1, int(spec.resources.cpus)))
    if "train" in cfg:
        cfg["train"] = _train_config(spec, cfg["train"], f"trial {params}")
    else:
        cfg["run"] = str(Path(cfg["run"]).expanduser().resolve())
        if not runs.is_run_dir(cfg["run"]):
            raise ValueError(f"base.run: {cfg['run']} holds no training run ({runs.CONFIG}).")
    return cfg


def _name(params: dict) -> str:
    if not params:
        return "run"

    def clean(x) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(x)).strip("_") or "_"

    return "_".join(f"{clean(k)}-{clean(v)}" for k, v in params.items())


def plan(spec: SweepSpec) -> list[Trial]:
    """The trials of a sweep, in grid order (the last key varies fastest), each with its
    validated config and run directory. Raises ValueError for anything a trial would refuse."""
    kind = KINDS[spec.kind]
    out = Path(spec.out).expanduser().resolve()
    keys = list(spec.grid)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*spec.grid.values())]
    names = [_name(p) for p in combos]
    trials = []
    for params, name in zip(combos, names, strict=True):
        if names.count(name) > 1 or len(name) > 120:  # distinct values that clean alike
            digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
            name = f"{name[:100]}-{digest}"
        config = kind.build(spec, params)
        trials.append(Trial(name, params, config, str(out / TRIALS_DIR / name)))
    return trials


# ------------------------------------------------------------------------------------ kinds
def _train_into(tcfg: dict, d: Path) -> None:
    from .train import TrainConfig, train

    resume = runs.checkpoint_path(d, "last").is_file() and (d / runs.CONFIG).is_file()
    train(TrainConfig.from_dict({**tcfg, "out": str(d)}), resume=resume, force=not resume)


def _run_train(trial: Trial) -> None:
    _train_into(trial.config, Path(trial.dir))


def _row_train(trial: Trial) -> dict:
    s = runs.load_summary(trial.dir)
    keys = (
        "status",
        "epochs_completed",
        "params",
        "test_acc",
        "test_acc_std",
        "best_test_acc",
        "final_train_acc",
        "num_bundles_final",
        "bundle_entropy_init",
        "bundle_entropy_final",
        "bundle_entropy_mean",
        "train_time",
    )
    return {k: s.get(k) for k in keys}


def _row_grid_cell(trial: Trial) -> dict:
    row = _row_train(trial)
    kw = trial.config.get("model_kwargs", {})
    row = {"width": kw.get("width"), "depth": kw.get("depth"), **row}
    for when in ("init", "final", "mean"):
        e = row.get(f"bundle_entropy_{when}")
        row[f"conflicting_{'any' if when == 'mean' else when}"] = None if e is None else e > 0
    return row


def _run_autotune(trial: Trial) -> None:
    from rich.console import Console

    from .autotune import AutotuneConfig, autotune

    d = Path(trial.dir)
    cfg = AutotuneConfig.from_dict({**trial.config, "out": str(d)})
    resume = (d / "autotune_state.json").is_file()
    autotune(cfg, resume=resume, force=not resume, console=Console(quiet=True))


def _row_autotune(trial: Trial) -> dict:
    s = json.loads((Path(trial.dir) / "autotune.json").read_text())
    cost = s.get("cost", {})
    return {
        "status": "completed",
        "start_blocks": str(s.get("start_blocks")),
        "final_blocks": str(s.get("final_blocks")),
        "num_prunes": s.get("num_prunes"),
        "total_epochs": s.get("total_epochs"),
        "test_acc": s.get("test_acc"),
        "params_start": cost.get("start", {}).get("params"),
        "params_final": cost.get("final", {}).get("params"),
        "wall_time_s": s.get("wall_time_s"),
    }


def _run_lesion(trial: Trial) -> None:
    from .lesion import LesionConfig, lesion_run

    c, d = trial.config, Path(trial.dir)
    run_dir = c.get("run")
    if run_dir is None:  # the trial trains its own model first
        run_dir = d / "train"
        if not (run_dir / runs.SUMMARY).is_file():
            _train_into(c["train"], run_dir)
    lesion_run(
        run_dir,
        LesionConfig(**c.get("lesion", {})),
        d,
        checkpoint=c.get("checkpoint", "last"),
        data_dir=c.get("data_dir"),
        device=c.get("device", "cpu"),
        threads=c.get("threads", 1),
        progress=False,
        report=False,
    )


def _row_lesion(trial: Trial) -> dict:
    s = json.loads((Path(trial.dir) / "lesion_summary.json").read_text())
    crit = s.get("primary_criterion", "reference")
    by = s.get("by_criterion", {}).get(crit, {})
    removable = by.get("removable", {})
    return {
        "status": "completed",
        "criterion": crit,
        "base_test_acc_pct": s.get("base_test_acc_pct"),
        "num_blocks": s.get("num_blocks"),
        "num_flagged": by.get("num_flagged"),
        "removable_all": s.get("removable_all_blocks", {}).get("fraction_of_blocks"),
        "removable_conflicting": removable.get("conflicting", {}).get("fraction_of_blocks"),
        "removable_non_conflicting": removable.get("non-conflicting", {}).get("fraction_of_blocks"),
    }


KINDS: dict[str, TrialKind] = {}


def register_kind(kind: TrialKind) -> TrialKind:
    """Add (or replace) a kind of trial; ``kind.run``/``row`` must be picklable for Ray."""
    KINDS[kind.name] = kind
    return kind


_TRAIN_METRICS = ("test_acc", "bundle_entropy_final", "num_bundles_final")
register_kind(
    TrialKind("train", runs.SUMMARY, _build_train, _run_train, _row_train, _TRAIN_METRICS)
)
register_kind(
    TrialKind(
        "grid-cell",
        runs.SUMMARY,
        _build_train,
        _run_train,
        _row_grid_cell,
        ("test_acc", "bundle_entropy_init", "bundle_entropy_final"),
    )
)
register_kind(
    TrialKind(
        "autotune",
        "autotune.json",
        _build_autotune,
        _run_autotune,
        _row_autotune,
        ("test_acc", "final_blocks", "num_prunes", "total_epochs"),
    )
)
register_kind(
    TrialKind(
        "lesion",
        "lesion_summary.json",
        _build_lesion,
        _run_lesion,
        _row_lesion,
        ("removable_all", "removable_conflicting", "base_test_acc_pct", "num_flagged"),
    )
)


# ------------------------------------------------------------------------------ execution
def _deterministic_errors() -> tuple[type[BaseException], ...]:
    from .data import DatasetError

    return (ValueError, TypeError, runs.RunDirError, DatasetError)


def _head(trial: Trial, status: str) -> dict:
    return {"trial": trial.name, "status": status, **trial.params}


def execute(kind: TrialKind, trial: Trial) -> dict:
    """Run one trial (resuming what an earlier attempt left) and return its result row.

    Errors in the input (bad config, missing data, a refused resume) give a row with status
    "error": a retry cannot fix them. Any other exception propagates, so the trial is retried
    (by Ray, or by ``run_sweep`` without Ray)."""
    t0 = time.perf_counter()
    try:
        kind.run(trial)
        row = kind.row(trial)
    except _deterministic_errors() as e:
        return {**_head(trial, "error"), "error": f"{type(e).__name__}: {e}", "run_dir": trial.dir}
    head = _head(trial, row.pop("status", "completed"))
    return {**head, **row, "time_s": time.perf_counter() - t0, "run_dir": trial.dir}


def _failed_row(trial: Trial, err: BaseException) -> dict:
    cause = getattr(err, "cause", None) or err  # a RayTaskError carries the trial's exception
    msg = str(cause).strip().splitlines()
    return {
        **_head(trial, "failed"),
        "error": f"{type(cause).__name__}: {msg[-1] if msg else ''}",
        "run_dir": trial.dir,
    }


def _cached_row(kind: TrialKind, trial: Trial) -> dict:
    row = kind.row(trial)
    head = _head(trial, row.pop("status", "completed"))
    return {**head, **row, "cached": True, "run_dir": trial.dir}


def _run_serial(kind: TrialKind, todo: list[Trial], retries: int, done: Callable) -> None:
    for trial in todo:
        for attempt in range(retries + 1):
            try:
                row = execute(kind, trial)
                break
            except Exception as e:
                row = _failed_row(trial, e)
                if attempt == retries:
                    break
        done(trial, row)


def _run_ray(
    kind: TrialKind,
    todo: list[Trial],
    spec: SweepSpec,
    ray_address: str | None,
    num_cpus: int | None,
    done: Callable,
    console,
) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError(
            "Ray is not installed: `pip install 'conflicting-bundles[dist]'` (or "
            "`pip install 'ray[default]'`), or run the trials one by one with --serial."
        ) from None
    started = not ray.is_initialized()
    if started:
        if ray_address:
            ray.init(address=ray_address)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False)
    try:
        have = ray.cluster_resources()
        need = {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus}
        short = {k: v for k, v in need.items() if v > have.get(k, 0.0)}
        if short:
            msg = (
                f"a trial asks for {need['CPU']:g} CPU and {need['GPU']:g} GPU but the Ray "
                f"cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU"
            )
            if ray_address is None:
                raise ValueError(msg + "; lower `resources` in the spec.")
            console.print(f"[yellow]warning:[/] {msg}; trials wait until nodes join.")
        remote = ray.remote(execute).options(
            num_cpus=spec.resources.cpus,
            num_gpus=spec.resources.gpus,
            max_retries=spec.retries,
            retry_exceptions=True,  # our own exceptions too; input errors come back as rows
        )
        pending = {remote.remote(kind, t): t for t in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                trial = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as e:  # retries exhausted (RayTaskError, a dead worker, ...)
                    row = _failed_row(trial, e)
                done(trial, row)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------- results
@dataclass
class SweepResult:
    out: Path
    rows: list[dict]  # one per trial, in grid order
    summary: list[dict]  # one per group of trials that differ only in their seed
    ran: int  # trials run now
    cached: int  # trials finished before, not rerun

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] in ("failed", "error")]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summarize_results(rows: list[dict], grid_keys: list[str], metrics: tuple[str, ...]) -> list:
    """Group the trials that differ only in a seed key (``seed``, ``*.seed``); per group the
    trial count, how many completed, and each metric's mean and std (numbers) or its distinct
    values (anything else)."""
    seed = [k for k in grid_keys if k == "seed" or k.endswith(".seed")]
    by = [k for k in grid_keys if k not in seed]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps([r.get(k) for k in by], default=str), []).append(r)
    out = []
    for members in groups.values():
        g = {k: members[0].get(k) for k in by}
        g["trials"] = len(members)
        g["completed"] = sum(r["status"] == "completed" for r in members)
        for m in metrics:
            vals = [r.get(m) for r in members if r.get(m) is not None]
            if vals and all(_is_number(v) for v in vals):
                g[m] = float(np.mean(vals))
                g[f"{m}_std"] = float(np.std(vals))
            elif vals:
                g[m] = " | ".join(dict.fromkeys(str(v) for v in vals))
            else:
                g[m] = None
        out.append(g)
    return out


def _table_rows(summary: list[dict], metrics: tuple[str, ...]) -> list[dict]:
    """Cells for the terminal: "mean +- std" where a group has more than one value."""
    from .report import fmt

    rows = []
    for g in summary:
        r = {k: v for k, v in g.items() if not k.endswith("_std")}
        for m in metrics:
            std = g.get(f"{m}_std")
            if std is not None and g["trials"] > 1:
                r[m] = f"{fmt(g[m])} ± {fmt(std)}"
        rows.append(r)
    return rows


def _plot(spec: SweepSpec, rows: list[dict], summary: list[dict], metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if spec.kind == "grid-cell" and {"width", "depth"} <= set(spec.grid):
        widths, depths = sorted(set(spec.grid["width"])), sorted(set(spec.grid["depth"]))
        acc = np.full((len(depths), len(widths)), np.nan)
        conflict = np.zeros_like(acc, dtype=bool)
        for g in summary:
            if g.get(metric) is not None and _is_number(g[metric]):
                i, j = depths.index(g["depth"]), widths.index(g["width"])
                acc[i, j] = g[metric]
        for r in rows:
            if r.get("conflicting_any"):
                conflict[depths.index(r["depth"]), widths.index(r["width"])] = True
        size = (max(5.0, 1.5 + 0.6 * len(widths)), max(3.5, 1.2 + 0.45 * len(depths)))
        fig, ax = plt.subplots(figsize=size)
        im = ax.imshow(acc, origin="lower", aspect="auto", cmap="viridis")
        ys, xs = np.nonzero(conflict)
        ax.scatter(xs, ys, marker="x", color="red")
        ax.set_xticks(range(len(widths)), [str(w) for w in widths])
        ax.set_yticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("width")
        ax.set_ylabel("depth")
        fig.colorbar(im, label=metric + " (mean over seeds)")
        ax.set_title(f"sweep {out.name}: {metric}; x = conflicting bundles", fontsize=10)
    else:
        vals = [g for g in summary if _is_number(g.get(metric))]
        if not vals:
            return
        by = [k for k in spec.grid if k != "seed" and not k.endswith(".seed")]
        labels = [", ".join(f"{k}={g[k]}" for k in by) or "all" for g in vals]
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.35 * len(vals)))
        ax.barh(
            range(len(vals)),
            [g[metric] for g in vals],
            xerr=[g.get(f"{metric}_std") or 0.0 for g in vals],
            color="C0",
        )
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(metric + (" (mean ± std over seeds)" if len(by) < len(spec.grid) else ""))
        ax.set_title(f"sweep {out.name}: {spec.kind}")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)


def _check_same_sweep(spec: SweepSpec, out: Path) -> None:
    """Finished trials are reused by name: refuse a different base config in the same out."""
    path = out / SPEC_FILE
    if not path.is_file():
        return
    stored = json.loads(path.read_text()).get("spec", {})
    now = json.loads(json.dumps(spec.to_dict()))
    for k in ("kind", "base"):
        if stored.get(k) != now[k]:
            raise ValueError(
                f"{out} holds a sweep with a different {k} ({path}); its finished trials would "
                "be mixed with the new ones. Use another `out` (--out), or the same spec."
            )


def run_sweep(
    spec: SweepSpec,
    *,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    serial: bool = False,
    dry_run: bool = False,
    console=None,
) -> SweepResult:
    """Plan the trials, skip the finished ones, run the rest (Ray tasks, or one by one in this
    process with ``serial``), gather every row into results.csv and print the summary table.

    ray_address: None starts a local Ray instance (``num_cpus``: its CPUs, default all);
    "auto" / "host:port" joins a running cluster. A Ray session already initialised in this
    process is used as it is. dry_run: print the plan, run nothing, write nothing."""
    from rich.console import Console
    from rich.markup import escape

    from .report import build_report, print_table

    console = console or Console()
    kind = KINDS[spec.kind]
    trials = plan(spec)
    out = Path(spec.out).expanduser().resolve()
    _check_same_sweep(spec, out)
    rows: dict[str, dict] = {}
    todo = []
    for t in trials:
        if kind.finished(t):
            rows[t.name] = _cached_row(kind, t)
        else:
            todo.append(t)
    console.print(
        f"sweep {out}: {len(trials)} {spec.kind} trials, {len(rows)} finished, {len(todo)} to "
        f"run ({'serially' if serial else 'on Ray'}; each {spec.resources.cpus:g} CPU, "
        f"{spec.resources.gpus:g} GPU; {spec.retries} retries)",
        highlight=False,
    )
    if dry_run:
        for t in trials:
            state = "finished" if t.name in rows else "to run"
            console.print(f"  {t.name}  ({state})  {t.dir}", markup=False, highlight=False)
        return SweepResult(out, [rows.get(t.name, _head(t, "planned")) for t in trials], [], 0, 0)

    out.mkdir(parents=True, exist_ok=True)
    spec_doc = {"spec": spec.to_dict(), "trials": [dataclasses.asdict(t) for t in trials]}
    runs.write_json(out / SPEC_FILE, spec_doc)

    def ordered() -> list[dict]:
        return [rows[t.name] for t in trials if t.name in rows]

    def done(trial: Trial, row: dict) -> None:
        rows[trial.name] = {**row, "cached": False}
        runs.write_csv(out / RESULTS_CSV, ordered())  # partial results are visible at once
        shown = row.get("error") or ", ".join(
            f"{m} {row[m]:.4g}" if _is_number(row.get(m)) else f"{m} {row.get(m)}"
            for m in kind.metrics[:2]
        )
        console.print(
            f"[{len(rows)}/{len(trials)}] {trial.name}: {row['status']} ({shown})",
            markup=False,
            highlight=False,
        )

    if todo:
        if serial:
            _run_serial(kind, todo, spec.retries, done)
        else:
            _run_ray(kind, todo, spec, ray_address, num_cpus, done, console)
    all_rows = ordered()
    runs.write_csv(out / RESULTS_CSV, all_rows)
    summary = summarize_results(all_rows, list(spec.grid), kind.metrics)
    runs.write_json(out / SPEC_FILE, {**spec_doc, "summary": summary})
    print_table(
        _table_rows(summary, kind.metrics),
        title=f"sweep {out.name}: {spec.kind}"
        + (" (mean ± std over seeds)" if any(g["trials"] > 1 for g in summary) else ""),
        console=console,
    )
    failed = [r for r in all_rows if r["status"] in ("failed", "error")]
    for r in failed:
        console.print(
            f"[red]{r['trial']}[/]: {r['status']}: {escape(str(r.get('error')))}", highlight=False
        )
    if kind.metrics:
        _plot(spec, all_rows, summary, kind.metrics[0], out)
    try:
        report = build_report(out)
        console.print(f"results: {out / RESULTS_CSV}; report: {report}", markup=False)
    except FileNotFoundError:
        console.print(f"results: {out / RESULTS_CSV}", markup=False)
    return SweepResult(out, all_rows, summary, len(todo), len(trials) - len(todo))
