"""report.html of any run directory from its files (``cbundles report RUN_DIR``): the kind of
run (report_kinds) rendered with the page primitives of :mod:`conflicting_bundles.report`.
Kept apart from both so that the primitives never import the kinds (no circle)."""

from __future__ import annotations

from pathlib import Path

from .report import html_figures, html_table, write_html
from .report_kinds import describe_run
from .runs import runs_inside

__all__ = ["build_report"]


def build_report(run_dir: str | Path) -> Path:
    """report.html for any run directory this project writes (train, autotune, lesion, grid,
    sweep, prune): the answer first, then the plots (missing ones are drawn from the CSVs), the
    tables, and every JSON summary last, collapsed. Also ``cbundles report RUN_DIR``."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory; pass a run directory.")
    desc = describe_run(d)
    sections = [("plots", html_figures(desc.plots))] if desc.plots else []
    for name, rows in desc.tables:
        sections.append((name, html_table(rows)))
    if not sections and not desc.raw:
        inside = runs_inside(d)
        hint = (
            f" It holds runs: {', '.join(map(str, inside[:6]))}"
            + (f" and {len(inside) - 6} more" if len(inside) > 6 else "")
            + "; pass one of them."
            if inside
            else ""
        )
        raise FileNotFoundError(f"{d} holds no result files (JSON/CSV/PNG) to report.{hint}")
    return write_html(
        d / "report.html", desc.title, sections, headline=desc.headline, raw=desc.raw or None
    )
