"""The sweep spec: what a sweep YAML holds, read with clear errors for what is wrong in it."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from .registry import kind_names

SPEC_KEYS = ("kind", "base", "grid", "resources", "retries", "out")


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
            raise ValueError(f"{source}: `kind` is missing; one of {', '.join(kind_names())}.")
        if d["kind"] not in kind_names():
            raise ValueError(
                f"{source}: unknown kind {d['kind']!r}; one of {', '.join(kind_names())}."
            )
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
