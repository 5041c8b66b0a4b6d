"""The removal rule of the auto-tune (docs/method.md §5): which blocks a conflict removes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VARIANTS = ("all", "first-and-rest", "first-stage")
RESTARTS = ("fresh", "warm")


@dataclass
class Decision:
    """Which blocks a conflict removes, and why."""

    remove: list[int]
    guard: str = ""  # non-empty when an edge-case rule changed the plain variant's choice


def decide_removal(
    entropies: Sequence[float], info: Sequence[dict], variant: str = "all"
) -> Decision:
    """Blocks to remove given every block's bundle entropy (forward order) and block_info().

    - ``all``: every conflicting block (the 2021 paper's code).
    - ``first-and-rest``: the first conflicting block and all later blocks of its stage
      (the 2020 paper's wording).
    - ``first-stage``: the conflicting blocks of the first stage that has any.

    Guards: if nothing is conflicting although the cheap check fired, the last block is removed
    (``guard="last-block"``); a removal that would leave no block keeps the first block
    (``guard="keep-one"``): a net without blocks is no longer in the search space.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if len(entropies) != len(info):
        raise ValueError(f"{len(entropies)} entropies for {len(info)} blocks.")
    n = len(info)
    if n == 0:
        return Decision([], guard="no-blocks")
    conflicting = [i for i, e in enumerate(entropies) if e > 0]
    guard = ""
    if not conflicting:
        remove, guard = [n - 1], "last-block"
    elif variant == "all":
        remove = conflicting
    elif variant == "first-and-rest":
        f = conflicting[0]
        stage = info[f]["stage"]
        remove = [i for i in range(f, n) if info[i]["stage"] == stage]
    else:
        stage = info[conflicting[0]]["stage"]
        remove = [i for i in conflicting if info[i]["stage"] == stage]
    if len(remove) >= n:
        remove = [i for i in remove if i != 0]
        guard = (guard + "+" if guard else "") + "keep-one"
    return Decision(sorted(remove), guard)
