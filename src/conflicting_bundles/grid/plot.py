"""The grid's map: a heat map of test accuracy with the conflict boundary, and the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..report import pct


def _matrix(rows: list[dict], key: str, widths: list[int], depths: list[int]) -> np.ndarray:
    m = np.full((len(depths), len(widths)), np.nan)
    for r in rows:
        v = r.get(key)
        if v is not None and r["width"] in widths and r["depth"] in depths:
            m[depths.index(r["depth"]), widths.index(r["width"])] = float(v)
    return m


def boundary_segments(flags: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Edges between neighbouring cells whose flag differs (cell (i, j) spans j-0.5..j+0.5,
    i-0.5..i+0.5); unknown (nan) cells draw no edge."""
    segs = []
    n_i, n_j = flags.shape
    for i in range(n_i):
        for j in range(n_j):
            a = flags[i, j]
            if j + 1 < n_j and not np.isnan(a) and not np.isnan(flags[i, j + 1]):
                if a != flags[i, j + 1]:
                    segs.append(((j + 0.5, i - 0.5), (j + 0.5, i + 0.5)))
            if i + 1 < n_i and not np.isnan(a) and not np.isnan(flags[i + 1, j]):
                if a != flags[i + 1, j]:
                    segs.append(((j - 0.5, i + 0.5), (j + 0.5, i + 0.5)))
    return segs


def plot_grid(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Heat map of test accuracy (%) over width (x) and depth (y, deeper upwards); cells whose
    last hidden layer is conflicting at the end are hatched, the boundary between conflicting
    and non-conflicting cells is drawn in red (solid: end of training; dashed: at init)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    widths = sorted({r["width"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    acc = 100 * _matrix(rows, "test_acc", widths, depths)  # shown in %
    conf = _matrix(rows, "conflicting", widths, depths)
    conf0 = _matrix(rows, "conflicting_init", widths, depths)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(widths) + 2.5), 0.6 * len(depths) + 2.4))
    im = ax.imshow(acc, origin="lower", cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(len(depths)):
        for j in range(len(widths)):
            if not np.isnan(acc[i, j]):
                ax.text(
                    j,
                    i,
                    f"{acc[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if acc[i, j] < 60 else "k",
                )
            if conf[i, j] == 1:
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="r", lw=0)
                )
    ax.add_collection(LineCollection(boundary_segments(conf), colors="r", linewidths=2.5))
    ax.add_collection(
        LineCollection(boundary_segments(conf0), colors="orange", linewidths=1.5, linestyles="--")
    )
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("width (units per hidden layer)")
    ax.set_ylabel("depth (hidden layers)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    ax.legend(
        handles=[
            Patch(fill=False, hatch="//", edgecolor="r", label="conflicting (end)"),
            Line2D([], [], color="r", lw=2.5, label="boundary (end of training)"),
            Line2D([], [], color="orange", lw=1.5, ls="--", label="boundary (at init)"),
        ],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=3,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def print_grid(rows: list[dict], summary: dict, console=None) -> None:
    """The map as a rich table: depth rows x width columns, test accuracy (%), '*' marking a
    conflicting last hidden layer."""
    from rich.table import Table

    from ..console import make_console

    console = console or make_console()
    widths = sorted({r["width"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    by = {(r["width"], r["depth"]): r for r in rows}
    t = Table(title="test accuracy (%) by depth x width; * = conflicting last hidden layer")
    t.add_column("depth \\ width")
    for w in widths:
        t.add_column(str(w), justify="right")
    for d in reversed(depths):
        cells = []
        for w in widths:
            r = by.get((w, d), {})
            a = r.get("test_acc")
            star = "*" if r.get("conflicting") else ""
            cells.append("-" if a is None else f"{100 * a:.1f}{star}")
        t.add_row(str(d), *cells)
    console.print(t)
    console.print(
        f"{summary['num_conflicting']} of {summary['num_finished']} nets conflicting; mean test "
        f"accuracy {pct(summary['mean_test_acc_conflicting'])} (conflicting) vs "
        f"{pct(summary['mean_test_acc_not_conflicting'])} (not); best {_best(summary['best'])}",
        highlight=False,
    )
    for cell, err in summary["errors"].items():
        console.print(f"[red]{cell}[/red]: {err}", highlight=False)


def _best(b: dict | None) -> str:
    """The best cell as "w10-d2 (88.6%)"."""
    if not b:
        return "-"
    return f"w{b['width']}-d{b['depth']} ({pct(b.get('test_acc'))})"
