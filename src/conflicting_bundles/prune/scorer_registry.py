"""The registry of block scorers: ``@register_scorer(name)`` on a Scorer class, ``get_scorer``
(unknown options are a TypeError), ``scorer_options`` (a scorer's own options out of a dict
meant for several), ``list_scorers``. The scorer classes are in scorers.py and baselines.py."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..registry import Registry

__all__ = ["SCORER_REGISTRY", "get_scorer", "list_scorers", "register_scorer", "scorer_options"]

SCORER_REGISTRY: Registry[type] = Registry(
    "scorer", unknown="unknown scorer {name!r}; available: {names}."
)


def register_scorer(name: str) -> Callable[[type], type]:
    """Class decorator: make a Scorer subclass available as ``get_scorer(name)``."""

    def add(cls: type) -> type:
        cls.name = name
        return SCORER_REGISTRY.add(name, cls)

    return add


def list_scorers() -> list[str]:
    """Registered scorer names, in registration order."""
    return SCORER_REGISTRY.names()


def _options(cls: type) -> list[str] | None:
    """The constructor's option names (None: it takes any, **kwargs)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self"]


def get_scorer(name: str, **kwargs) -> Any:  # a scorers.Scorer (that module imports this one)
    """A scorer instance by name; keyword arguments go to its constructor, and one it does not
    take is a TypeError naming the ones it does (scorer_options picks a scorer's own options
    out of a dict meant for several)."""
    cls = SCORER_REGISTRY.get(name)  # ValueError listing the registered scorers
    known = _options(cls)
    unknown = [] if known is None else sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(
            f"scorer {name!r} takes no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(known or []) or 'none'}."
        )
    return cls(**kwargs)


def scorer_options(name: str, options: dict) -> dict:
    """The options of ``options`` that scorer ``name`` takes: one dict configures several
    scorers (compare, the CLI), each getting only what it declares."""
    known = _options(SCORER_REGISTRY.get(name))
    return dict(options) if known is None else {k: v for k, v in options.items() if k in known}
