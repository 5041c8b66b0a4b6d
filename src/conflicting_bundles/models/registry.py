"""Model registry in the style of timm: ``@register_model`` on a factory function,
``create_model(name, **kwargs)``, ``list_models()``.

Unknown names and unknown or missing keyword arguments raise ``ValueError`` with the valid
choices, so a CLI can show the message as is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..registry import Registry

__all__ = [
    "MODELS",
    "check_model_kwargs",
    "create_model",
    "list_models",
    "model_signature",
    "register_model",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", sort=True)


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register a model factory under its function name (or ``name=``).

    Use as ``@register_model`` or ``@register_model(name="resnet")``. Registering a name twice
    is an error (two modules silently shadowing each other is never intended).
    """
    add = MODELS.register(name)
    return add if fn is None else add(fn)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def model_signature(name: str) -> inspect.Signature:
    """The factory's signature (argument names and defaults), e.g. for a CLI listing."""
    return inspect.signature(MODELS.get(name))


def _check_names(name: str, params, kwargs: dict) -> list[str]:
    """The factory's argument names; ValueError for a keyword it does not take."""
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [k for k in kwargs if k not in params]
    if unknown and not takes_any:
        raise ValueError(
            f"model {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"valid arguments: {', '.join(valid)}."
        )
    return valid


def check_model_kwargs(name: str, kwargs: dict) -> dict:
    """``kwargs`` checked against registered model ``name``'s signature: ValueError for an
    unknown model, an argument it does not take, or a value of the wrong type (``width:
    eight``); returns them converted (numbers written as strings, lists for tuples)."""
    from ..configtypes import coerce_value

    if not isinstance(kwargs, dict):
        raise ValueError(
            f"model_kwargs must be a mapping (width: 8, ...), got {type(kwargs).__name__} "
            f"{kwargs!r}."
        )
    params = inspect.signature(MODELS.get(name)).parameters
    _check_names(name, params, kwargs)
    out = dict(kwargs)
    for k, v in kwargs.items():
        p = params.get(k)
        if p is not None and p.annotation is not inspect.Parameter.empty:
            out[k] = coerce_value(f"model_kwargs.{k}", str(p.annotation), v)
    return out


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model: ``create_model("resnet", layers=20, width_mult=0.25)``.

    ``create_model(**model.arch())`` rebuilds a model's structure (fresh weights).
    """
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    valid = _check_names(name, params, kwargs)
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise ValueError(
            f"model {name!r} needs argument(s) {', '.join(missing)}; "
            f"valid arguments: {', '.join(valid)}."
        )
    return factory(**kwargs)
