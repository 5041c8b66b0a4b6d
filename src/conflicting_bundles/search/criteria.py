"""The depth-search benchmark's verdicts, computed from its rows (issue 21, docs/search.md):
the gate of each start, the pre-registered criteria C1-C4, the recommended method, and the
markdown tables the docs show (generated from the JSON, never typed by hand).

A row is one method on one (start, seed): ``method``, ``start``, ``seed``, ``split``
("tuning" / "held-out"), ``kind`` ("depth-matters" / "no-harm"), ``test_acc``, ``val_acc``,
``wall_s``, ``cpu_s``, ``epochs``, ``size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CANDIDATE = "cb-sh"  # the method under test
ABLATION = "sh-ladder"  # the same without the bundle filter, same knobs
GATE_POINTS = 2.0  # oracle must beat fixed by this many points on the start's gate seed

__all__ = [
    "ABLATION",
    "CANDIDATE",
    "criteria",
    "gate",
    "heldout_table",
    "markdown",
    "paired",
    "recommend",
]


def _by(rows: Sequence[dict], **want) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in want.items())]


def _one(rows: Sequence[dict], method: str, start: str, seed: int) -> dict | None:
    got = _by(rows, method=method, start=start, seed=seed)
    return got[0] if got else None


def gate(rows: Sequence[dict], start: str, seed: int, ladder: list) -> dict:
    """Does depth matter on ``start`` (its gate seed)? oracle-depth beats fixed by
    >= GATE_POINTS with the oracle's depth strictly inside the ladder."""
    o, f = _one(rows, "oracle-depth", start, seed), _one(rows, "fixed", start, seed)
    if o is None or f is None:
        return {"start": start, "seed": seed, "passed": None, "why": "oracle/fixed not run"}
    margin = 100 * (o["test_acc"] - f["test_acc"])
    inside = str(o["size"]) not in (str(ladder[0]), str(ladder[-1]))
    return {
        "start": start,
        "seed": seed,
        "oracle_size": o["size"],
        "oracle_test_acc": o["test_acc"],
        "fixed_test_acc": f["test_acc"],
        "margin_points": margin,
        "interior": inside,
        "passed": bool(margin >= GATE_POINTS and inside),
    }


def paired(rows: Sequence[dict], a: str, b: str, pairs: Sequence[tuple]) -> dict:
    """Paired differences a - b (points of test accuracy) and wall ratios a / b over the
    (start, seed) pairs where both ran: n, mean, min, t statistic, mean wall ratio."""
    d, ratio = [], []
    for st, seed in pairs:
        x, y = _one(rows, a, st, seed), _one(rows, b, st, seed)
        if x is None or y is None:
            continue
        d.append(100 * (x["test_acc"] - y["test_acc"]))
        ratio.append(x["wall_s"] / max(y["wall_s"], 1e-9))
    n = len(d)
    mean = sum(d) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1)) if n > 1 else math.nan
    t = mean / (sd / math.sqrt(n)) if n > 1 and sd > 0 else (math.inf if n > 1 and mean else 0.0)
    return {
        "n": n,
        "mean_points": mean,
        "min_points": min(d) if d else math.nan,
        "t": t,
        "wall_ratio": sum(ratio) / n if n else math.nan,
    }


def _pairs(rows: Sequence[dict], kind: str | None = None) -> list[tuple]:
    keep = [r for r in rows if r["split"] == "held-out" and (kind is None or r["kind"] == kind)]
    return sorted({(r["start"], r["seed"]) for r in keep})


def _c(value, target: str, met: bool) -> dict:
    return {"value": value, "target": target, "met": bool(met)}


def criteria(rows: Sequence[dict], method: str = CANDIDATE) -> dict:
    """C1-C4 of ``method`` on the held-out rows (docs/search.md, "Success criteria")."""
    deep, noharm, every = _pairs(rows, "depth-matters"), _pairs(rows, "no-harm"), _pairs(rows)
    c1a = paired(rows, method, "fixed", deep)
    c1b = paired(rows, method, "fixed", noharm)
    c1 = c1a["mean_points"] >= 1.0 and c1b["mean_points"] >= -0.3 and c1b["min_points"] >= -1.0
    c2 = paired(rows, method, ABLATION, every)
    c2_met = c2["n"] >= 6 and (
        (c2["mean_points"] >= 0.5 and c2["t"] >= 2.0)
        or (abs(c2["mean_points"]) <= 0.3 and c2["wall_ratio"] <= 0.6)
    )
    c3 = paired(rows, method, "oracle-depth", every)
    c3_met = c3["mean_points"] >= -1.0 and c3["wall_ratio"] <= 0.25
    abl = paired(rows, ABLATION, "fixed", deep)
    cut = (c1a["mean_points"] - abl["mean_points"]) / c1a["mean_points"] if c1a["n"] else 0.0
    slower = 1 / c2["wall_ratio"] if c2["wall_ratio"] else math.nan
    c4_met = cut >= 0.5 or (abs(c2["mean_points"]) <= 0.3 and slower >= 1.3)
    return {
        "method": method,
        "C1": _c(
            {"depth_matters": c1a, "no_harm": c1b},
            "mean >= +1.0 pt over fixed on depth-matters rows; no-harm rows mean >= -0.3 pt, "
            "no row below -1.0 pt",
            c1,
        ),
        "C2": _c(
            c2,
            f"vs {ABLATION}: mean >= +0.5 pt with paired t >= 2 over >= 6 held-out rows, or "
            "abs(mean) <= 0.3 pt at <= 0.6x its wall time (multi-exit: not run)",
            c2_met,
        ),
        "C3": _c(c3, "within 1.0 pt of oracle-depth (mean) at <= 0.25x its wall time", c3_met),
        "C4": _c(
            {"margin_cut": cut, "ablation_slower": slower, "ablation_vs_fixed": abl},
            f"removing the bundle filter ({ABLATION}) cuts the C1 margin by >= 50%, or makes "
            "it >= 1.3x slower at equal accuracy (abs(delta) <= 0.3 pt)",
            c4_met,
        ),
    }


def recommend(crit: dict, ablation_c1: bool) -> str:
    """The pre-registered rule: cb-sh if it meets C1 and C4; else sh-ladder if it meets C1;
    else fixed."""
    if crit["C1"]["met"] and crit["C4"]["met"]:
        return crit["method"]
    return ABLATION if ablation_c1 else "fixed"


def heldout_table(rows: Sequence[dict], methods: Sequence[str]) -> list[dict]:
    """One line per held-out (start, seed) and method: test %, wall s, CPU s, gap to oracle."""
    out = []
    for st, seed in _pairs(rows):
        o = _one(rows, "oracle-depth", st, seed)
        for m in methods:
            r = _one(rows, m, st, seed)
            if r is None:
                continue
            gap = None if o is None else 100 * (o["test_acc"] - r["test_acc"])
            out.append(
                {
                    "start": st,
                    "seed": seed,
                    "method": m,
                    "size": r["size"] if m != "random" else "E[ladder]",
                    "test %": 100 * r["test_acc"],
                    "wall s": r["wall_s"],
                    "cpu s": r.get("cpu_s"),
                    "epochs": r["epochs"],
                    "gap to oracle (pt)": gap,
                }
            )
    return out


def markdown(rows: Sequence[dict], cols: Sequence[str]) -> str:
    """A markdown table; floats with 1 decimal (accuracies in %, points, seconds)."""

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.1f}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(cell(r.get(c)) for c in cols) + " |\n" for r in rows)
