"""The study's summary: rank correlations of each conflict signal with single-lesion harm,
and per group the largest lesion set that costs less than the tolerance."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np

from .config import ALL, LesionConfig
from .signals import matched_controls
from .stats import partial_spearman, pvalue, spearman


def correlations(blocks: list[dict], cfg: LesionConfig) -> list[dict]:
    """Per conflict signal (each criterion's entropy, -margin): Spearman correlation with the
    single-lesion harm over the lesionable blocks, and partial Spearman given the block index
    and given (index, projecting); p-values from the t-distribution."""
    les = [b for b in blocks if b["lesionable"]]
    n = len(les)
    harm = [b["single_harm"] for b in les]
    idx = [b["index"] for b in les]
    proj = [float(b["projecting"]) for b in les]
    signals = {f"entropy[{c}]": [b[f"entropy[{c}]"] for b in les] for c in cfg.criteria}
    signals["-margin"] = [-b["margin"] for b in les]  # ranks only: larger = closer to a conflict
    rows = []
    for name, vals in signals.items():
        r = spearman(vals, harm) if n > 2 else float("nan")
        pi = partial_spearman(vals, harm, idx) if n > 3 else float("nan")
        # projecting (stride-2) blocks are lesioned to their projection, a different operation:
        # a second control; when every block is alike the first partial is repeated
        if n > 4 and len(set(proj)) > 1:
            pp, dfp = partial_spearman(vals, harm, np.column_stack([idx, proj])), n - 4
        else:
            pp, dfp = pi, n - 3
        rows.append(
            {
                "signal": name,
                "n_blocks": n,
                "distinct_values": len(set(vals)),
                "spearman": r,
                "p": pvalue(r, n - 2),
                "partial_given_index": pi,
                "p_given_index": pvalue(pi, n - 3),
                "partial_given_index_projecting": pp,
                "p_given_index_projecting": pvalue(pp, dfp),
            }
        )
    r = spearman(idx, harm) if n > 2 else float("nan")
    rows.append(
        {
            "signal": "index",
            "n_blocks": n,
            "distinct_values": n,
            "spearman": r,
            "p": pvalue(r, n - 2),
        }
    )
    return rows


def _removable(base: float, curves: list[dict], crit: str, group: str, tol: float) -> int:
    """Largest k such that every k' <= k loses less than ``tol`` (a fraction) on average."""
    best = 0
    for c in sorted(
        (c for c in curves if c["criterion"] == crit and c["group"] == group), key=lambda c: c["k"]
    ):
        if base - c["test_acc_mean"] < tol and c["k"] == best + 1:
            best = c["k"]
        else:
            break
    return best


def summarize(base, blocks, curves, corr, cfg: LesionConfig, n_test: int) -> dict:
    """lesion_summary.json: per flag criterion the flagged blocks and, per group, the largest
    fraction of blocks lesionable with less than ``tolerance`` loss (fractions); the correlations.
    """
    n = len(blocks)
    les = [b for b in blocks if b["lesionable"]]

    def removable(crit: str, group: str, size: int) -> dict:
        k = _removable(base, curves, crit, group, cfg.tolerance)
        return {
            "k": k,
            "fraction_of_blocks": k / n,
            "group_size": size,
            "fraction_of_group": k / size if size else None,
        }

    def mean(bs: list[dict]) -> float | None:
        return float(np.mean([b["single_harm"] for b in bs])) if bs else None

    per_crit = {}
    for c in cfg.flag_criteria:
        flagged = [b for b in les if b[f"flag[{c}]"]]
        unflagged = [b for b in les if not b[f"flag[{c}]"]]
        ctrl, dist = [], []
        if flagged and len(unflagged) >= len(flagged):
            # the single-lesion harm of each flagged block's nearest unflagged block, averaged
            # over tie draws (deterministic given the seed)
            rng = random.Random(f"{cfg.seed}|single-match|{c}")
            for _ in range(cfg.repeats):
                m = matched_controls(
                    [b["index"] for b in flagged], [b["index"] for b in unflagged], rng
                )
                ctrl.append(np.mean([blocks[i]["single_harm"] for i in m]))
                dist.append(np.mean([abs(i - b["index"]) for i, b in zip(m, flagged, strict=True)]))
        groups = {"conflicting": len(flagged), "non-conflicting": len(unflagged)}
        if any(x["criterion"] == c and x["group"] == "position-matched" for x in curves):
            groups["position-matched"] = len(flagged)
        note = ""
        if not flagged:
            note = (
                f"the {c} criterion flags no lesionable block: the conflicting vs "
                "non-conflicting comparison cannot be formed (non-conflicting = all blocks)."
            )
        elif not unflagged:
            note = f"the {c} criterion flags every lesionable block: there is no control group."
        elif len(unflagged) < len(flagged):
            note = "fewer unflagged than flagged blocks: position-matched sets stop at k = " + str(
                len(unflagged)
            )
        per_crit[c] = {
            "flagged_blocks": [b["block"] for b in flagged],
            "num_flagged": len(flagged),
            "single_harm_mean": {
                "conflicting": mean(flagged),
                "non-conflicting": mean(unflagged),
                "position-matched": float(np.mean(ctrl)) if ctrl else None,
            },
            # how far (in blocks) the matched controls are from the flagged blocks: large when
            # the flagged blocks crowd one end of the net and the matching runs out of neighbours
            "match_distance_mean": float(np.mean(dist)) if dist else None,
            "removable": {g: removable(c, g, s) for g, s in groups.items()},
            "note": note,
        }
    return {
        "units": "accuracies, losses and harm are fractions in 0..1 (0.01 = 1 accuracy point)",
        "base_test_acc": base,
        "num_blocks": n,
        "num_lesionable": len(les),
        "num_test_samples": n_test,
        "tolerance": cfg.tolerance,
        "removable_all_blocks": removable(ALL, "all", len(les)),
        "primary_criterion": cfg.flag_criteria[0],
        "no_block_flagged": not per_crit[cfg.flag_criteria[0]]["flagged_blocks"],
        "by_criterion": per_crit,
        "flags_by_criterion": {
            c: [b["block"] for b in blocks if b[f"flag[{c}]"]] for c in cfg.criteria
        },
        "correlation_with_single_harm": {r["signal"]: r for r in corr},
        "config": asdict(cfg),
    }
