"""Human-readable outputs from a run directory's files: terminal tables, PNG plots, report.html.

Reads only files (CSV/JSON/PNG) so that a report can be regenerated without re-running anything:
``cbundles report RUN_DIR``. PNGs are embedded in the HTML, so report.html is one portable file.
Every report has the same order: the headline (what was run, the answer), the plots, the tables
(wide ones scroll), the raw JSON last and collapsed. What each kind of run directory shows is
decided in report_kinds.py.
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

from .runs import atomic_write_text

__all__ = [
    "acc_text",
    "duration",
    "fmt",
    "fmt_column",
    "html_figures",
    "html_headline",
    "html_image",
    "html_raw",
    "html_table",
    "pct",
    "plot_curves",
    "plural",
    "points",
    "print_table",
    "short_count",
    "table_decimals",
    "write_html",
]


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


# Columns that hold an accuracy (a fraction) or an accuracy difference (lesion harm / loss):
# tables show them in % and points, the files keep fractions.
_ACC_SUFFIXES = ("_acc", "_acc_mean", "accuracy")
_PTS_COLUMNS = {"single_harm", "loss_mean", "joint_loss", "tolerance"}
_PTS_SUFFIXES = ("_acc_std", "_harm_mean")


def table_decimals(columns: Iterable[str]) -> int | None:
    """Decimals of the % and points of one table: 2 when it shows accuracy differences in
    points (so that accuracies and their differences read alike), else None (the defaults:
    accuracies "65.5%")."""
    return 2 if any(c in _PTS_COLUMNS or c.endswith(_PTS_SUFFIXES) for c in columns) else None


def fmt_column(column: str, v, decimals: int | None = None) -> str:
    """A table cell by its column: accuracies as "65.5%", accuracy differences as "1.25 pts"
    (both stored as fractions), the ``*_acc_std`` of a mean in points, anything else fmt(v).
    decimals: of both % and points (default: 1 for %, 2 for points)."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
    if number and column.endswith(_ACC_SUFFIXES):
        return pct(v, decimals=1 if decimals is None else decimals)
    if number and (column in _PTS_COLUMNS or column.endswith(_PTS_SUFFIXES)):
        return f"{100 * v:.{2 if decimals is None else decimals}f} pts"
    return fmt(v)


def pct(value, percent: bool = False, decimals: int = 1) -> str:
    """An accuracy as "65.5%" (no space; ``decimals`` after the point): ``value`` is a
    fraction unless ``percent`` (a *_pct field)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "n/a"
    return f"{value if percent else 100 * value:.{decimals}f}%"


def acc_text(d: dict, key: str, legacy: str | None = None) -> str:
    """d[key] (a fraction) formatted as "65.5%"; folders written before accuracies were
    fractions everywhere hold percent in d[key + '_pct'] (or d[legacy])."""
    old = d.get(legacy or f"{key}_pct")
    if d.get(key) is None and old is not None:
        return pct(old, percent=True)
    return pct(d.get(key))


def plural(n, word: str) -> str:
    """ "1 epoch", "2 epochs", "0.5 points": ``n`` (a number or its text, "?" when None)
    shown as given, the word in the plural unless ``n`` is 1."""
    n = "?" if n is None else n
    return f"{n} {word}" + ("" if str(n) == "1" else "s")


def points(d: dict, key: str) -> float | None:
    """An accuracy difference in points: 100 * d[key] (a fraction), or a legacy d[key+'_pts']."""
    if d.get(key) is None:
        return d.get(f"{key}_pts")
    return 100 * d[key]


def short_count(n) -> str:
    """84211 -> "84k", 1_200_000 -> "1.2M"."""
    if not isinstance(n, (int, float)):
        return "n/a"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.1f}M"
    if abs(n) >= 1e4:
        return f"{n / 1e3:.0f}k"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(int(n))


def duration(s) -> str:
    """Seconds as "8.2 s", "14 min" or "2.1 h"."""
    if not isinstance(s, (int, float)):
        return "n/a"
    if s < 120:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def print_table(
    rows: Sequence[dict],
    columns: Sequence[str] | None = None,
    title: str = "",
    console: Console | None = None,
) -> None:
    """A rich table of dict rows in the terminal, cells by :func:`fmt_column` (one number of
    decimals per table: :func:`table_decimals`). Cells never end in "…": on a narrow terminal
    they fold onto more lines, and piped output is as wide as the table needs."""
    from .console import make_console

    console = console or make_console()
    if not rows:
        console.print(f"{title}: (no rows)")
        return
    columns = list(columns or rows[0].keys())
    t = Table(title=title or None)
    for c in columns:
        t.add_column(c, justify="right", overflow="fold")
    dec = table_decimals(columns)
    for r in rows:
        t.add_row(*(fmt_column(c, r.get(c), dec) for c in columns))
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
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
td.t{text-align:left} th{background:#f3f3f3;position:sticky;top:0} h1{font-size:1.5em}
h2{font-size:1.2em;margin-top:1.6em}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}
.scroll.tall{max-height:36em;overflow-y:auto}
img{max-width:100%;border:1px solid #eee} .note{color:#555;font-size:13px}
.headline{background:#eef6ee;border-left:5px solid #3a7d44;padding:.6em 1em;margin:1em 0;
font-size:1.08em} .headline p{margin:.35em 0} .headline .what{color:#444;font-size:.92em}
.plots{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.plots figure{margin:0;flex:1 1 520px;max-width:100%} .plots figure.wide{flex:1 1 100%}
.plots img{width:100%} figcaption{font-size:13px;color:#555;text-align:center}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto}
details{margin-top:2em} summary{cursor:pointer;font-weight:600}
"""
_TALL_ROWS = 25  # tables with more rows than this scroll vertically too


