"""The study's files (CSV, JSON, PNG) and its terminal tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import runs
from .config import ALL, LesionResult

SUMMARY_JSON = "lesion_summary.json"


def write_outputs(res: LesionResult, out: str | Path) -> None:
    """CSV + JSON + PNG files of a lesion study into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_csv(out / "lesion_blocks.csv", res.blocks)
    runs.write_csv(out / "lesion_curves.csv", res.curves)
    runs.write_csv(out / "lesion_corr.csv", res.corr)
    runs.write_json(out / SUMMARY_JSON, res.summary)
    plot_lesion(res, out)


_COLORS = {"conflicting": "C3", "non-conflicting": "C0", "all": "C7", "position-matched": "C2"}
# "all" is drawn first and wide, so a group equal to it (nothing flagged) stays visible on top
_STYLES = {
    "all": dict(lw=3.5, alpha=0.6),
    "conflicting": dict(marker="o", ms=2.5),
    "non-conflicting": dict(marker="o", ms=2.5, ls="--"),
    "position-matched": dict(marker="s", ms=2.5),
}
_ORDER = ("all", "conflicting", "non-conflicting", "position-matched")


def plot_lesion(res: LesionResult, out: str | Path) -> None:
    """lesion.png: test accuracy vs fraction of blocks lesioned, mean +- std band per group, one
    panel per flag criterion; lesion_single.png: single-block harm, entropy and margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    crits = list(res.summary["by_criterion"])
    ncol = min(3, len(crits))
    nrow = math.ceil(len(crits) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 4.3 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, crits, strict=False):
        _curve_panel(ax, res, c)
    for ax in list(axes.flat)[len(crits) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "lesion.png", dpi=110)
    plt.close(fig)
    fig = _single_figure(res, plt)
    fig.tight_layout()
    fig.savefig(out / "lesion_single.png", dpi=110)
    plt.close(fig)


def _curve_panel(ax, res: LesionResult, c: str) -> None:
    """One panel of lesion.png: every group of criterion ``c`` (and "all"), in %."""
    s = res.summary
    for g in _ORDER:
        rows = [r for r in res.curves if r["group"] == g and r["criterion"] in (c, ALL)]
        if g != "all":
            rows = [r for r in rows if r["criterion"] == c]
        if not rows:
            continue
        # every curve starts at the intact model (k = 0)
        x = 100 * np.array([0.0] + [r["fraction_of_blocks"] for r in rows])
        m = 100 * np.array([res.base_acc] + [r["test_acc_mean"] for r in rows])  # in %
        sd = 100 * np.array([0.0] + [r["test_acc_std"] for r in rows])
        label = f"{g} (n={rows[0]['group_size']})"
        ax.plot(x, m, color=_COLORS[g], label=label, **_STYLES[g])
        ax.fill_between(x, m - sd, m + sd, color=_COLORS[g], alpha=0.15, lw=0)
    base, tol = 100 * res.base_acc, 100 * s["tolerance"]  # in % and points
    ax.axhline(base, color="k", lw=0.8, ls="--", label="no lesion")
    ax.axhline(base - tol, color="k", lw=0.6, ls=":", label=f"-{tol:g} pt")
    nf = s["by_criterion"][c]["num_flagged"]
    title = f"groups by the {c} criterion ({nf} of {s['num_lesionable']} flagged)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("blocks lesioned (% of all blocks)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(0, 100)
    means = [100 * r["test_acc_mean"] for r in res.curves]
    tops = [100 * (r["test_acc_mean"] + r["test_acc_std"]) for r in res.curves]
    lo = min([base - 10, *means])
    ax.set_ylim(max(0.0, lo - 2), min(100.0, max([base, *tops]) + 1))
    ax.legend(fontsize=7, loc="lower left")


def _single_figure(res: LesionResult, plt):
    """lesion_single.png's figure: single-block harm (points) above margin and entropy."""
    primary = res.summary["primary_criterion"]
    les = [b for b in res.blocks if b["lesionable"]]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    idx = [b["index"] for b in les]
    ax1.bar(
        idx,
        [100 * b["single_harm"] for b in les],  # in points
        color=["C3" if b[f"flag[{primary}]"] else "C0" for b in les],
    )
    for b in les:  # projecting blocks are lesioned to their projection, not to the identity
        if b["projecting"]:
            ax1.bar(b["index"], 100 * b["single_harm"], fill=False, hatch="//", edgecolor="k", lw=0)
    ax1.set_ylabel("accuracy loss (points)")
    ax1.set_title(
        f"Single-block lesions (red: flagged by {primary}; hatched: projecting block)",
        fontsize=10,
    )
    ax2.semilogy(idx, [max(b["margin"], 1e-3) for b in les], "k.-", label="margin (units of q)")
    ax2.axhline(1.0, color="k", lw=0.6, ls=":")
    ax2.set_ylabel("margin / q  (log)")
    ax2.set_xlabel("block index (forward order)")
    ax3 = ax2.twinx()
    ax3.plot(
        idx, [b[f"entropy[{primary}]"] for b in les], "C3s", ms=3, label=f"entropy ({primary})"
    )
    ax3.set_ylabel("bundle entropy", color="C3")
    return fig


