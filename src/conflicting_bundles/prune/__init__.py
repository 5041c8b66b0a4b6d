"""Depth pruning for any PyTorch model: find removable blocks, score them (conflicting-bundle
entropy beside published baselines), remove them for real, save/load, heal.

    blocks = find_blocks(model, example=x)              # shape-preserving residual blocks
    scores = get_scorer("conflict").score(model, blocks, batches)   # higher = more removable
    pruned = remove_blocks(model, rank(scores)[:4])      # a smaller model, same interface
    save_pruned(pruned, "pruned/"); load_pruned(factory, "pruned/")
"""

from .baselines import (
    IterativeResult,
    LossScorer,
    RandomScorer,
    ReverseOrderScorer,
    calibration_loss,
    iterative_prune,
    output_features,
)
from .discovery import Block, find_blocks
from .heal import evaluate, heal, trainable_count
from .inputs import ImagePrep, read_sentences, text_batches
from .loading import build_spec, load_model
from .runner import (
    SCORERS,
    PruneResult,
    compare_scorers,
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
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
)
from .surgery import count_params, load_pruned, remove_blocks, save_pruned

__all__ = [
    "SCORERS",
    "ActivationEntropyScorer",
    "AngularScorer",
    "Block",
    "BlockInfluenceScorer",
    "ConflictScorer",
    "ImagePrep",
    "IterativeResult",
    "LossScorer",
    "PruneResult",
    "RandomScorer",
    "ReverseOrderScorer",
    "Scorer",
    "build_spec",
    "calibration_loss",
    "compare_scorers",
    "count_params",
    "evaluate",
    "find_blocks",
    "get_scorer",
    "heal",
    "iterative_prune",
    "list_scorers",
    "load_model",
    "load_pruned",
    "output_features",
    "prune_model",
    "rank",
    "read_sentences",
    "register_scorer",
    "remove_blocks",
    "save_pruned",
    "text_batches",
    "time_forward",
    "trainable_count",
    "write_compare",
]
