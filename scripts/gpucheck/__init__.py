"""The GPU check (issue 11): one script that, on one CUDA device, checks that the project gives
the same answers there, measures what our machinery costs, and runs the paper's scale as far as
a time budget reaches. See docs/scale-out.md ("A lent GPU") for how to run it on a machine that
receives a copy of the working tree.

    PYTHONPATH=scripts python -m gpucheck --pack-data gpu-data       # here: data to carry
    PYTHONPATH=scripts python -m gpucheck --data-dir gpu-data        # there: <= 7 minutes
    PYTHONPATH=scripts python -m gpucheck --smoke --out /tmp/gpu     # CPU, seconds (CI)

Writes one JSON file per part into ``--out`` (default benchmarks/results/gpu/):
correctness.json (part 1), speed.json (part 2), scale.json (part 3), each with the device
name, torch/CUDA versions and the settings. Modules: common (settings, budget, files),
correctness, speed, scale, pack (--pack-data), cli (arguments).
"""

from .common import PARTS, Settings, smoke_settings
from .pack import pack_data

__all__ = ["PARTS", "Settings", "main", "pack_data", "run_check", "smoke_settings"]


def __getattr__(name: str):
    if name in ("main", "run_check"):
        from . import cli

        return getattr(cli, name)
    raise AttributeError(name)