def _cell(column: str, v, decimals: int | None = None) -> str:
    """A table cell (fmt_column): numbers right-aligned, text left-aligned."""
    text = html.escape(fmt_column(column, v, decimals))
    return (
        f"<td>{text}</td>"
        if isinstance(v, (int, float)) or v is None
        else f"<td class=t>{text}</td>"
    )


def html_table(
    rows: Sequence[dict], columns: Sequence[str] | None = None, headers: dict | None = None
) -> str:
    """An escaped HTML table inside a scroll wrapper (wide tables scroll sideways).
    ``headers``: a reader's name for a column key (``{"latency_ms_b64": "latency b64 (ms)"}``)."""
    if not rows:
        return "<p class=note>(no rows)</p>"
    columns = list(columns or rows[0].keys())
    names = headers or {}
    head = "".join(f"<th>{html.escape(str(names.get(c, c)))}</th>" for c in columns)
    dec = table_decimals(columns)
    body = "".join(
        "<tr>" + "".join(_cell(c, r.get(c), dec) for c in columns) + "</tr>" for r in rows
    )
    cls = "scroll tall" if len(rows) > _TALL_ROWS else "scroll"
    return f'<div class="{cls}"><table><tr>{head}</tr>{body}</table></div>'


def html_image(path: Path, alt: str = "") -> str:
    """The PNG at ``path`` embedded as a data URI (report.html stays one portable file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _png_width(data: bytes) -> int:
    """Pixel width from a PNG header (0 when not a PNG)."""
    return int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" else 0


def html_figures(paths: Sequence[Path]) -> str:
    """PNGs side by side where they fit (two per row; wide ones and a lone last one take a row,
    up to their natural size), each embedded and captioned with its file name."""
    figs = []
    for p in paths:
        data = Path(p).read_bytes()
        width = _png_width(data)
        wide = ' class="wide"' if width > 900 else ""
        cap = f' style="max-width:{width}px"' if width else ""  # a lone plot: natural size
        src = base64.b64encode(data).decode()
        figs.append(
            f'<figure{wide}{cap}><img alt="{html.escape(p.stem)}" '
            f'src="data:image/png;base64,{src}">'
            f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
        )
    return f'<div class="plots">{"".join(figs)}</div>'


def html_headline(headline: str) -> str:
    """The answer box: one paragraph per line of ``headline``; a line starting with "Run: "
    (what was run) is shown smaller."""
    paras = []
    for line in headline.strip().splitlines():
        if line.strip():
            cls = ' class="what"' if line.startswith("Run: ") else ""
            paras.append(f"<p{cls}>{html.escape(line.strip())}</p>")
    return f'<div class="headline">{"".join(paras)}</div>'


def html_raw(raw: dict) -> str:
    """Raw JSON, collapsed: ``<details>`` with one ``<pre>`` block."""
    text = json.dumps(raw, indent=2, default=str, allow_nan=True)
    return f"<details><summary>raw JSON</summary><pre>{html.escape(text)}</pre></details>"


def write_html(
    path: Path,
    title: str,
    sections: Iterable[tuple[str, str]],
    *,
    headline: str | None = None,
    raw: dict | None = None,
) -> Path:
    """report.html, written atomically.

    sections: (heading, inner HTML), shown in the order given (put plots before tables; build
    tables with :func:`html_table`, images with :func:`html_image`). headline: the answer, shown
    first (one paragraph per line). raw: JSON-able dict shown last, collapsed in ``<details>``.
    """
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><h1>{html.escape(title)}</h1>",
    ]
    if headline:
        parts.append(html_headline(headline))
    for heading, inner in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{inner}")
    if raw is not None:
        parts.append(html_raw(raw))
    return atomic_write_text(path, "\n".join(parts) + "\n")
