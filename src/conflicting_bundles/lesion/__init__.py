"""Lesion study (docs/method.md §6) on a trained net, with the position control the small-scale
trials call for (docs/method.md §9).

Lesioning a block at inference replaces it by its shortcut (``model.lesioned``: the identity, or
the projection of a stride-2 block). The study measures, on the first ``samples`` non-augmented
training samples in eval mode:

- per block: the bundle entropy (and number of bundles, flag) under every criterion of
  ``criteria`` (reference, raw, coarse:K, rel:R ...), the margin diagnostic of §9
  (``metric.conflict_margin``: smallest max-norm distance of two differently labelled samples
  over the reference resolution q), and the test accuracy with that block alone lesioned;
- for every flag criterion and k = 1..K: ``repeats`` random sets of k blocks drawn from the
  flagged ("conflicting") blocks, the unflagged ones, all blocks, and a position-matched control
  (each flagged block of the set replaced by the unflagged block nearest to it in forward order),
  lesioned together; mean and std of the test accuracy;
- the rank correlation of each block's conflict signal with its single-lesion harm, with and
  without controlling for the block index (partial Spearman), since lesion harm depends strongly
  on position.

Units: every accuracy, harm and loss is a fraction in 0..1 (0.01 = one accuracy point), as in
train.py's ``test_acc``; tables, plots and reports show them in % and points.

Outputs (``write_outputs``): lesion_blocks.csv, lesion_curves.csv, lesion_corr.csv,
lesion_summary.json, lesion.png (the group curves with std bands, one panel per flag criterion),
lesion_single.png (single-block harm beside entropy and margin). Accuracies of lesion sets are
cached in lesion_cache.json (atomic writes, tagged with the model and test set they belong to),
so an interrupted study resumes without re-evaluating and criteria that flag the same blocks
share evaluations.

Modules: config (LesionConfig, LesionResult, Group), stats (Spearman, partial Spearman),
signals (per-block signals, accuracy, matched controls), cache (accuracies of lesion sets on
disk), study (lesion_study), progress (the plain "lesion i/n sets  elapsed ..  eta .." lines),
summary (correlations, removable fractions), run (lesion_run on a run directory, locked while it
runs; the run's own test_limit unless cfg.test_limit is given), outputs (CSV/JSON/PNG files and
tables).
"""

from .cache import AccuracyCache
from .config import ALL, DEFAULT_CRITERIA, GROUPS, Group, LesionConfig, LesionResult
from .outputs import SUMMARY_JSON, plot_lesion, print_lesion, write_outputs
from .run import lesion_run
from .signals import accuracy, block_signals, matched_controls
from .stats import partial_spearman, pvalue, spearman
from .study import Plan, lesion_study, plans
from .summary import correlations, summarize

__all__ = [
    "ALL",
    "DEFAULT_CRITERIA",
    "GROUPS",
    "SUMMARY_JSON",
    "AccuracyCache",
    "Group",
    "LesionConfig",
    "LesionResult",
    "Plan",
    "accuracy",
    "block_signals",
    "correlations",
    "lesion_run",
    "lesion_study",
    "matched_controls",
    "partial_spearman",
    "plans",
    "plot_lesion",
    "print_lesion",
    "pvalue",
    "spearman",
    "summarize",
    "write_outputs",
]
