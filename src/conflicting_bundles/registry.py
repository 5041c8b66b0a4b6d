"""One registry helper for every pluggable family: models, scorers, sweep kinds, data sources,
search methods.

    SCORERS: Registry[type[Scorer]] = Registry("scorer")

    @SCORERS.register("conflict")            # or @SCORERS.register() to use __name__
    class ConflictScorer(Scorer): ...

    SCORERS.get("conflict")                  # ValueError naming the valid choices if unknown
    SCORERS.names()                          # registration order; sorted(...) for listings

Registering a second, different object under a taken name is an error (two modules silently
shadowing each other is never intended); ``replace=True`` says it is meant. Unknown names raise
``ValueError`` with the registered names, so a CLI can print the message as it is. A family
may word that message itself (``unknown=`` template) and list the names sorted (``sort=True``).
``reg[name]`` is ``get``; ``get(name, default)``, ``reg[name] = x`` (replaces) and
``del reg[name]`` behave as on a dict, so a test can ``monkeypatch.setitem(REG, name, x)``.

This module is the bottom layer: it imports nothing from the package.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry"]

T = TypeVar("T")
D = TypeVar("D")

_MISSING: Any = object()

DEFAULT_UNKNOWN = "unknown {what} {name!r}; registered {plural}: {names}."


def _origin(entry: object) -> str:
    """Where a function or class was defined ("pkg.mod.fn"), else its type's name."""
    qual = getattr(entry, "__qualname__", None)
    if isinstance(qual, str) and getattr(entry, "__module__", None):
        return f"{entry.__module__}.{qual}"  # type: ignore[attr-defined]
    return type(entry).__name__


class Registry(Generic[T]):
    """Named entries of one family. ``what`` names the family in messages ("model").

    unknown: the message for an unknown name, a ``str.format`` template with the fields
    ``what``, ``plural``, ``name`` and ``names`` (comma-separated); default
    ``"unknown {what} {name!r}; registered {plural}: {names}."``.
    sort: list the names sorted in that message (else in registration order).
    """

    def __init__(
        self,
        what: str,
        plural: str | None = None,
        *,
        unknown: str = DEFAULT_UNKNOWN,
        sort: bool = False,
    ) -> None:
        self.what = what
        self.plural = plural or f"{what}s"
        self.unknown = unknown
        self.sort = sort
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Register ``entry`` under ``name``; returns it. Adding the same object again is a
        no-op; a different one under a taken name is a ValueError unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}.")
        old = self._entries.get(name)
        if old is not None and old is not entry and not replace:
            raise ValueError(
                f"{self.what} {name!r} is already registered (by {_origin(old)}); "
                "pass replace=True to replace it."
            )
        self._entries[name] = entry
        return entry

    def register(self, name: str | None = None, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``; without a name the object's ``__name__``."""

        def deco(entry: T) -> T:
            key = name or getattr(entry, "__name__", None)
            if key is None:
                raise TypeError(f"{entry!r} has no __name__; use register(name) for a {self.what}.")
            return self.add(key, entry, replace=replace)

        return deco

    def unknown_error(self, name: object) -> ValueError:
        """The ValueError for an unknown ``name``, listing the registered names (to raise
        from a lookup that tries other places first)."""
        names = sorted(self._entries) if self.sort else self.names()
        msg = self.unknown.format(
            what=self.what, plural=self.plural, name=name, names=", ".join(names) or "(none)"
        )
        close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
        if close:  # "unknown dataset 'mnsit' (did you mean 'mnist'?); known: ..."
            msg = msg.replace(repr(name), f"{name!r} (did you mean {close[0]!r}?)", 1)
        return ValueError(msg)

    @overload
    def get(self, name: str) -> T: ...
    @overload
    def get(self, name: str, default: D) -> T | D: ...

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The entry; ValueError listing the registered names when ``name`` is unknown (or
        ``default`` when one is given, as ``dict.get``)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            if default is not _MISSING:
                return default
            raise self.unknown_error(name) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, entry: T) -> None:
        """``reg[name] = entry`` replaces (what ``monkeypatch.setitem`` in a test needs)."""
        self.add(name, entry, replace=True)

    def __delitem__(self, name: str) -> None:
        """Remove an entry (KeyError if absent), e.g. to undo a test's registration."""
        del self._entries[name]

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
