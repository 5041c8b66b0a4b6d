"""Settings, the time budget, the environment record and the per-part JSON files."""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from conflicting_bundles import runs

PARTS = ("correctness", "speed", "scale")


@dataclass
class Settings:
    """What one GPU check runs. ``smoke`` shrinks every size so that the whole script runs on
    a CPU in seconds (CI); the figures of a smoke run say nothing about a GPU."""

    out: Path
    smoke: bool = False
    device: str = "cuda"
    data_dir: str | None = None
    budget_s: float = 420.0  # the whole script, data loading included
    parts: tuple[str, ...] = PARTS
    # sizes (full GPU run; see smoke_settings for the CPU ones)
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    resnet_blocks: tuple[int, ...] = (3, 12, 41, 3)  # resnet-120 / plain-120
    width_mult: float = 1.0
    batch_size: int = 64
    speed_steps: int = 30  # timed steps per speed configuration
    measure_samples: int = 64  # the per-epoch bundle check of train()
    lesion_repeats: int = 15
    lesion_max_k: int = 8  # largest lesion set; the group curves cost repeats x 4 x max_k evals
    lesion_samples: int = 512
    test_limit: int | None = 2000  # test images per lesion evaluation
    autotune_epochs: int = 3
    autotune_steps: int = 3
    train_limit: int | None = None  # training images (None: the whole split)
    train_epochs: int = 120  # at most; the budget usually stops the paper-scale runs earlier
    per_step_s: float | None = None  # measured by the speed part (fp32 train()), used by scale
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        """Seconds of the budget still left."""
        return self.budget_s - (time.perf_counter() - self.started)

    def fit_limit(self, seconds: float, epochs: int, full: int = 60_000) -> int | None:
        """Training images per epoch so that ``epochs`` epochs fit ``seconds`` (a multiple of
        the batch, at least 10 batches); None when the whole split fits or nothing is known."""
        if self.train_limit is not None or not self.per_step_s:
            return self.train_limit
        steps = seconds / (1.2 * epochs * self.per_step_s)  # 20% for evaluation and files
        if steps * self.batch_size >= full:
            return None
        return max(10, int(steps)) * self.batch_size

    def record(self) -> dict:
        d = asdict(self)
        d.pop("started")
        d["out"] = str(self.out)
        return d


def smoke_settings(out: Path, data_dir: str | None = None) -> Settings:
    """The same script at a size a CPU runs in seconds: synthetic MNIST-shaped data, a
    four-block resnet at width 1/8, one epoch, two lesion repeats."""
    return Settings(
        out=out,
        smoke=True,
        device="cpu",
        data_dir=data_dir,
        budget_s=120.0,
        datasets=("synthetic",),
        resnet_blocks=(1, 1, 1, 1),
        width_mult=0.125,
        speed_steps=2,
        measure_samples=32,
        lesion_repeats=2,
        lesion_max_k=2,
        lesion_samples=64,
        test_limit=128,
        autotune_epochs=1,
        autotune_steps=1,
        train_limit=256,
        train_epochs=1,
    )


def environment(device: torch.device) -> dict:
    """Device name, torch / CUDA / cuDNN versions, GPU count: the header of every part."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": sys.version.split()[0],
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of ``fn()`` with the device synchronised on both sides."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def attempt(record: dict, key: str, fn: Callable[[], object]) -> object | None:
    """Run one check; a failure is recorded under ``record[key]`` (type, message, the last
    lines of the traceback) instead of ending the script, so the other checks still run."""
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - a GPU check reports every failure and goes on
        tb = traceback.format_exc().strip().splitlines()[-6:]
        record[key] = {"error": f"{type(e).__name__}: {e}", "traceback": tb}
        print(f"  [{key}] FAILED: {type(e).__name__}: {e}", flush=True)
        return None
    record[key] = value
    return value


def write_part(s: Settings, part: str, device: torch.device, body: dict) -> Path:
    """benchmarks/results/gpu/<part>.json (atomic): environment, settings, the figures."""
    doc = {
        "part": part,
        "smoke": s.smoke,
        "environment": environment(device),
        "settings": s.record(),
        **body,
    }
    path = runs.write_json(Path(s.out) / f"{part}.json", doc)
    print(f"wrote {path}", flush=True)
    return path
