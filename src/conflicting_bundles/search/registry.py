"""Search-method registry in the style of timm: ``@register_search("name")`` on a factory (a
class or function returning an object with ``run(start, work_dir) -> SearchResult``),
``create_search(spec, **kwargs)``, ``list_searches()``.

A spec may name a criterion after ``@``: ``conflict-at-init@rel:0.01`` is
``create_search("conflict-at-init", criterion="rel:0.01")``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .records import SearchResult, SearchStart

__all__ = ["SearchMethod", "create_search", "list_searches", "register_search"]


class SearchMethod(Protocol):
    name: str
    criterion: str | None

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult: ...


_SEARCHES: dict[str, Callable[..., SearchMethod]] = {}


def register_search(name: str):
    """Register a factory under ``name``; registering a name twice is an error."""

    def add(factory: Callable[..., SearchMethod]) -> Callable[..., SearchMethod]:
        if name in _SEARCHES and _SEARCHES[name] is not factory:
            raise ValueError(f"search method {name!r} is already registered.")
        _SEARCHES[name] = factory
        return factory

    return add


def list_searches() -> list[str]:
    """Registered method names, in registration order."""
    return list(_SEARCHES)


def create_search(spec: str, **kwargs) -> SearchMethod:
    """Build a method from ``name`` or ``name@criterion``; kwargs go to its factory."""
    name, _, crit = spec.strip().partition("@")
    if name not in _SEARCHES:
        raise ValueError(
            f"unknown search method {name!r}; choose from {', '.join(list_searches())} "
            "(optionally name@criterion, e.g. conflict-at-init@rel:0.01)."
        )
    if crit:
        kwargs["criterion"] = crit
    try:
        method = _SEARCHES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"search method {name!r}: {e}") from e
    method.name = spec.strip()
    return method
