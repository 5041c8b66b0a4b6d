"""What goes into report.html for each kind of run directory: headline (what was run and the
answer), plots (missing ones drawn from the CSVs), tables and raw JSON. Reads files only; a kind
is recognised by its summary file (autotune.json, lesion_summary.json, grid_summary.json,
sweep.json, prune.json, compare.csv, a training run's summary.json); other files still show."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .report import acc_text, duration, fmt, pct, plot_curves, plural, points, short_count
from .runs import read_csv

__all__ = ["RunReport", "describe_run", "detect_kind"]

_MAX_RAW_BYTES = 400_000  # JSON files larger than this are left out of the raw section
_TIME_KEYS = ("total_time", "wall_time", "train_time")  # the first present is reported
_SKIP_JSON = ("autotune_state.json", "lesion_cache.json", "steps.json")


@dataclass
class RunReport:
    """Everything build_report renders, in order: headline, plots, tables, raw."""

    kind: str
    title: str
    headline: str
    plots: list[Path] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- formatting
def _num(v) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else "n/a"


def _mean_std(metric: str, mean, std) -> str:
    """ "65.5% ± 1.2" for accuracies (fractions), "0.123 ± 0.01" otherwise."""
    if metric.endswith("_acc") and isinstance(mean, (int, float)):
        return f"{pct(mean)} ± {100 * std:.1f}" if isinstance(std, (int, float)) else pct(mean)
    return f"{fmt(mean)} ± {fmt(std)}"


def _json(p: Path) -> dict:
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {"value": obj}


def _model_text(arch: dict) -> str:
    name = arch.get("name", "?")
    if "blocks" in arch:
        return f"{name} {arch['blocks']} ({plural(sum(arch['blocks']), 'block')})"
    if "depth" in arch:
        return f"{name} (width {arch.get('width')}, depth {arch.get('depth')})"
    return str(name)


# ------------------------------------------------------------------------------------ kinds
def _train(d: Path) -> tuple[str, list[Path]]:
    s, cfg = _json(d / "summary.json"), _json(d / "config.json")
    arch = _json(d / "arch.json")
    model = _model_text(arch) if arch else str(s.get("model", cfg.get("model", "?")))
    dataset = s.get("dataset", cfg.get("dataset", "?"))
    what = (
        f"Run: train {model} on {dataset}, {plural(s.get('epochs', cfg.get('epochs')), 'epoch')}, "
        f"criterion {s.get('criterion', cfg.get('criterion', 'reference'))}"
        + (f", optimizer {cfg['optimizer']}" if cfg.get("optimizer") else "")
        + "."
    )
    if not s:
        answer = "No summary.json yet: the run has not finished (the tables show the epochs done)."
    else:
        status = s.get("status", "completed")
        answer = (
            f"{acc_text(s, 'test_acc')} test accuracy (best {acc_text(s, 'best_test_acc')} at "
            "epoch "
            f"{s.get('best_epoch', '?')}), {short_count(s.get('params'))} parameters; "
            f"{plural(s.get('epochs_completed'), 'epoch')} in "
            f"{duration(next((s[k] for k in _TIME_KEYS if s.get(k) is not None), None))}"
            + ("" if status == "completed" else f" (status: {status})")
            + "."
        )
        if s.get("bundle_layer") is not None:
            answer += (
                f"\nBundles at {s['bundle_layer']} at the end: {s.get('num_bundles_final')} "
                f"bundles, entropy {fmt(s.get('bundle_entropy_final'))} "
                f"(at initialisation: {s.get('num_bundles_init')} bundles, entropy "
                f"{fmt(s.get('bundle_entropy_init'))})."
            )
    return f"{what}\n{answer}", _train_plots(d)


def _train_plots(d: Path) -> list[Path]:
    """accuracy.png (in %) and bundles.png from metrics.csv (drawn when absent or older)."""
    m = d / "metrics.csv"
    if not m.is_file():
        return []
    rows = read_csv(m)
    out, epochs = [], [r.get("epoch") for r in rows]

    def draw(name: str, cols: list[str], ylabel: str, title: str) -> None:
        p = d / name
        k = {c: 100.0 if c.endswith("_acc") and ylabel.endswith("(%)") else 1.0 for c in cols}
        series = {
            c: (epochs, [k[c] * r[c] if isinstance(r.get(c), (int, float)) else None for r in rows])
            for c in cols
            if any(isinstance(r.get(c), (int, float)) for r in rows)
        }
        if not series:
            return
        if not p.is_file() or p.stat().st_mtime < m.stat().st_mtime:
            plot_curves(series, p, xlabel="epoch", ylabel=ylabel, title=title)
        out.append(p)

    accs = [c for c in (rows[0] if rows else {}) if c.endswith("_acc") or c.endswith("_acc_pct")]
    draw("accuracy.png", accs, "accuracy (%)", "Accuracy per epoch")
    draw("bundles.png", ["num_bundles", "bundle_entropy"], "value", "Bundles (last probe point)")
    return out


def _autotune(d: Path) -> tuple[str, list[Path]]:
    s = _json(d / "autotune.json")
    cfg = s.get("config", {})
    train = cfg.get("train", {})
    start, final = s.get("start_blocks"), s.get("final_blocks")
    cost = s.get("cost", {})
    c0, c1 = cost.get("start", {}), cost.get("final", {})
    what = (
        f"Run: autotune {train.get('model', '?')} on {train.get('dataset', '?')} "
        f"(variant {s.get('variant')}, restart {s.get('restart')}, criterion "
        f"{s.get('criterion')}, {train.get('epochs', '?')}-epoch budget)."
    )

    def n(b):
        return sum(b) if isinstance(b, list) else b

    stages = f" ({start} -> {final})" if isinstance(start, list) else ""
    answer = (
        f"{n(start)} -> {n(final)} blocks{stages}, "
        f"{short_count(c0.get('params'))} -> {short_count(c1.get('params'))} parameters, "
        f"{acc_text(s, 'test_acc')} test accuracy"
    )
    b0, b1 = c0.get("latency_ms_b64"), c1.get("latency_ms_b64")
    if isinstance(b0, (int, float)) and isinstance(b1, (int, float)) and b1 > 0:
        answer += f", {b0 / b1:.1f}x faster at batch 64 ({b0:.3g} -> {b1:.3g} ms)"
    answer += (
        f"; {plural(s.get('num_prunes'), 'prune')}, {plural(s.get('total_epochs'), 'epoch')} in "
        f"{duration(s.get('wall_time_s'))}."
    )
    plots = [d / f for f in ("depth.png", "accuracy.png", "prune_entropy.png")]
    return f"{what}\n{answer}", plots


def _lesion(d: Path) -> tuple[str, list[Path]]:
    s = _json(d / "lesion_summary.json")
    crit = s.get("primary_criterion", "reference")
    c = s.get("by_criterion", {}).get(crit, {})
    model = s.get("model", {})
    tol = plural(fmt(points(s, "tolerance")), "point")
    what = (
        f"Run: lesion study of {s.get('run_dir', '?')} ({_model_text(model) if model else '?'} "
        f"on {s.get('dataset', '?')}), {s.get('num_test_samples', '?')} test samples, tolerance "
        f"{tol}."
    )
    harm = {g: points({"h": v}, "h") for g, v in c.get("single_harm_mean", {}).items()}
    if not harm:  # a folder from before fractions everywhere
        harm = c.get("single_harm_pts_mean", {})
    rem = s.get("removable_all_blocks", {})
    removable = (
        f"even 1 random block costs more than {tol} on average"
        if rem.get("k") == 0
        else f"{rem.get('k', '?')} random block{'' if rem.get('k') == 1 else 's'} can go "
        f"without losing more than {tol}"
    )
    answer = (
        f"The {crit} criterion flags {c.get('num_flagged', '?')} of {s.get('num_blocks', '?')} "
        f"blocks. Base {acc_text(s, 'base_test_acc')} test accuracy; {removable}."
    )
    answer += (
        "\nMean harm of removing one block (accuracy points): "
        + ", ".join(f"{g} {_num(harm.get(g))}" for g in harm)
        + "."
    )
    if c.get("note"):
        answer += f"\nNote: {c['note']}"
    others = {k: v.get("num_flagged") for k, v in s.get("by_criterion", {}).items() if k != crit}
    if others:
        answer += "\nOther criteria (named options) flag: " + ", ".join(
            f"{k}: {plural(v, 'block')}" for k, v in others.items()
        )
    plots = [d / "lesion.png", d / "lesion_single.png"]
    return f"{what}\n{answer}", plots


def _grid(d: Path) -> tuple[str, list[Path]]:
    s = _json(d / "grid_summary.json")
    cfg = s.get("config", {})
    best = s.get("best") or {}
    what = (
        f"Run: width x depth grid of FNNs on {cfg.get('dataset', '?')}, widths "
        f"{cfg.get('widths')} x depths {cfg.get('depths')}, {plural(cfg.get('epochs'), 'epoch')} "
        f"each, criterion {cfg.get('criterion', 'reference')}."
    )
    answer = (
        f"{s.get('num_conflicting', '?')} of {s.get('num_finished', '?')} nets end with "
        f"conflicting bundles (last hidden layer); mean test accuracy "
        f"{acc_text(s, 'mean_test_acc_conflicting', 'mean_test_acc_pct_conflicting')} with vs "
        f"{acc_text(s, 'mean_test_acc_not_conflicting', 'mean_test_acc_pct_not_conflicting')} "
        "without. Best net: "
        f"width "
        f"{best.get('width')}, depth {best.get('depth')}, {acc_text(best, 'test_acc')}."
    )
    first = s.get("first_conflicting_depth_by_width")
    if first:
        answer += "\nFirst conflicting depth by width: " + ", ".join(
            f"{w}: {'none' if v is None else v}" for w, v in first.items()
        )
    if s.get("errors"):
        answer += f"\n{plural(len(s['errors']), 'cell')} failed (see raw JSON)."
    return f"{what}\n{answer}", [d / "grid.png"]


def _sweep(d: Path) -> tuple[str, list[Path]]:
    s = _json(d / "sweep.json")
    spec = s.get("spec", {})
    rows = read_csv(d / "results.csv") if (d / "results.csv").is_file() else []
    done = sum(r.get("status") == "completed" for r in rows)
    what = (
        f"Run: sweep of {len(s.get('trials', rows))} {spec.get('kind', '?')} trials over "
        f"{', '.join(spec.get('grid', {})) or '?'}."
    )
    answer = f"{done} of {len(rows)} trials completed"
    bad = [r for r in rows if r.get("status") in ("failed", "error")]
    answer += f", {len(bad)} failed." if bad else "."
    groups = s.get("summary") or []
    if groups:
        metric = next((k for k in groups[0] if k.endswith("_std")), "")[: -len("_std")]
        if metric:
            answer += "\n" + "; ".join(
                ", ".join(
                    f"{k} {g[k]}"
                    for k in g
                    if k not in ("trials", "completed")
                    and not k.endswith("_std")
                    and f"{k}_std" not in g
                )
                + f": {metric} {_mean_std(metric, g.get(metric), g.get(metric + '_std'))}"
                for g in groups[:6]
            )
    return f"{what}\n{answer}", [d / "sweep.png"]


def _prune(d: Path) -> tuple[str, list[Path]]:
    s = _json(d / "prune.json")
    lines = []
    if s:
        removed = s.get("removed", [])
        blocks = s.get("blocks", [])
        lines.append(
            f"Run: prune with scorer {s.get('scorer', '?')}: remove {len(removed)} of "
            f"{len(blocks)} blocks."
        )
        t0, t1 = s.get("forward_seconds_before"), s.get("forward_seconds_after")
        speed = (
            f", {t0 / t1:.1f}x faster forward"
            if isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and t1 > 0
            else ""
        )
        lines.append(
            f"{len(blocks)} -> {len(blocks) - len(removed)} blocks, "
            f"{short_count(s.get('params_before'))} -> {short_count(s.get('params_after'))} "
            f"parameters, accuracy {acc_text(s, 'accuracy_before')} -> "
            f"{acc_text(s, 'accuracy_after')}"
            f"{speed}; removed {', '.join(map(str, removed)) or 'nothing'}."
        )
    elif (d / "compare.csv").is_file():
        rows = read_csv(d / "compare.csv")
        by: dict[tuple[str, int], list[float]] = {}
        for r in rows:
            if isinstance(r.get("accuracy"), (int, float)) and isinstance(r.get("k"), int):
                by.setdefault((str(r.get("scorer")), r["k"]), []).append(r["accuracy"])
        mean = {key: sum(v) / len(v) for key, v in by.items()}
        base = next((v for (sc, k), v in mean.items() if k == 0), None)
        scorers = list(dict.fromkeys(sc for sc, k in mean if k > 0))
        if base is not None:
            within = {
                sc: max([k for (s2, k), v in mean.items() if s2 == sc and v >= base - 0.01] + [0])
                for sc in scorers
            }
            lines.append(
                f"Unpruned {pct(base)} test accuracy. Blocks removable with at most 1 pt loss: "
                + ", ".join(f"{sc} {k}" for sc, k in within.items())
                + "."
            )
        kmax = max((k for _, k in mean), default=0)
        lines.insert(
            0, f"Run: comparison of {len(scorers)} prune scorers, 0 to {kmax} blocks removed."
        )
        kmid = kmax // 2
        if kmid:
            lines.append(
                f"Test accuracy after removing {plural(kmid, 'block')}: "
                + ", ".join(f"{sc} {pct(mean[(sc, kmid)])}" for sc in scorers if (sc, kmid) in mean)
                + " (random: mean over its repeats)."
            )
    return "\n".join(lines), [d / "compare.png"]


def _old_label(start: dict) -> str:  # a search.json written before it carried its label
    fam = start.get("family", "?")
    if fam == "fnn":
        return f"fnn {start.get('depth', '?')}x{start.get('width', '?')}"
    return f"{fam} {start.get('blocks', '')}".strip()


def _search(d: Path) -> tuple[str, list[Path]]:
    s = _json(d / "search.json")
    start, results = s.get("start", {}), s.get("results", [])
    budget = start.get("budget", {})
    label = s.get("label") or _old_label(start)  # the producer writes its label

    lines = [
        f"Run: search from {label} on {start.get('dataset', '?')}, seed "
        f"{start.get('seed', '?')}, {plural(budget.get('epochs'), 'epoch')} per training."
    ]
    scored = [r for r in results if isinstance(r.get("val_acc"), (int, float))]
    if scored:
        b = max(scored, key=lambda r: r["val_acc"])
        lines.append(
            f"Best by validation accuracy: {b.get('method')} -> size {b.get('size')}, "
            f"{short_count(b.get('start_params'))} -> {short_count(b.get('params'))} parameters, "
            f"{acc_text(b, 'test_acc')} test accuracy, {plural(b.get('epochs'), 'epoch')}."
        )
    for r in results:
        lines.append(
            f"{r.get('method')}: size {r.get('size')}, {short_count(r.get('params'))} "
            f"parameters, {acc_text(r, 'test_acc')} test, {duration(r.get('wall_s'))}."
        )
    return "\n".join(lines), sorted(d.glob("search_*.png"))


_KINDS: dict[str, tuple[str, Callable[[Path], tuple[str, list[Path]]]]] = {
    "autotune": ("autotune.json", _autotune),
    "lesion": ("lesion_summary.json", _lesion),
    "grid": ("grid_summary.json", _grid),
    "sweep": ("sweep.json", _sweep),
    "prune": ("prune.json", _prune),
    "search": ("search.json", _search),
    "prune-compare": ("compare.csv", _prune),
    "train": ("metrics.csv", _train),
}
# Tables per kind, in order (others found follow); long per-row files last.
_TABLES = {
    "train": ("measure.csv", "metrics.csv", "layers.csv"),
    "autotune": ("steps.csv", "prune_entropies.csv"),
    "lesion": ("lesion_curves.csv", "lesion_blocks.csv", "lesion_corr.csv", "train_metrics.csv"),
    "grid": ("grid.csv",),
    "sweep": ("results.csv",),
    "search": ("search.csv",),
    "prune": ("compare.csv",),
    "prune-compare": ("compare.csv",),
}


def detect_kind(d: Path) -> str:
    """The kind of run directory ``d`` ("train", "autotune", ...; "files" when unknown)."""
    for kind, (marker, _) in _KINDS.items():
        if (d / marker).is_file():
            return kind
    return "train" if (d / "summary.json").is_file() else "files"


def describe_run(d: Path) -> RunReport:
    """The report of run directory ``d``: headline, plots, tables and raw JSON from its files."""
    kind = detect_kind(d)
    headline, plots = "", []
    if kind in _KINDS:
        try:
            headline, plots = _KINDS[kind][1](d)
        except Exception as exc:  # a malformed summary must not cost the whole report
            headline = f"Run: {kind} in {d}.\n(no headline: {type(exc).__name__}: {exc})"
    plots = [p for p in plots if p.is_file()]
    plots += [p for p in sorted(d.glob("*.png")) if p not in plots]
    names = list(_TABLES.get(kind, ()))
    names += [p.name for p in sorted(d.glob("*.csv")) if p.name not in names]
    tables = [(n, read_csv(d / n)) for n in names if (d / n).is_file()]
    raw = {
        p.name: _json(p)
        for p in sorted(d.glob("*.json"))
        if p.name not in _SKIP_JSON and p.stat().st_size <= _MAX_RAW_BYTES
    }
    if not headline:
        headline = f"Run: files in {d} (no known summary file found)."
    return RunReport(kind, f"conflicting-bundles {kind}: {d.name}", headline, plots, tables, raw)
