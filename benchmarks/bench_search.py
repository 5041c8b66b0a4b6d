"""Depth search where depth matters: successive halving with and without the bundle filter
against fixed, oracle-depth, random and the paper's auto-tune (issue 21, docs/search.md).

    python benchmarks/bench_search.py --quick                 # minutes; a fresh folder
    python benchmarks/bench_search.py --phase tuning          # the tuning rows
    python benchmarks/bench_search.py --freeze                # record the frozen sha256s
    python benchmarks/bench_search.py --phase heldout         # gate + held-out rows
    python benchmarks/bench_search.py --report-only           # tables from the JSON
    ... --update-results                                      # write benchmarks/results/

Rows and verdicts go to <out>/bench_search.json (default runs/bench_search/<full|quick>/),
which is also the resume file; the committed benchmarks/results/bench_search.json is written
only with --update-results. Held-out rows are refused unless the JSON's ``frozen`` record
matches the sha256 of the method files and of BENCH (the protocol's freeze).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PKG = ROOT / "src" / "conflicting_bundles"
METHOD_FILES = [
    "search/halving.py",
    "search/methods.py",
    "search/common.py",
    "search/records.py",
    "search/naswot.py",
    "search/criteria.py",
    "data/checkerboard.py",
]
CB = {"epochs": 20, "check_epochs": 2, "val_split": 5000, "optimizer": "adam", "lr": 1e-3}
FNN = {"epochs": 5, "check_epochs": 2, "train_limit": 25000, "val_split": 5000}
DEEP = ["fixed", "oracle-depth", "random", "sh-ladder", "cb-sh", "conflict-at-init", "naswot"]
DEEP += ["autotune", "autotune-calibrated"]
NOHARM = ["fixed", "oracle-depth", "random", "sh-ladder", "cb-sh"]
BENCH = {  # the benchmark configuration (frozen with the method files)
    "starts": {
        "cb4-w24": {"dataset": "checkerboard:4", "width": 24, "depth": 55, "budget": CB},
        "cb6-w24": {"dataset": "checkerboard:6", "width": 24, "depth": 55, "budget": CB},
        "cb4-w16": {"dataset": "checkerboard:4", "width": 16, "depth": 55, "budget": CB},
        "cb8-w32": {"dataset": "checkerboard:8", "width": 32, "depth": 55, "budget": CB},
        "fashion-fnn-60x60-e20": {
            "dataset": "fashion-mnist",
            "width": 60,
            "depth": 60,
            "budget": {**FNN, "epochs": 20},
        },
        "mnist-fnn-100x25": {"dataset": "mnist", "width": 25, "depth": 100, "budget": FNN},
        "fashion-fnn-100x25": {
            "dataset": "fashion-mnist",
            "width": 25,
            "depth": 100,
            "budget": FNN,
        },
    },
    "kind": {"fashion-fnn-100x25": "no-harm", "mnist-fnn-100x25": "no-harm"},  # else depth
    "methods": {"depth-matters": DEEP, "no-harm": NOHARM},
    "tuning": [["cb4-w24", 0], ["mnist-fnn-100x25", 0]],
    "gate_seed": 0,
    "heldout": [
        ["cb4-w24", 1],
        ["cb4-w24", 2],
        ["cb6-w24", 0],
        ["cb6-w24", 1],
        ["cb6-w24", 2],
        ["cb4-w16", 0],
        ["cb4-w16", 1],
        ["cb4-w16", 2],
        ["cb8-w32", 0],
        ["cb8-w32", 1],
        ["cb8-w32", 2],
        ["fashion-fnn-60x60-e20", 0],
        ["fashion-fnn-60x60-e20", 1],
        ["mnist-fnn-100x25", 1],
        ["mnist-fnn-100x25", 2],
        ["fashion-fnn-100x25", 0],
        ["fashion-fnn-100x25", 1],
        ["fashion-fnn-100x25", 2],
    ],
}
QUICK = {
    "starts": {
        "cb4-w24": {
            "dataset": "checkerboard:4",
            "width": 24,
            "depth": 21,
            "budget": {**CB, "epochs": 4, "train_limit": 6000, "val_split": 2000},
        }
    },
    "kind": BENCH["kind"],
    "methods": {"depth-matters": ["fixed", "oracle-depth", "random", "sh-ladder", "cb-sh"]},
    "tuning": [],
    "gate_seed": 0,
    "heldout": [["cb4-w24", 0]],
}
FIELDS = ("method", "start", "dataset", "seed", "split", "kind", "criterion", "size", "params")
FIELDS += ("val_acc", "test_acc", "epochs", "trainings", "wall_s", "cpu_s")


def kind_of(start: str) -> str:
    """ "no-harm" (today's FNN starts) or "depth-matters" (gated: kept only if it passes)."""
    return BENCH["kind"].get(start, "depth-matters")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(bench: dict) -> dict:
    """sha256 of every method file and of the benchmark configuration."""
    files = {f: sha256(PKG / f) for f in METHOD_FILES}
    config = hashlib.sha256(json.dumps(bench, sort_keys=True).encode()).hexdigest()
    return {"files": files, "config": config}


def run_job(job: tuple[str, int, str], bench: dict, work: Path) -> list[dict] | str:
    """Every method of the start's kind on one (start, seed): the rows, or the error as one
    line (some exceptions do not survive the way back from a worker process)."""
    try:
        return _run_job(job, bench, work)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _run_job(job: tuple[str, int, str], bench: dict, work: Path) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from conflicting_bundles.search import Budget, SearchStart, run_methods

    name, seed, split = job
    kw = dict(bench["starts"][name])
    budget = Budget(**kw.pop("budget"), val_seed=seed)  # each seed its own validation split
    start = SearchStart(family="fnn", seed=seed, budget=budget, threads=1, **kw)
    kind = kind_of(name)
    methods = bench["methods"][kind] if split != "gate" else ["oracle-depth", "fixed"]
    out = work / name / f"s{seed}"
    rows = []
    for r in run_methods(start, methods, out, log=lambda s: print(s, flush=True)):
        tuning = [name, seed] in [list(t) for t in bench["tuning"]]
        d = r.row() | {"start": name, "split": "tuning" if tuning else "held-out"}
        rows.append({k: d.get(k) for k in FIELDS} | {"kind": kind, "details": r.details})
    return rows


def _key(r: dict) -> tuple:
    return (r["method"], r["start"], r["seed"])


def run_jobs(jobs: list, bench: dict, work: Path, path: Path, data: dict, workers: int) -> None:
    """Run jobs in ``workers`` processes; rows are saved after every finished job."""
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, min(workers, len(jobs)))) as pool:
        pending = [pool.apply_async(run_job, (j, bench, work)) for j in jobs]
        for j, p in zip(jobs, pending, strict=True):
            try:
                new = p.get()
            except Exception as e:  # one failing job must not lose the others' rows
                new = f"{type(e).__name__}: {e}"
            if isinstance(new, str):
                print(f"job {j} failed: {new}", file=sys.stderr, flush=True)
                continue
            keys = {_key(n) for n in new}
            data["rows"] = [r for r in data["rows"] if _key(r) not in keys] + new
            save(path, data, bench)
            print(f"done {j[:2]}: {len(new)} rows ({time.perf_counter() - t0:.0f} s)", flush=True)


