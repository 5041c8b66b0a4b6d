"""User model factories named by an import path, "package.module:function".

``cbundles train --model my_models:make_net --arg width=64`` builds ``make_net(width=64, ...)``
(the dataset's ``in_shape``/``num_classes`` are filled in when the function takes them).
arch.json records the path and arguments, but nothing ever imports a path read from a run
directory: loading such a run needs the path named again (``--factory``, ``factory=``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from torch import nn

__all__ = ["import_factory", "is_factory_path"]


def is_factory_path(name: str) -> bool:
    """True for a user model given as an import path "package.module:function"."""
    return ":" in name


def import_factory(path: str) -> Callable[..., nn.Module]:
    """The callable named by "package.module:function" (the current directory is searched
    too). Only ever called with a path the user typed, never one read from a run directory."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"a model factory is given as package.module:function, got {path!r}.")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"cannot import {module!r} for the model factory {path!r}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model factory {path!r}: {module} has no {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model factory {path!r} is not callable.")
    return obj
