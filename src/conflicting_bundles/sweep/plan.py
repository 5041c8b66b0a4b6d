"""The trials of a sweep: the cartesian product of the grid, each grid value placed in the
trial's config (see the package docstring), validated before anything runs."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path

from ..configfile import check_types
from .registry import Trial, get_kind
from .spec import SweepSpec

TRIALS_DIR = "trials"


def set_path(cfg: dict, path: str, value) -> None:
    """cfg["a"]["b"]["c"] = value for path "a.b.c" (creating missing mappings)."""
    *parents, last = path.split(".")
    d = cfg
    for i, k in enumerate(parents):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"grid key {path!r}: {'.'.join(parents[: i + 1])} is not a mapping.")
    d[last] = value


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def check_model_kwargs(tcfg: dict, where: str) -> dict:
    """Model arguments must be ones the model factory takes, of its types (a typo would only
    fail later, in the trial); returns them converted (models.check_model_kwargs)."""
    import inspect

    from ..models import check_model_kwargs as check_kwargs
    from ..models import model_signature

    kw = tcfg.get("model_kwargs") or {}
    params = model_signature(tcfg.get("model", "fnn")).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(
            f"{where}: {', '.join(unknown)} is neither a config field nor an argument of model "
            f"{tcfg.get('model', 'fnn')!r} (its arguments: {', '.join(params)})."
        )
    try:
        return check_kwargs(tcfg.get("model", "fnn"), kw)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def train_config(spec: SweepSpec, tcfg: dict, where: str) -> dict:
    """Defaults for a trial's training run, then validation (TrainConfig + model arguments)."""
    from ..data import dataset_info
    from ..train import TrainConfig

    tcfg = dict(tcfg)
    tcfg.setdefault("progress", False)  # trials run side by side: no progress bars
    tcfg.setdefault("threads", max(1, int(spec.resources.cpus)))
    if tcfg.get("data_dir") is not None:
        tcfg["data_dir"] = str(Path(tcfg["data_dir"]).expanduser().resolve())
    tcfg = check_types(tcfg, {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}, where)
    try:
        TrainConfig.from_dict(tcfg).validate()
        dataset_info(tcfg.get("dataset", "mnist"))  # an unknown name fails here, not in a trial
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if tcfg.get("model_kwargs"):
        tcfg["model_kwargs"] = check_model_kwargs(tcfg, where)
    return tcfg


def apply_params(params: dict, cfg: dict, own: set[str], train_key: str | None) -> None:
    """Put each grid value where it belongs (see the module docstring)."""
    from ..train import TrainConfig

    train_fields = field_names(TrainConfig)
    for key, v in params.items():
        if "." in key:
            set_path(cfg, key, v)
        elif key in own:
            cfg[key] = v
        else:
            tcfg = cfg.setdefault(train_key, {}) if train_key else cfg
            if key in train_fields:
                tcfg[key] = v
            else:
                tcfg.setdefault("model_kwargs", {})[key] = v


def trial_name(params: dict) -> str:
    if not params:
        return "run"

    def clean(x) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(x)).strip("_") or "_"

    return "_".join(f"{clean(k)}-{clean(v)}" for k, v in params.items())


def plan(spec: SweepSpec) -> list[Trial]:
    """The trials of a sweep, in grid order (the last key varies fastest), each with its
    validated config and run directory. Raises ValueError for anything a trial would refuse."""
    kind = get_kind(spec.kind)
    out = Path(spec.out).expanduser().resolve()
    keys = list(spec.grid)
    combos = []
    for vals in itertools.product(*spec.grid.values()):  # a repeated grid value runs once
        params = dict(zip(keys, vals, strict=True))
        if params not in combos:
            combos.append(params)
    names = [trial_name(p) for p in combos]
    trials = []
    for params, name in zip(combos, names, strict=True):
        if names.count(name) > 1 or len(name) > 120:  # distinct values that clean alike
            digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
            name = f"{name[:100]}-{digest}"
        config = kind.build(spec, params)
        trials.append(Trial(name, params, config, str(out / TRIALS_DIR / name)))
    return trials