def print_lesion(res: LesionResult, console=None) -> None:
    """Rich tables: the blocks, the removable fractions per group, the correlations."""
    from ..console import escape, make_console
    from ..report import fmt, pct, plural, print_table

    console = console or make_console()
    s = res.summary
    tol = plural(fmt(100 * s["tolerance"]), "point")
    title = f"Blocks (base test accuracy {pct(res.base_acc, decimals=2)})"
    print_table(_block_rows(res), title=title, console=console)
    title = f"Largest lesion set losing < {tol} (mean over sets)"
    print_table(_removable_rows(s), title=title, console=console)
    title = "Rank correlation of each conflict signal with single-lesion harm"
    print_table(_correlation_rows(res), title=title, console=console)
    h = s.get("individually_harmless")
    if h and not h.get("k"):
        console.print(f"no block costs < {tol} alone: none to lesion together", highlight=False)
    elif h:
        console.print(
            f"{h['k']} of {plural(s['num_blocks'], 'block')} each cost < {tol} alone; "
            f"lesioned together: {pct(h['joint_test_acc'], decimals=2)} "
            f"({100 * h['joint_loss']:.2f} pts lost)",
            highlight=False,
        )
    for c, d in s["by_criterion"].items():
        if d["note"]:
            console.print(f"[yellow]note[/yellow] ({c}): {escape(d['note'])}", highlight=False)


def _block_rows(res: LesionResult) -> list[dict]:
    crits = list(res.summary["config"]["criteria"])
    return [
        {
            "block": b["block"],
            "idx": b["index"],
            "margin/q": b["margin"],
            "H ref": b.get("entropy[reference]"),
            "flagged by": ",".join(c for c in crits if b[f"flag[{c}]"]) or "-",
            "single_acc": b["single_acc"],  # print_table: in % and points
            "single_harm": b["single_harm"],
        }
        for b in res.blocks
    ]


def _removable_rows(s: dict) -> list[dict]:
    from ..report import pct

    def row(c: str, g: str, r: dict, harm: float | None) -> dict:
        return {
            "criterion": c,
            "group": g,
            "size": r["group_size"],
            "k": r["k"],
            "share of blocks": pct(r["fraction_of_blocks"]),
            "single_harm_mean": harm,
        }

    rem = [row(ALL, "all", s["removable_all_blocks"], None)]
    for c, d in s["by_criterion"].items():
        for g, r in d["removable"].items():
            rem.append(row(c, g, r, d["single_harm_mean"].get(g)))
    return rem


_CORR_COLUMNS = {
    "signal": "signal",
    "spearman": "rho",
    "p": "p",
    "partial_given_index": "rho|index",
    "p_given_index": "p|index",
    "partial_given_index_projecting": "rho|index,proj",
    "p_given_index_projecting": "p|index,proj",
}


def _correlation_rows(res: LesionResult) -> list[dict]:
    # "entropy[reference]" -> "H reference": rich would read the brackets as markup
    return [
        {v: r.get(k) for k, v in _CORR_COLUMNS.items()}
        | {"signal": r["signal"].replace("entropy[", "H ").rstrip("]")}
        for r in res.corr
    ]
