"""Scatter plots of search results (one colour per label, Pareto front optional)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..runs import atomic_write_bytes


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (x = cost, y = accuracy) not dominated by another (lower or equal x with higher
    y), sorted by x."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def scatter(
    points: Sequence[tuple[str, float, float]],
    path: Path,
    xlabel: str,
    ylabel: str,
    *,
    logx: bool = False,
    front: bool = True,
    title: str = "",
) -> Path:
    """points: (label, x, y); a marker per point, one legend entry per label, and the Pareto
    front (low x, high y) as a dashed line. Written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    labels = list(dict.fromkeys(p[0] for p in points))
    markers = "osD^v<>px*h"
    for i, label in enumerate(labels):
        xs = [p[1] for p in points if p[0] == label]
        ys = [p[2] for p in points if p[0] == label]
        ax.scatter(xs, ys, label=label, marker=markers[i % len(markers)], s=28, alpha=0.8)
    if front and points:
        f = pareto_front([(p[1], p[2]) for p in points])
        ax.plot([p[0] for p in f], [p[1] for p in f], "--", color="grey", lw=1, label="Pareto")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
