"""Top-level imports: every public name resolves, `train`/`autotune` are callable whichever way
they are imported, and `import conflicting_bundles` stays light (lazy imports)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import conflicting_bundles as cb

HEAVY = tuple(f"conflicting_bundles.{m}" for m in ("train", "models", "data", "prune", "autotune"))
HEAVY += ("matplotlib", "rich")


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.strip()


def test_every_public_name_resolves():
    for name in cb.__all__:
        assert getattr(cb, name) is not None, name
    assert set(cb.__all__) <= set(dir(cb))


def test_functions_and_classes_are_the_real_ones():
    from conflicting_bundles.autotune import AutotuneConfig, autotune
    from conflicting_bundles.data import from_torch, load_dataset
    from conflicting_bundles.lesion import lesion_study
    from conflicting_bundles.models import create_model, list_models
    from conflicting_bundles.prune import prune_model
    from conflicting_bundles.train import TrainConfig, train

    assert cb.create_model is create_model and cb.list_models is list_models
    assert cb.TrainConfig is TrainConfig and cb.AutotuneConfig is AutotuneConfig
    assert cb.lesion_study is lesion_study and cb.prune_model is prune_model
    assert cb.load_dataset is load_dataset and cb.from_torch is from_torch
    # the sub-package is callable and calls its function
    assert callable(cb.train) and "config" in inspect.signature(cb.train).parameters
    assert inspect.signature(cb.train) == inspect.signature(train)
    assert callable(cb.autotune) and inspect.signature(cb.autotune) == inspect.signature(autotune)
    assert cb.create_model("fnn", width=4, depth=2).block_names() == ["hidden.0", "hidden.1"]


def test_import_is_light_and_order_does_not_matter():
    code = (
        "import sys, conflicting_bundles as cb; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert _python(code) == "[]"
    # the sub-module imported first (as other modules of the project do), then the name
    code = (
        "import conflicting_bundles.train as m; from conflicting_bundles import train, "
        "TrainConfig; print(callable(train), m.TrainConfig is TrainConfig, train is m)"
    )
    assert _python(code) == "True True True"
