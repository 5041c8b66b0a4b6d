"""Human-readable outputs from a run directory's files: terminal tables, PNG plots, report.html.

Reads only files (CSV/JSON/PNG) so that a report can be regenerated without re-running anything:
``cbundles report RUN_DIR``. PNGs are embedded in the HTML, so report.html is one portable file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .runs import atomic_write_text, read_csv

__all__ = ["print_table", "plot_curves", "write_html", "build_report", "fmt"]


def fmt(v) -> str:
    """Compact cell text: floats to 4 significant digits, lists joined."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return "" if v is None else str(v)


def print_table(
    rows: Sequence[dict],
    columns: Sequence[str] | None = None,
    title: str = "",
    console: Console | None = None,
) -> None:
    """A rich table of dict rows in the terminal."""
    console = console or Console()
    if not rows:
        console.print(f"{title}: (no rows)")
        return
    columns = list(columns or rows[0].keys())
    t = Table(title=title or None)
    for c in columns:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(*(fmt(r.get(c)) for c in columns))
    console.print(t)


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
) -> Path:
    """One line per series {label: (x, y)}; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, (x, y) in series.items():
        pts = [(a, b) for a, b in zip(x, y, strict=True) if b is not None and not _isnan(b)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3, label=label)
    if logy:
        ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em}
img{max-width:100%;border:1px solid #eee} .note{color:#555;font-size:13px}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto}
"""


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p class=note>(no rows)</p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_image(path: Path, alt: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def write_html(path: Path, title: str, sections: Iterable[tuple[str, str]]) -> Path:
    """sections: (heading, inner HTML). Written atomically."""
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><h1>{html.escape(title)}</h1>",
    ]
    for heading, inner in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{inner}")
    return atomic_write_text(path, "\n".join(parts))


def build_report(run_dir: str | Path) -> Path:
    """report.html for any run directory this project writes (train, autotune, lesion, grid):
    every JSON summary, CSV table and PNG found, in a fixed order."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory; pass a run directory.")
    sections: list[tuple[str, str]] = []
    for name in (
        "autotune.json",
        "summary.json",
        "lesion_summary.json",
        "grid_summary.json",
        "sweep.json",
    ):
        p = d / name
        if p.exists():
            sections.append(
                (name, f"<pre>{html.escape(json.dumps(json.loads(p.read_text()), indent=2))}</pre>")
            )
    for name in (
        "steps.csv",
        "metrics.csv",
        "lesion_curves.csv",
        "lesion_blocks.csv",
        "grid.csv",
        "measure.csv",
        "compare.csv",
    ):
        p = d / name
        if p.exists():
            rows = read_csv(p)
            sections.append((name, html_table(rows)))
    for p in sorted(d.glob("*.png")):
        sections.append((p.stem.replace("_", " "), html_image(p, p.stem)))
    if not sections:
        raise FileNotFoundError(f"{d} holds no result files (JSON/CSV/PNG) to report.")
    return write_html(d / "report.html", f"conflicting-bundles: {d.name}", sections)
