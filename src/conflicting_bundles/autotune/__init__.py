"""Auto-tune (docs/method.md §5): train, detect conflicting layers early, remove them, repeat.

The search is a loop of training *steps*. Each step trains one architecture with a
:class:`ConflictCheck` callback: for epochs < ``check_epochs`` it measures the bundle entropy of
the last probe point (cheap); when that is > 0 it measures every block, decides which blocks to
remove (``variant``), writes the decision atomically and stops the step. The next step builds the
smaller net, with fresh weights and optimizer (the paper) or, with ``restart="warm"``, the
trained weights of the surviving blocks and their optimizer state (our improvement). A step that
reaches the epoch budget without a conflict ends the search. Depth only shrinks, so it ends.

Modules: ``rules`` (decide_removal), ``config`` (AutotuneConfig, resume_diff), ``check`` (the
callback), ``state`` (SearchState, the pure ``advance``, SearchDir, final_run_dir), ``warm``
(weights and optimizer state carried over), ``step`` (one step), ``outputs`` (files, plots,
report), ``search`` (the loop).

Run directory ``out``::

    autotune_state.json   resumable state (atomic): finished steps, current architecture
    steps/step_000/       a training run dir (config, metrics, checkpoints) + decision.json
    steps.csv/.json       the architectures and the per-block entropies that pruned them
    autotune.json         final architecture, accuracy, size/latency/memory of start vs final
    *.png, report.html    plots and the one-page report

Under torchrun every rank runs ``autotune`` with the same arguments: each step trains data
parallel (train.py), rank 0 measures and decides (the decision is broadcast, so every rank builds
the same pruned architecture) and writes every file; the others read only after a barrier.
"""

from .check import ConflictCheck
from .config import AutotuneConfig, resume_diff
from .outputs import AutotuneResult
from .rules import RESTARTS, VARIANTS, Decision, decide_removal
from .search import SearchDidNotConverge, autotune
from .state import SearchDir, SearchState, StepOutcome, WarmStart, advance, final_run_dir
from .warm import remap_optimizer_state

__all__ = [
    "RESTARTS",
    "VARIANTS",
    "AutotuneConfig",
    "AutotuneResult",
    "ConflictCheck",
    "Decision",
    "SearchDidNotConverge",
    "SearchDir",
    "SearchState",
    "StepOutcome",
    "WarmStart",
    "advance",
    "autotune",
    "decide_removal",
    "final_run_dir",
    "remap_optimizer_state",
    "resume_diff",
]