def save(path: Path, data: dict, bench: dict) -> None:
    from conflicting_bundles.runs import write_json
    from conflicting_bundles.search import criteria as cr

    rows = data["rows"]
    gates = data.setdefault("gate", {})
    for name in [n for n in bench["starts"] if kind_of(n) == "depth-matters"]:
        g_rows = [r for r in rows if r["start"] == name and r["seed"] == bench["gate_seed"]]
        oracle = [r for r in g_rows if r["method"] == "oracle-depth"]
        ladder = oracle[0]["details"].get("ladder") if oracle else None
        if ladder:
            gates[name] = cr.gate(rows, name, bench["gate_seed"], ladder)
    ok = {n for n, g in gates.items() if g.get("passed")}
    scored = [r for r in rows if r["kind"] == "no-harm" or r["start"] in ok]
    if any(r["split"] == "held-out" for r in scored):
        crit = cr.criteria(scored)
        abl = cr.criteria(scored, cr.ABLATION)
        data["criteria"] = {k: crit[k] for k in ("C1", "C2", "C3", "C4")}
        data["criteria_method"] = crit["method"]
        data["ablation_C1"] = abl["C1"]
        data["recommended"] = cr.recommend(crit, abl["C1"]["met"])
    write_json(path, data)


def tables(data: dict) -> str:
    """The markdown the docs show: gates, held-out table, C1-C4."""
    from conflicting_bundles.search import criteria as cr

    ok = {n for n, g in data.get("gate", {}).items() if g.get("passed")}
    rows = [r for r in data["rows"] if r["kind"] == "no-harm" or r["start"] in ok]
    methods = [m for m in DEEP if any(r["method"] == m for r in rows)]
    gates = [g | {"margin": g.get("margin_points")} for g in data.get("gate", {}).values()]
    out = ["Gate (seed 0: oracle-depth - fixed, points; the oracle depth inside the ladder):\n"]
    out.append(cr.markdown(gates, ["start", "oracle_size", "margin", "interior", "passed"]))
    for split in ("tuning", "held-out"):
        part = [r for r in rows if r["split"] == split]
        t = cr.heldout_table([r | {"split": "held-out"} for r in part], methods)
        cols = ["start", "seed", "method", "size", "test %", "wall s", "cpu s", "epochs"]
        out.append(f"\n{split.capitalize()} rows:\n")
        out.append(cr.markdown(t, [*cols, "gap to oracle (pt)"]))
    out.append(f"\nCriteria ({data.get('criteria_method', cr.CANDIDATE)}, held-out rows):\n")
    crit = data.get("criteria", {})
    out.append(
        cr.markdown(
            [
                {
                    "criterion": k,
                    "met": v["met"],
                    "value": _short(v["value"]),
                    "target": v["target"],
                }
                for k, v in crit.items()
            ],  # fmt: skip
            ["criterion", "met", "value", "target"],
        )
    )
    out.append(f"\nRecommended: {data.get('recommended', 'not decided (no held-out rows)')}\n")
    return "".join(out)


