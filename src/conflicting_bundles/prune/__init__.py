"""Depth pruning for any PyTorch model: find removable blocks, score them (conflicting-bundle
entropy beside published baselines), remove them for real, save/load, heal.

    blocks = find_blocks(model, example=x)              # shape-preserving residual blocks
    scores = get_scorer("conflict").score(model, blocks, batches)   # higher = more removable
    pruned = remove_blocks(model, rank(scores)[:4])      # a smaller model, same interface
    save_pruned(pruned, "pruned/"); load_pruned(factory, "pruned/")
"""

from .discovery import Block, find_blocks
from .heal import evaluate, heal
from .runner import (
    PruneResult,
    compare_scorers,
    load_model,
    prune_model,
    rank,
    time_forward,
    write_compare,
)
from .scorers import (
    ActivationEntropyScorer,
    AngularScorer,
    BlockInfluenceScorer,
    ConflictScorer,
    RandomScorer,
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
)
from .surgery import count_params, load_pruned, remove_blocks, save_pruned

__all__ = [
    "ActivationEntropyScorer",
    "AngularScorer",
    "Block",
    "BlockInfluenceScorer",
    "ConflictScorer",
    "PruneResult",
    "RandomScorer",
    "Scorer",
    "compare_scorers",
    "count_params",
    "evaluate",
    "find_blocks",
    "get_scorer",
    "heal",
    "list_scorers",
    "load_model",
    "load_pruned",
    "prune_model",
    "rank",
    "register_scorer",
    "remove_blocks",
    "save_pruned",
    "time_forward",
    "write_compare",
]
