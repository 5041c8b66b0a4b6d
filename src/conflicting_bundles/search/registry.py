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

from ..registry import Registry
from .records import SearchResult, SearchStart

__all__ = ["SEARCHES", "SearchMethod", "create_search", "list_searches", "register_search"]


class SearchMethod(Protocol):
    name: str
    criterion: str | None

    def run(self, start: SearchStart, work_dir: Path) -> SearchResult: ...


SearchFactory = Callable[..., SearchMethod]  # a class or function: (**kwargs) -> SearchMethod

SEARCHES: Registry[SearchFactory] = Registry(
    "search method",
    unknown="unknown {what} {name!r}; choose from {names} "
    "(optionally name@criterion, e.g. conflict-at-init@rel:0.01).",
)


def register_search(name: str) -> Callable[[SearchFactory], SearchFactory]:
    """Register a factory under ``name``; registering a name twice is an error."""
    return SEARCHES.register(name)


def list_searches() -> list[str]:
    """Registered method names, in registration order."""
    return SEARCHES.names()


def create_search(spec: str, **kwargs) -> SearchMethod:
    """Build a method from ``name`` or ``name@criterion``; kwargs go to its factory."""
    name, _, crit = spec.strip().partition("@")
    factory = SEARCHES.get(name)
    if crit:
        kwargs["criterion"] = crit
    try:
        method = factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"search method {name!r}: {e}") from e
    method.name = spec.strip()
    return method