def _short(v) -> str:
    def f(x):
        return f"{x:.2f}" if isinstance(x, float) else str(x)

    if isinstance(v, dict) and "mean_points" in v:
        return (
            f"mean {f(v['mean_points'])} pt, t {f(v['t'])}, wall x{f(v['wall_ratio'])}, n {v['n']}"
        )
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_short(x)}" for k, x in v.items())
    return f(v)


def plot(data: dict, stem: Path) -> None:
    """Test accuracy vs wall seconds (x: wall time of everything the method trained)."""
    from conflicting_bundles.search.plots import scatter

    rows = [r for r in data["rows"] if r["split"] == "held-out" and r["kind"] == "depth-matters"]
    if rows:
        scatter(
            [(r["method"], r["wall_s"], 100 * r["test_acc"]) for r in rows],
            Path(f"{stem}_cost.png"),
            "wall seconds of the method (all its trainings and checks, 1 thread)",
            "test accuracy (%)",
            front=False,
            logx=True,
            title="Test accuracy vs wall time (held-out depth-matters rows)",
        )


MARK = ("<!-- bench_search tables: begin (generated) -->", "<!-- bench_search tables: end -->")


def write_docs(text: str) -> None:
    """Replace the generated block of docs/search.md and experiments/RESULTS.md."""
    for doc in (ROOT / "docs" / "search.md", ROOT / "experiments" / "RESULTS.md"):
        s = doc.read_text()
        if MARK[0] not in s or MARK[1] not in s:
            print(f"{doc}: no generated block ({MARK[0]} ... {MARK[1]}); skipped", flush=True)
            continue
        head, rest = s.split(MARK[0], 1)
        tail = rest.split(MARK[1], 1)[1]
        doc.write_text(f"{head}{MARK[0]}\n{text}\n{MARK[1]}{tail}")
        print(f"wrote the tables into {doc.relative_to(ROOT)}", flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="A few-minute version.")
    ap.add_argument("--phase", choices=["tuning", "heldout"], default=None)
    ap.add_argument("--freeze", action="store_true", help="Record the frozen sha256s.")
    ap.add_argument("--workers", type=int, default=2, help="Processes (one thread each).")
    ap.add_argument("--out", type=Path, default=None, help="Work folder (default runs/...).")
    ap.add_argument("--report-only", action="store_true", help="Tables/plots from the JSON.")
    ap.add_argument("--update-results", action="store_true", help="Use benchmarks/results/.")
    ap.add_argument("--write-docs", action="store_true", help="Tables into the docs.")
    ap.add_argument("--starts", default=None, help="Only these starts (comma-separated).")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    bench = QUICK if args.quick else BENCH
    tag = "quick" if args.quick else "full"
    work = args.out or ROOT / "runs" / "bench_search" / tag
    path = RESULTS / f"bench_search{'_quick' if args.quick else ''}.json"
    if not args.update_results:
        path = work / "bench_search.json"
    data = json.loads(path.read_text()) if path.exists() else {"rows": []}
    if any("kind" not in r for r in data["rows"]):  # rows of the earlier benchmark (issue 10)
        print(f"{path}: rows of the earlier benchmark (git history keeps them); starting anew")
        data = {"rows": []}
    data.update(benchmark="bench_search", quick=args.quick, config=bench, method_files=METHOD_FILES)
    now = fingerprint(bench)
    if args.freeze:
        data["frozen"] = now | {"utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        save(path, data, bench)
        print(f"frozen: {len(now['files'])} method files and the config recorded in {path}")
        return
    phase = "heldout" if args.quick else args.phase
    if phase == "heldout" and not args.quick:
        frozen = data.get("frozen")
        if not frozen or {k: frozen[k] for k in ("files", "config")} != now:
            sys.exit(
                f"bench_search: held-out rows need the frozen protocol: {path} has no matching "
                "`frozen` record (the method files or BENCH changed since --freeze). Restore "
                "them, or freeze again only before any held-out row exists."
            )
    jobs = []
    only = set(args.starts.split(",")) if args.starts else None
    if only and not only <= set(bench["starts"]):
        sys.exit(f"bench_search: unknown --starts {sorted(only - set(bench['starts']))}; "
                 f"choose from {', '.join(bench['starts'])}.")  # fmt: skip
    if phase == "tuning":
        jobs = [(s, seed, "tuning") for s, seed in bench["tuning"]]
    elif phase == "heldout":
        gate_jobs = sorted(
            {
                (s, bench["gate_seed"], "gate")
                for s, _ in bench["heldout"]
                if kind_of(s) != "no-harm"
            }
        )
        jobs = [(s, seed, "held-out") for s, seed in bench["heldout"]]
        gate_jobs = [j for j in gate_jobs if not only or j[0] in only]
        if not args.report_only:
            print(f"gate: oracle-depth and fixed on {len(gate_jobs)} starts", flush=True)
            run_jobs(gate_jobs, bench, work, path, data, args.workers)
        passed = {n for n, g in data.get("gate", {}).items() if g.get("passed")}
        jobs = [j for j in jobs if kind_of(j[0]) == "no-harm" or j[0] in passed]
    if only:
        jobs = [j for j in jobs if j[0] in only]
    if jobs and not args.report_only:
        print(f"{len(jobs)} jobs ({len(data['rows'])} rows already in {path})", flush=True)
        run_jobs(jobs, bench, work, path, data, args.workers)
    save(path, data, bench)
    text = tables(json.loads(path.read_text()))
    plot(data, path.with_suffix(""))
    print(text)
    if args.write_docs:
        write_docs(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
