"""Run several search methods from one start and report them side by side.

    results = run_methods(start, ["autotune", "autotune-calibrated", "fixed"], "runs/search")
    write_outputs("runs/search", start, results)   # search.json/.csv, PNGs, report.html

Each method's result is cached in ``<out>/results/<method>.json`` together with the start it
ran from; a rerun with the same start reuses it (and trainings are shared and cached in
``<out>/runs``), so an interrupted comparison resumes.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import runs
from ..report import duration, html_image, html_table, pct, plural, print_table, write_html
from .plots import scatter
from .records import RUNTIME_FIELDS, SearchResult, SearchStart
from .registry import create_search

HEARTBEAT_S = 10.0  # seconds between two progress lines of a running method
TABLE_COLUMNS = (
    "method",
    "criterion",
    "size",
    "params",
    "latency_ms_b1",
    "latency_ms_b64",
    "val_acc",
    "test_acc",
    "epochs",
    "trainings",
    "wall_s",
)


HEADERS = {  # the report's names for the columns
    "size": "size (hidden layers or blocks)",
    "params": "parameters",
    "latency_ms_b1": "latency b1 (ms)",
    "latency_ms_b64": "latency b64 (ms)",
    "val_acc": "val acc",
    "test_acc": "test acc",
    "wall_s": "wall (s)",
}


def _safe(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec)


def _key(start: dict) -> dict:
    return {k: v for k, v in start.items() if k not in RUNTIME_FIELDS}


def cached_result(out: Path, spec: str, start: SearchStart) -> SearchResult | None:
    p = Path(out) / "results" / f"{_safe(spec)}.json"
    if not p.exists():
        return None
    try:  # a damaged or foreign file is not a cached result: the method runs again
        d = runs.read_json(p)
        if _key(d.get("start", {})) != _key(start.to_dict()):
            return None
        return SearchResult.from_dict(d["result"])
    except (runs.RunDirError, AttributeError, KeyError, TypeError, ValueError):
        return None


def trainings_finished(out: Path, since: float) -> int:
    """Trainings under ``out`` that wrote their summary.json after ``since`` (time.time())."""
    n = 0
    for p in Path(out).rglob(runs.SUMMARY):
        try:
            n += p.stat().st_mtime >= since
        except OSError:
            pass
    return n


@contextlib.contextmanager
def heartbeat(out: Path, spec: str, log: Callable[[str], None], *, every: float = HEARTBEAT_S,
              quiet: bool = False):  # fmt: skip
    """A line every ``every`` seconds while a method runs (the trainings inside print nothing
    unless --verbose), so a piped search shows progress: '  sh-ladder: 3 trainings done, 20 s'."""
    if quiet:
        yield
        return
    stop, t0, w0 = threading.Event(), time.perf_counter(), time.time()

    def beat() -> None:
        while not stop.wait(every):
            n = trainings_finished(out, w0)
            log(f"  {spec}: {plural(n, 'training')} done, {duration(time.perf_counter() - t0)}")

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def run_methods(
    start: SearchStart,
    specs: Sequence[str],
    out: str | Path,
    *,
    log: Callable[[str], None] = print,
) -> list[SearchResult]:
    """Run every method spec (``name`` or ``name@criterion``) from ``start``; see the module
    docstring for the cache."""
    out = Path(out)
    methods = [create_search(s) for s in specs]  # unknown names fail before any training
    results = []
    for spec, m in zip(specs, methods, strict=True):
        r = cached_result(out, spec, start)
        if r is None:
            log(f"[{start.label}, {start.dataset}, seed {start.seed}] {spec} ...")
            t0 = time.perf_counter()
            with heartbeat(out, spec, log, quiet=start.progress):
                r = m.run(start, out)
            r.method = spec
            runs.write_json(
                out / "results" / f"{_safe(spec)}.json",
                {"start": start.to_dict(), "result": r.to_dict()},
            )
            log(
                f"  {spec}: size {r.size}, val {pct(r.val_acc)}, test {pct(r.test_acc)}, "
                f"{plural(r.epochs, 'epoch')}, {duration(time.perf_counter() - t0)}"
            )
        results.append(r)
    return results


def table_rows(results: Sequence[SearchResult]) -> list[dict]:
    return [{c: r.row().get(c) for c in TABLE_COLUMNS} for r in results]


def headline(start: SearchStart, results: Sequence[SearchResult]) -> str:
    """The answer in a few lines: the best method by validation accuracy, and each method."""
    b = start.budget
    lines = []
    best = max(results, key=lambda r: -1.0 if r.val_acc is None else r.val_acc)
    lines.append(
        f"Best by validation accuracy: {best.method} -> size {best.size}, "
        f"{best.params:,} parameters (start {best.start_params:,}), test accuracy "
        f"{pct(best.test_acc)}, {plural(best.epochs, 'epoch')}."
    )
    for r in results:
        crit = f" [criterion {r.criterion}]" if r.criterion else ""
        lines.append(
            f"{r.method}{crit}: size {r.size}, {r.params:,} params, test {pct(r.test_acc)}"
            f", {plural(r.epochs, 'epoch')}, {duration(r.wall_s)}."
        )
    lines.append(
        f"Run: {start.label} on {start.dataset}, seed {start.seed}; "
        f"{plural(b.epochs, 'epoch')} per training, {b.val_split} training samples held out for "
        "validation, the test set evaluated once per final network."
    )
    return "\n".join(lines)


def write_outputs(
    out: str | Path,
    start: SearchStart,
    results: Sequence[SearchResult],
    config: dict | None = None,
) -> Path:
    """search.json, search.csv, search_cost.png, search_params.png and report.html.
    ``config``: the resolved command config, saved in search.json (``--config`` reads it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results)
    runs.write_json(
        out / "search.json",
        {
            "start": start.to_dict(),
            "label": start.label,  # report_kinds shows it (it imports no producer)
            "results": [r.to_dict() for r in results],
            **({"config": config} if config is not None else {}),
        },
    )
    runs.write_csv(out / "search.csv", [{**r.row(), "size": str(r.size)} for r in results])
    pts = [(r.method, r.wall_s, 100 * r.test_acc) for r in results]
    scatter(pts, out / "search_cost.png", "wall time (s, all trainings)", "test accuracy (%)")
    pts = [(r.method, r.params, 100 * r.test_acc) for r in results]
    scatter(pts, out / "search_params.png", "parameters", "test accuracy (%)", logx=True)
    sections = [
        ("Comparison", html_table(rows, TABLE_COLUMNS, HEADERS)),
        ("Test accuracy vs training cost", html_image(out / "search_cost.png")),
        ("Test accuracy vs parameters", html_image(out / "search_params.png")),
    ]
    return write_html(
        out / "report.html",
        f"search from {start.label} ({start.dataset})",
        sections,
        headline=headline(start, results),
        raw={"start": start.to_dict(), "results": [r.to_dict() for r in results]},
    )


def print_comparison(start: SearchStart, results: Sequence[SearchResult], console=None) -> None:
    """The comparison table in the terminal, compact enough for 80 columns."""
    rows = [
        {
            "method": r.method,
            "crit": r.criterion or "",
            "size": r.size,
            "params": r.params,
            "ms b64": f"{r.latency_ms_b64:.2f}",
            "val": pct(r.val_acc),
            "test": pct(r.test_acc),
            "epochs": r.epochs,
            "wall s": f"{r.wall_s:.0f}",
        }
        for r in results
    ]
    print_table(
        rows,
        title=f"search from {start.label} on {start.dataset} (seed {start.seed})",
        console=console,
    )
