"""Trials and the registry of trial kinds (train, grid-cell, autotune, lesion, or your own)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import Registry

__all__ = ["KINDS", "Trial", "TrialKind", "get_kind", "kind_names", "register_kind"]


@dataclass
class Trial:
    """One run of the sweep: its grid values, its resolved config, its run directory."""

    name: str
    params: dict
    config: dict
    dir: str


@dataclass(frozen=True)
class TrialKind:
    """How to build, run and read one kind of trial. ``build(spec, params)`` returns the
    trial's validated config; ``run`` resumes what an earlier attempt left in ``trial.dir``;
    ``row`` reads the result from the files (its ``status`` is the trial's real outcome);
    ``metrics`` are summarised over seeds, the first is plotted (by ``plot(spec, rows,
    summary, out)`` when the kind has its own plot)."""

    name: str
    final_file: str
    build: Callable[[Any, dict], dict]
    run: Callable[[Trial], None]
    row: Callable[[Trial], dict]
    metrics: tuple[str, ...] = ()
    plot: Callable[..., None] | None = None
    is_finished: Callable[[Trial], bool] | None = None  # default: final_file exists

    def finished(self, trial: Trial) -> bool:
        if self.is_finished is not None:
            return self.is_finished(trial)
        return (Path(trial.dir) / self.final_file).is_file()


KINDS: Registry[TrialKind] = Registry(
    "sweep kind", unknown="unknown {what} {name!r}; one of {names}."
)


def register_kind(kind: TrialKind, *, replace: bool = False) -> TrialKind:
    """Add a kind of trial (``kind.run``/``row`` must be picklable for Ray). A name that is
    already registered is an error unless ``replace`` (the same kind again too: a second
    ``register_kind`` of one name is always a mistake in a sweep module)."""
    if kind.name in KINDS and not replace:
        raise ValueError(
            f"a sweep kind {kind.name!r} is already registered; pass replace=True to replace it."
        )
    return KINDS.add(kind.name, kind, replace=replace)


def kind_names() -> list[str]:
    """Registered kind names, in registration order (built-ins first: the package imports
    kinds.py, which registers them)."""
    return KINDS.names()


def get_kind(name: str) -> TrialKind:
    """The kind; ValueError listing the registered kinds when ``name`` is unknown."""
    return KINDS.get(name)
