"""The eval-mode context every module that runs a model shares (issue 22, item 6).

    with evaluating(model):      # model.eval() for the block
        ...                      # the caller's train/eval mode is restored after, also on error

This module is the bottom layer: it imports nothing from the package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the ``with`` block; its previous mode restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
