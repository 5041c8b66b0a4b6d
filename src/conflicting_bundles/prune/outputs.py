"""What ``cbundles prune`` writes and says: its output folder (lock, --force), the score
table and plot, the headlines, and library warnings turned into one-line notes."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..report import pct, plural
from ..rundir import RunDir, existing_owned, open_run
from ..runs import RunDirError
from .runner import rank

__all__ = [
    "PRUNE_FILES",
    "compare_headline",
    "drop_hint",
    "relative_scores",
    "open_out",
    "plot_scores",
    "prune_headline",
    "score_rows",
    "scoring_text",
    "warnings_as_notes",
]

# Everything prune and prune --compare write into --out; --force replaces exactly these.
PRUNE_FILES = (
    "model.pt",
    "pruned.json",
    "hf",
    "prune.json",
    "scores.csv",
    "scores.png",
    "compare.csv",
    "compare.png",
    "compare.json",
    "report.html",
)


def _describe(out: Path, found: list[Path]) -> str:
    """'a prune of MODEL by scorer S (2 blocks removed)' / 'a scorer comparison of MODEL' /
    the file names found."""
    for name, what in (("prune.json", "a prune"), ("compare.json", "a scorer comparison")):
        try:
            d = json.loads((out / name).read_text())
            cfg = d.get("config", {})
        except (OSError, ValueError, AttributeError):
            continue
        if name == "prune.json":
            removed = plural(len(d.get("removed", [])), "block")
            by = f"by scorer {d.get('scorer')}, {removed} removed"
            return f"{what} of {cfg.get('model')} {by}"
        return f"{what} of {cfg.get('model')}"
    return ", ".join(p.name for p in found)


def open_out(out: str | Path, force: bool = False) -> RunDir:
    """Lock ``out`` for prune (rundir.open_run). Refuses a folder that already holds prune
    results unless ``force``; with ``force`` exactly :data:`PRUNE_FILES` are replaced, when
    the caller calls ``RunDir.clear()`` before writing (the model may be read from ``out``)."""
    p = Path(out)
    if p.is_dir() and not force:
        found = existing_owned(p, PRUNE_FILES)
        if found:
            raise RunDirError(
                f"--out {p} already holds prune results ({_describe(p, found)}). Pass --force "
                "to replace them (only prune's own files are removed), or choose another --out."
            )
    return open_run(p, command="cbundles prune", force=force, owned=PRUNE_FILES, defer_clear=True)


@contextlib.contextmanager
def warnings_as_notes(say: Callable[[str], None]) -> Iterator[list[str]]:
    """Within the block, every warning that would be shown is passed to ``say`` as one line
    "note: MESSAGE" (no file/line/source) instead, once per text; yields the list of texts."""
    notes: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if text not in notes:
            notes.append(text)
            say(f"note: {text}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield notes


def score_rows(res, found_params: dict[str, int]) -> list[dict]:
    """One row per block of a PruneResult: position, params, score, rank, removed, details."""
    order = rank(res.scores)
    rows = []
    for i, name in enumerate(res.blocks):
        d = res.details.get(name, {}) if isinstance(res.details.get(name), dict) else {}
        row = {
            "block": name,
            "position": i,
            "params": found_params.get(name, 0),
            "score": res.scores.get(name),
            "rank": order.index(name) + 1 if name in order else None,
            "removed": name in res.removed,
        }
        row.update({k: v for k, v in d.items() if isinstance(v, (int, float, str))})
        rows.append(row)
    return rows


def plot_scores(rows: list[dict], path: Path, title: str) -> Path:
    """Bar chart of the block scores, removed blocks red; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 0.3 * len(rows)), 4.0))
    colors = ["tab:red" if r["removed"] else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), [r["score"] for r in rows], color=colors)
    ax.set_xticks(range(len(rows)), [r["block"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("score (higher = more removable)")
    ax.set_title(title + " (red: removed)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def scoring_text(samples: int | None) -> str:
    """'on 64 training samples' / '(reads no data)'."""
    return "(reads no data)" if samples is None else f"on {samples} training samples"


def prune_headline(s: dict) -> str:
    """The answer of a prune.json summary, one sentence per line."""
    pb, pa = s["params_before"], s["params_after"]
    lines = [
        f"Removed {len(s['removed'])} of {len(s['blocks'])} blocks with scorer "
        f"'{s['scorer']}'{' (iterative)' if s['iterative'] else ''}: "
        f"{', '.join(s['removed']) or '-'}.",
        f"Parameters {pb:,} -> {pa:,} ({100 * (pb - pa) / max(pb, 1):.1f}% fewer); forward "
        f"{1e3 * s['forward_seconds_before']:.2f} ms -> {1e3 * s['forward_seconds_after']:.2f} ms"
        f" on {s['device']}.",
    ]
    q = s["quality_after"]
    if "accuracy" in q:
        lines.append(
            f"Evaluation accuracy {pct(s['quality_before']['accuracy'])} -> {pct(q['accuracy'])}."
        )
        hint = drop_hint(s)
        if hint:
            lines.append(hint)
    lines.append(f"Output cosine to the full model: {q['cosine_to_full']:.4f}.")
    m = s.get("measure")
    if m:
        said = {"run": "the run's", "given": "given", "default": "the default"}
        src = {k: said.get(v, v) for k, v in m["source"].items()}
        lines.append(
            f"Conflict scores: {m['criterion']} criterion on {m['n_samples']} training samples, "
            f"lr {m['lr']:g} ({src['lr']}), batch size {m['batch_size']} ({src['batch_size']}), "
            f"w_max {m['w_max']:.4g} (the model's largest |weight|)."
        )
    else:
        lines.append(f"Scores: '{s['scorer']}' {scoring_text(s['score_samples'])}.")
    return "\n".join(lines)


DROP_POINTS = 3.0  # an accuracy loss worth a hint of what to try


def drop_hint(s: dict) -> str | None:
    """What to try when removal cost more than DROP_POINTS points of accuracy."""
    before, after = s["quality_before"].get("accuracy"), s["quality_after"].get("accuracy")
    if before is None or after is None or 100 * (before - after) <= DROP_POINTS:
        return None
    k = len(s["removed"])
    fewer = f"fewer blocks (--remove {k - 1}), " if k > 1 else ""
    healed = bool(s.get("heal")) or bool((s.get("config") or {}).get("heal_steps"))
    heal = "more --heal-steps" if healed else "--heal-steps 200 (fine-tune after the removal)"
    return (
        f"Accuracy fell {100 * (before - after):.1f} points: try {fewer}{heal}, or another "
        "scorer (--compare ranks every scorer on this model)."
    )


def relative_scores(scores: dict[str, float]) -> dict[str, float]:
    """Each block's score as a share of the largest |score| (1.0 = the most removable end of
    the ranking's scale), so tiny raw values such as 6.4e-09 read as 0.00 .. 1.00."""
    top = max((abs(v) for v in scores.values() if math.isfinite(v)), default=0.0)
    return {
        k: (v / top if top > 0 and math.isfinite(v) else float("nan")) for k, v in scores.items()
    }


def compare_headline(rows: list[dict], max_remove: int | None) -> str:
    """The answer of a comparison: which scorer keeps the highest test accuracy at k =
    max_remove (1 if None) removed blocks, or which scorers tie (equal when printed as %)."""
    ks = [r["k"] for r in rows if r["scorer"] != "none"]
    if not ks:
        return "No scorer was compared."
    kk = min(max_remove or 1, max(ks))
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r["k"] == kk and r["scorer"] != "none":
            acc.setdefault(r["scorer"], []).append(r["accuracy"])
    mean = {n: sum(v) / len(v) for n, v in acc.items()}
    best = pct(max(mean.values()))
    top = [n for n in mean if pct(mean[n]) == best]
    base = next((r["accuracy"] for r in rows if r["k"] == 0), None)
    what = f"At k = {kk} removed block{'s' if kk != 1 else ''} the highest test accuracy"
    if len(top) == 1:
        first = f"{what} is by scorer '{top[0]}': {best}"
    else:
        first = f"{what} is a tie: {best} by scorers {', '.join(repr(n) for n in top)}"
    first += f" (unpruned {pct(base)})." if base is not None else "."
    seeds = {n: f" (mean of {len(v)} seeds)" if len(v) > 1 else "" for n, v in acc.items()}
    order = sorted(mean, key=lambda n: -mean[n])
    return first + "\n" + "; ".join(f"{n} {pct(mean[n])}{seeds[n]}" for n in order) + "."
