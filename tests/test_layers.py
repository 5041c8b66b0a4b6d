"""The layer contract (issue 22, item 5): ARCHITECTURE.md's ```layers block lists the package's
rooms (top-level modules and sub-packages) from the top floor down; a room imports only rooms on
its floor or below, imports inside functions included (not those under TYPE_CHECKING). File-level
import circles are only the ones in KNOWN_CIRCLES (each one open work, named in the issue
notes): a new circle fails, and so does a fixed one still listed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "conflicting_bundles"
KNOWN_CIRCLES: set[frozenset[str]] = set()  # none left (issue 22); a new one fails


def floors() -> dict[str, int]:
    """room -> floor number, read from ARCHITECTURE.md's ```layers block."""
    block = re.search(r"^```layers\n(.*?)^```", (REPO / "ARCHITECTURE.md").read_text(), re.S | re.M)
    assert block, "ARCHITECTURE.md has no ```layers block"
    out = {}
    for line in block.group(1).splitlines():
        if line.strip():
            n, *rooms = line.split()
            out.update({r: int(n) for r in rooms})
    return out


def module_name(p: Path) -> str:
    parts = list(p.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None)
            if isinstance(child, ast.If) and getattr(test, "id", None) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def imports() -> dict[str, set[str]]:
    """module (relative to the package, "" for its root) -> package modules it imports."""
    mods = {module_name(p): p for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        found = out.setdefault(m, set())
        for node in runtime_nodes(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".") if pkg else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
                for a in node.names:  # "from . import runs" names a module
                    sub = f"{target}.{a.name}" if target else a.name
                    found.add(sub if sub in mods else target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                name = node.module if isinstance(node, ast.ImportFrom) else None
                for n in [name] if name else [a.name for a in node.names]:
                    if n and n.startswith("conflicting_bundles."):
                        found.add(n.removeprefix("conflicting_bundles."))
        found.discard(m)
    return {m: {t for t in ts if t in mods} for m, ts in out.items()}


def room(m: str) -> str:
    return m.split(".")[0]


def test_every_room_is_on_a_floor_and_imports_only_downwards():
    fl = floors()
    graph = imports()
    rooms = {room(m) for m in graph if m}
    assert rooms - set(fl) == set(), "rooms missing from ARCHITECTURE.md's layers block"
    assert set(fl) - rooms == set(), "ARCHITECTURE.md lists rooms that do not exist"
    up = sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        if m  # the package root re-exports from everywhere, lazily
        for t in ts
        if t and fl[room(t)] > fl[room(m)]
    )
    assert up == [], "imports that run up a floor:\n" + "\n".join(up)


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.add(frozenset(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_import_circles_are_only_the_known_ones():
    graph = {m: {t for t in ts if t} for m, ts in imports().items() if m}
    found = circles(graph)
    assert found - KNOWN_CIRCLES == set(), f"new import circles: {found - KNOWN_CIRCLES}"
    assert KNOWN_CIRCLES - found == set(), f"fixed circles still listed: {KNOWN_CIRCLES - found}"
