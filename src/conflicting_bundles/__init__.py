"""conflicting-bundles: find the layers of a deep network that form conflicting bundles, and
remove them (Peer, Stabinger, Rodriguez-Sanchez 2021). Specification: docs/method.md.

    from conflicting_bundles import TrainConfig, train, create_model, bundle_stats, measure

The metric and probes are imported at once (they need torch only); everything else (models,
data, training, auto-tune, lesion study, pruning, reports) is imported on first use, so
``import conflicting_bundles`` stays light.

``train`` and ``autotune`` name both a function and the sub-package that holds it: the
sub-package is callable and calls its function, so ``from conflicting_bundles import train;
train(cfg)`` works and ``import conflicting_bundles.train as m; m.TrainConfig`` still gives the
module.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

from . import calibrated  # noqa: F401 - registers the calibrated criterion with metric
from .metric import (
    BundleStats,
    Criterion,
    bundle_stats,
    conflict_margin,
    resolution,
    weight_amplitude,
)
from .probes import LayerResult, ProbePoint, Tap, measure, probe

__version__ = "0.1.0"

# public name -> (module, attribute) imported on first access
_LAZY: dict[str, tuple[str, str]] = {
    "create_model": (".models", "create_model"),
    "list_models": (".models", "list_models"),
    "register_model": (".models", "register_model"),
    "TrainConfig": (".train", "TrainConfig"),
    "AutotuneConfig": (".autotune", "AutotuneConfig"),
    "lesion_study": (".lesion", "lesion_study"),
    "LesionConfig": (".lesion", "LesionConfig"),
    "prune_model": (".prune", "prune_model"),
    "load_dataset": (".data", "load_dataset"),
    "dataset_info": (".data", "dataset_info"),
    "list_datasets": (".data", "list_datasets"),
    "ArrayDataset": (".data", "ArrayDataset"),
    "from_torch": (".data", "from_torch"),
    "build_report": (".runreport", "build_report"),
}
# sub-packages whose main function has their own name
_CALLABLE_MODULES = ("train", "autotune")

__all__ = [
    "ArrayDataset",
    "AutotuneConfig",
    "BundleStats",
    "Criterion",
    "LayerResult",
    "LesionConfig",
    "ProbePoint",
    "Tap",
    "TrainConfig",
    "__version__",
    "autotune",
    "build_report",
    "bundle_stats",
    "conflict_margin",
    "create_model",
    "dataset_info",
    "from_torch",
    "lesion_study",
    "list_datasets",
    "list_models",
    "load_dataset",
    "measure",
    "probe",
    "prune_model",
    "register_model",
    "resolution",
    "train",
    "weight_amplitude",
]


class CallableModule(types.ModuleType):
    """A module that, called, calls its function of the same name (``train.train``)."""

    def _main(self):
        return getattr(self, self.__name__.rsplit(".", 1)[1])

    def __call__(self, *args, **kwargs):
        return self._main()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._main())


class _Package(types.ModuleType):
    """This package: makes ``train``/``autotune`` callable however they are first imported
    (the import system sets the sub-module as an attribute here)."""

    def __setattr__(self, name: str, value) -> None:
        if (
            name in _CALLABLE_MODULES
            and isinstance(value, types.ModuleType)
            and type(value) is types.ModuleType
        ):
            value.__class__ = CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
