"""Depth search: auto-tune against the alternatives, behind one interface (docs/search.md).

from conflicting_bundles.search import Budget, SearchStart, create_search
start = SearchStart("fnn", width=25, depth=100, dataset="mnist", budget=Budget(epochs=5))
result = create_search("oracle-depth").run(start, "runs/search")   # -> SearchResult
"""

from . import halving as _halving  # noqa: F401  (registers sh-ladder, cb-sh, random)
from . import methods as _methods  # noqa: F401  (registers the methods)
from .common import ladder, test_accuracy
from .compare import print_comparison, run_methods, write_outputs
from .naswot import hamming_kernel, kernel_logdet, naswot_score, relu_codes
from .records import CONV_START, FNN_START, VAL_SPLIT_DEFAULTS, Budget, SearchResult, SearchStart
from .registry import SearchMethod, create_search, list_searches, register_search

__all__ = [
    "CONV_START",
    "FNN_START",
    "VAL_SPLIT_DEFAULTS",
    "Budget",
    "SearchMethod",
    "SearchResult",
    "SearchStart",
    "create_search",
    "hamming_kernel",
    "kernel_logdet",
    "ladder",
    "list_searches",
    "naswot_score",
    "print_comparison",
    "register_search",
    "relu_codes",
    "run_methods",
    "test_accuracy",
    "write_outputs",
]
