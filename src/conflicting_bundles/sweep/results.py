"""A sweep's results: rows per trial, the summary over seeds, the terminal table, the plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FAILED = ("failed", "error", "diverged")  # statuses that make `cbundles sweep` exit 1


@dataclass
class SweepResult:
    out: Path
    rows: list[dict]  # one per trial, in grid order
    summary: list[dict]  # one per group of trials that differ only in their seed
    ran: int  # trials run now
    cached: int  # trials finished before, not rerun

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] in FAILED]


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summarize_results(rows: list[dict], grid_keys: list[str], metrics: tuple[str, ...]) -> list:
    """Group the trials that differ only in a seed key (``seed``, ``*.seed``); per group the
    trial count, how many completed, and each metric's mean and std (numbers) or its distinct
    values (anything else)."""
    seed = [k for k in grid_keys if k == "seed" or k.endswith(".seed")]
    by = [k for k in grid_keys if k not in seed]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps([r.get(k) for k in by], default=str), []).append(r)
    out = []
    for members in groups.values():
        g = {k: members[0].get(k) for k in by}
        g["trials"] = len(members)
        g["completed"] = sum(r["status"] == "completed" for r in members)
        for m in metrics:
            vals = [r.get(m) for r in members if r.get(m) is not None]
            if vals and all(is_number(v) for v in vals):
                g[m] = float(np.mean(vals))
                g[f"{m}_std"] = float(np.std(vals))
            elif vals:
                g[m] = " | ".join(dict.fromkeys(str(v) for v in vals))
            else:
                g[m] = None
        out.append(g)
    return out


def table_rows(summary: list[dict], metrics: tuple[str, ...]) -> list[dict]:
    """Cells for the terminal: "mean +- std" where a group has more than one value."""
    from ..report import fmt

    rows = []
    for g in summary:
        r = {k: v for k, v in g.items() if not k.endswith("_std")}
        for m in metrics:
            std = g.get(f"{m}_std")
            if std is not None and g["trials"] > 1:
                r[m] = f"{fmt(g[m])} ± {fmt(std)}"
        rows.append(r)
    return rows


def plot(spec, rows: list[dict], summary: list[dict], metric: str, out: Path) -> None:
    """sweep.png: one bar per group (mean +- std over seeds) of ``metric``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = [g for g in summary if is_number(g.get(metric))]
    if not vals:
        return
    by = [k for k in spec.grid if k != "seed" and not k.endswith(".seed")]
    labels = [", ".join(f"{k}={g[k]}" for k in by) or "all" for g in vals]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.35 * len(vals)))
    ax.barh(
        range(len(vals)),
        [g[metric] for g in vals],
        xerr=[g.get(f"{metric}_std") or 0.0 for g in vals],
        color="C0",
    )
    ax.set_yticks(range(len(vals)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(metric + (" (mean ± std over seeds)" if len(by) < len(spec.grid) else ""))
    ax.set_title(f"sweep {out.name}: {spec.kind}")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
