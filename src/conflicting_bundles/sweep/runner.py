"""run_sweep: plan -> skip the finished trials -> an executor -> results.csv, sweep.json,
sweep.png, report.html and the summary table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .. import rundir, runs
from .executors import cached_row, head, run_ray, run_serial
from .plan import plan
from .registry import Trial, get_kind
from .results import FAILED, SweepResult, is_number, plot, summarize_results, table_rows
from .spec import SweepSpec

SPEC_FILE = "sweep.json"
RESULTS_CSV = "results.csv"


def check_same_sweep(spec: SweepSpec, out: Path) -> None:
    """Finished trials are reused by name: refuse a different base config in the same out."""
    path = out / SPEC_FILE
    if not path.is_file():
        return
    stored = runs.read_json(path).get("spec", {})
    now = json.loads(json.dumps(spec.to_dict()))
    for k in ("kind", "base"):
        if stored.get(k) != now[k]:
            raise ValueError(
                f"{out} holds a sweep with a different {k} ({path}); its finished trials would "
                "be mixed with the new ones. Use another `out` (--out), or the same spec."
            )


def run_sweep(
    spec: SweepSpec,
    *,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    serial: bool = False,
    dry_run: bool = False,
    console=None,
) -> SweepResult:
    """Plan the trials, skip the finished ones, run the rest (Ray tasks, or one by one in this
    process with ``serial``), gather every row into results.csv and print the summary table.

    ray_address: None starts a local Ray instance (``num_cpus``: its CPUs, default all);
    "auto" / "host:port" joins a running cluster. A Ray session already initialised in this
    process is used as it is. dry_run: print the plan, run nothing, write nothing. The sweep
    folder is locked for the whole run (a second sweep into it is refused)."""
    from ..console import make_console

    console = console or make_console()
    kind = get_kind(spec.kind)
    trials = plan(spec)
    out = Path(spec.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise runs.RunDirError(f"the sweep's out {out} is a file, not a directory.")
    check_same_sweep(spec, out)
    rows = {t.name: cached_row(kind, t) for t in trials if kind.finished(t)}
    todo = [t for t in trials if t.name not in rows]
    console.print(
        f"sweep {out}: {len(trials)} {spec.kind} trials, {len(rows)} finished, {len(todo)} to "
        f"run ({'serially' if serial else 'on Ray'}; each {spec.resources.cpus:g} CPU, "
        f"{spec.resources.gpus:g} GPU; {spec.retries} retries)",
        markup=False,
        highlight=False,
    )
    if dry_run:
        for t in trials:
            state = "finished" if t.name in rows else "to run"
            console.print(f"  {t.name}  ({state})  {t.dir}", markup=False, highlight=False)
        return SweepResult(out, [rows.get(t.name, head(t, "planned")) for t in trials], [], 0, 0)
    with rundir.locked(out, "cbundles sweep"):
        return _run(spec, kind, trials, rows, todo, out, ray_address, num_cpus, serial, console)


def _run(spec, kind, trials, rows, todo, out, ray_address, num_cpus, serial, console):
    from rich.markup import escape

    from ..report import print_table
    from ..runreport import build_report

    spec_doc = {"spec": spec.to_dict(), "trials": [dataclasses.asdict(t) for t in trials]}
    runs.write_json(out / SPEC_FILE, spec_doc)

    def ordered() -> list[dict]:
        return [rows[t.name] for t in trials if t.name in rows]

    def done(trial: Trial, row: dict) -> None:
        rows[trial.name] = {**row, "cached": False}
        runs.write_csv(out / RESULTS_CSV, ordered())  # partial results are visible at once
        shown = row.get("error") or ", ".join(
            f"{m} {row[m]:.4g}" if is_number(row.get(m)) else f"{m} {row.get(m)}"
            for m in kind.metrics[:2]
        )
        console.print(
            f"[{len(rows)}/{len(trials)}] {trial.name}: {row['status']} ({shown})",
            markup=False,
            highlight=False,
        )

    if todo:
        if serial:
            run_serial(kind, todo, spec.retries, done)
        else:
            run_ray(kind, todo, spec, ray_address, num_cpus, done, console)
    all_rows = ordered()
    runs.write_csv(out / RESULTS_CSV, all_rows)
    summary = summarize_results(all_rows, list(spec.grid), kind.metrics)
    runs.write_json(out / SPEC_FILE, {**spec_doc, "summary": summary})
    print_table(
        table_rows(summary, kind.metrics),
        title=f"sweep {out.name}: {spec.kind}"
        + (" (mean ± std over seeds)" if any(g["trials"] > 1 for g in summary) else ""),
        console=console,
    )
    for r in all_rows:
        if r["status"] in FAILED:
            console.print(
                f"[red]{escape(r['trial'])}[/]: {r['status']}: {escape(str(r.get('error')))}",
                highlight=False,
            )
    if kind.plot is not None:
        kind.plot(spec, all_rows, summary, out)
    elif kind.metrics:
        plot(spec, all_rows, summary, kind.metrics[0], out)
    try:
        report = build_report(out)
        console.print(f"results: {out / RESULTS_CSV}; report: {report}", markup=False)
    except FileNotFoundError:
        console.print(f"results: {out / RESULTS_CSV}", markup=False)
    return SweepResult(out, all_rows, summary, len(todo), len(trials) - len(todo))
