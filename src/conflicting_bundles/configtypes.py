"""Check and convert config-file values against their field annotations.

A YAML/JSON file holds only plain values, so every field is checked against the type its
dataclass (or model factory) declares before anything runs: ``width: eight`` or
``dataset: [mnist]`` fail at load time with the field's name, not deep inside a run::

    coerce_value("lr", "float", "1e-3")            # 0.001 (PyYAML reads 1e-3 as a string)
    coerce_value("width_mult", "float", "1/16")    # 0.0625 (fractions, as on the command line)
    coerce_value("blocks", "list[int] | None", [1, 1, 1, 1])   # [1, 1, 1, 1]
    coerce_value("blocks", "list[int] | None", "1,1,1,1")      # ValueError: must be a list ...

Annotations are the strings ``from __future__ import annotations`` leaves: unions of int,
float, bool, str, None, dict, Path, list[X], tuple[X, ...] and tuple[X, Y]; any other name
is accepted as it is (a type the file cannot spell is the caller's to check).
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["coerce_value", "parse_annotation"]

_EXAMPLES = {"int": "8", "float": "0.5", "str": "a", "bool": "true"}


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside brackets: "int | tuple[int, int]" -> 2 parts."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def parse_annotation(annotation: str) -> list[tuple[str, list[str]]]:
    """ "list[int] | None" -> [("list", ["int"]), ("None", [])]; typing spellings
    (Optional[X], List[X], Tuple[...]) are read as their builtin forms."""
    alts = []
    for part in _split_top(str(annotation).replace("typing.", ""), "|"):
        name, _, rest = part.partition("[")
        args = _split_top(rest[:-1], ",") if rest.endswith("]") else []
        name = {"List": "list", "Tuple": "tuple", "Dict": "dict", "NoneType": "None"}.get(
            name, name
        )
        if name == "Optional":
            alts += parse_annotation(" | ".join([*args, "None"]))
        elif name == "Union":
            alts += parse_annotation(" | ".join(args))
        else:
            alts.append((name, args))
    return alts


class _Mismatch(Exception):
    pass


def _number(v, want_int: bool):
    if isinstance(v, bool):
        raise _Mismatch
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if want_int and not v.is_integer():
            raise _Mismatch
        return int(v) if want_int else v
    if isinstance(v, str) and not want_int:  # YAML 1.1 reads 1e-3 as a string; "1/16" too
        try:
            return float(Fraction(v.strip()))
        except (ValueError, ZeroDivisionError):
            raise _Mismatch from None
    raise _Mismatch


def _one(name: str, args: list[str], v, field: str):
    if name == "None":
        if v is None:
            return None
        raise _Mismatch
    if name in ("int", "float"):
        return _number(v, name == "int")
    if name == "bool":
        if isinstance(v, bool):
            return v
        raise _Mismatch
    if name in ("str", "Path"):
        if isinstance(v, str):
            return v
        raise _Mismatch
    if name == "dict":
        if isinstance(v, dict):
            return v
        raise _Mismatch
    if name in ("list", "tuple"):
        if not isinstance(v, (list, tuple)):
            raise _Mismatch
        if name == "tuple" and args and args[-1] != "..." and len(args) != len(v):
            raise _Mismatch
        items = args[:1] if name == "list" or args[-1:] == ["..."] else args
        if not items:
            return list(v)
        return [
            coerce_value(f"{field}[{i}]", items[min(i, len(items) - 1)], x) for i, x in enumerate(v)
        ]
    return v  # a type a file cannot spell: left to the caller


def _describe(alts: list[tuple[str, list[str]]]) -> str:
    words = []
    for name, args in alts:
        if name == "None":
            continue
        if name in ("list", "tuple"):
            kind = {"int": " integers", "float": " numbers", "str": " names"}
            if name == "tuple" and args and args[-1] != "...":
                ex = ", ".join(_EXAMPLES.get(a, "...") for a in args)
                words.append(f"a list of {len(args)}{kind.get(args[0], '')} such as [{ex}]")
            else:
                ex = _EXAMPLES.get(args[0] if args else "", "...")
                ex2 = "b" if ex == "a" else ex
                words.append(
                    f"a list of{kind.get(args[0] if args else '', ' values')} such as [{ex}, {ex2}]"
                )
        else:
            words.append(
                {
                    "int": "an integer",
                    "float": "a number",
                    "bool": "true or false",
                    "str": "a string",
                    "Path": "a path (string)",
                    "dict": "a mapping (key: value)",
                }.get(name, name)
            )
    text = " or ".join(dict.fromkeys(words))
    if any(name == "None" for name, _ in alts):
        text += " or null"
    return text


def coerce_value(field: str, annotation: str, v):
    """``v`` checked against ``annotation`` and converted where a file cannot say better
    (numbers written as strings or fractions for float fields; tuples as lists). ValueError
    "FIELD must be ..., got ..." otherwise."""
    alts = parse_annotation(annotation)
    for name, args in alts:
        try:
            return _one(name, args, v, field)
        except _Mismatch:
            continue
    got = f"the string {v!r}" if isinstance(v, str) else repr(v)
    if isinstance(v, str) and any(n in ("list", "tuple") for n, _ in alts):
        got += " (a list is written [a, b] in YAML)"
    raise ValueError(f"{field} must be {_describe(alts)}, got {got}.")
