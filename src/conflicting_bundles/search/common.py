"""What every search method shares: the depth ladder, one training with the start's budget
(cached in the work directory, so methods that pick the same candidate share it and an
interrupted benchmark resumes), the single test evaluation, and the cost of the final net.

The test set is read in one place only, :func:`test_accuracy`; training runs use
``TrainConfig(test_eval=False)`` and a validation split, so every choice sees training and
validation data only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import runs
from ..cost import cost_report
from ..data import dataset_info, iterate, load_dataset
from ..models import create_model
from ..train import RUNTIME_FIELDS, TrainConfig, evaluate, load_splits, train
from .records import SearchResult, SearchStart

FNN_LADDER = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
CONV_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)  # of the start's blocks per stage (at least 1)
COST_FILE = "search_cost.json"  # the wall time this module measured for a cached training

Size = int | tuple[int, ...]


def ladder(start: SearchStart) -> list[Size]:
    """Candidate depths, shallow to deep. FNN: 1, 2, 3, 5, ..., 89 up to the start depth
    (the start depth itself when it is shallower than 1). Conv: the start's blocks per stage
    scaled by 0, 1/4, 1/2, 3/4 and 1 (rounded, at least 1 per stage), duplicates dropped."""
    if start.family == "fnn":
        return [d for d in FNN_LADDER if d <= start.depth] or [start.depth]
    out: list[tuple[int, ...]] = []
    for f in CONV_FRACTIONS:
        v = tuple(max(1, round(b * f)) if b else 0 for b in start.blocks)
        if v not in out:
            out.append(v)
    return out


def size_name(size: Size) -> str:
    return str(size) if isinstance(size, int) else "-".join(map(str, size))


def model_name(start: SearchStart) -> str:
    return start.family


def train_config(start: SearchStart, size: Size, out: Path, **overrides) -> TrainConfig:
    """The one training recipe every candidate gets (the start's budget, no test set)."""
    b = start.budget
    cfg = TrainConfig(
        model=model_name(start),
        model_kwargs=start.model_kwargs(size),
        dataset=start.dataset,
        data_dir=start.data_dir,
        epochs=b.epochs,
        batch_size=b.batch_size,
        optimizer=b.optimizer,
        lr=b.lr,
        seed=start.seed,
        train_limit=b.train_limit,
        val_split=b.val_split,
        val_seed=b.val_seed,
        test_eval=False,
        measure_samples=0,
        threads=start.threads,
        device=start.device,
        out=str(out),
        tensorboard=False,
        progress=start.progress,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@dataclass
class Trained:
    """One finished training: its directory, final weights, validation accuracy of the final
    weights, epochs trained, wall and CPU seconds (measured when it ran, also when reused)."""

    run_dir: Path
    model: nn.Module
    val_acc: float | None
    epochs: int
    wall_s: float
    cpu_s: float = 0.0


def last_val_acc(run_dir: Path) -> float | None:
    """Validation accuracy of the run's last evaluated epoch (the final weights)."""
    vals = [r["val_acc"] for r in runs.load_metrics(run_dir) if r.get("val_acc") is not None]
    return vals[-1] if vals else None


def epochs_trained(run_dir: Path) -> int:
    return max((int(r["epoch"]) for r in runs.load_metrics(run_dir)), default=0)


def _same_config(run_dir: Path, cfg: TrainConfig) -> bool:
    try:
        stored = runs.load_config(run_dir)
    except (runs.RunDirError, OSError, ValueError):
        return False
    want = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    kw = stored.get("model_kwargs") or {}
    same_kw = all(kw.get(k) == v for k, v in cfg.model_kwargs.items())
    return same_kw and all(stored.get(k) == v for k, v in want.items() if k != "model_kwargs")


def train_candidate(start: SearchStart, size: Size, work_dir: Path) -> Trained:
    """Train ``size`` with the start's budget into work_dir/runs/<size>, or reuse a finished
    run of the same config there (its recorded wall and CPU time are reported)."""
    run_dir = Path(work_dir) / "runs" / f"{model_name(start)}-{size_name(size)}"
    return train_to(start, size, run_dir, start.budget.epochs)


def _cost(run_dir: Path) -> dict:
    try:
        d = json.loads((run_dir / COST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def train_to(start: SearchStart, size: Size, run_dir: Path, epochs: int) -> Trained:
    """``size`` trained for ``epochs`` epochs in total in ``run_dir``: reused when it holds
    exactly that many, resumed (continued, same data order as one longer run) when it holds
    fewer, trained from scratch otherwise. wall_s/cpu_s add up every part (search_cost.json
    keeps the running totals per completed epoch count)."""
    cfg = train_config(start, size, run_dir, epochs=epochs)
    same = _same_config(run_dir, cfg)
    done = epochs_trained(run_dir) if same else 0
    cost = _cost(run_dir) if same else {}
    stopped = cost.get("status") == "diverged" and cost.get("epochs") == done  # as good as done
    if same and (done == epochs or stopped) and cost.get("epochs") == done and done > 0:
        model, _ = runs.load_model(run_dir, "last")
        wall, cpu = float(cost["wall_s"]), float(cost.get("cpu_s", 0.0))
        return Trained(run_dir, model, last_val_acc(run_dir), done, wall, cpu)
    resume = (
        same
        and 0 < done < epochs
        and cost.get("epochs") == done
        and (run_dir / "checkpoints" / "last.pt").exists()
    )
    base_w, base_c = (float(cost["wall_s"]), float(cost.get("cpu_s", 0.0))) if resume else (0, 0)
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(cfg, resume=resume, force=not resume)
    wall = base_w + time.perf_counter() - t0
    cpu = base_c + time.process_time() - c0
    done = epochs_trained(run_dir)
    runs.write_json(
        run_dir / COST_FILE, {"wall_s": wall, "cpu_s": cpu, "epochs": done, "status": res.status}
    )
    model = res.model.to("cpu").eval()
    return Trained(run_dir, model, last_val_acc(run_dir), done, wall, cpu)


def train_part(start: SearchStart):
    """The training part of the split (what training and every score may see)."""
    cfg = train_config(start, start.size, Path("unused"))
    train_ds, _, _ = load_splits(cfg)
    return train_ds


def first_batch(ds, n: int, *, shuffle: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of ``ds`` in evaluation preprocessing: x (n, C, H, W), y (n,)."""
    x, y = next(iterate(ds, n, shuffle=shuffle, augment=False, seed=seed, epoch=0))
    return x, y


def fresh_model(start: SearchStart, size: Size) -> nn.Module:
    """The candidate at initialisation, seeded with the run seed (as training seeds it)."""
    info = dataset_info(start.dataset)
    kw = start.model_kwargs(size)
    kw["num_classes"] = info.num_classes
    kw["in_shape"] = list(info.in_shape)
    torch.manual_seed(start.seed)
    return create_model(model_name(start), **kw)


def test_accuracy(model: nn.Module, start: SearchStart) -> float:
    """The single test evaluation of a final network (call it once per method)."""
    ds = load_dataset(start.dataset, "test", start.data_dir, limit=start.budget.test_limit)
    model = model.to("cpu")
    return evaluate(model, ds, torch.device("cpu"))[1]


def finish(
    method: str,
    criterion: str | None,
    start: SearchStart,
    model: nn.Module,
    val_acc: float | None,
    epochs: int,
    trainings: int,
    wall_s: float,
    details: dict | None = None,
    cpu_s: float | None = None,
) -> SearchResult:
    """The SearchResult of a final network: cost measured, test set evaluated once."""
    info = dataset_info(start.dataset)
    threads = torch.get_num_threads()
    if start.threads:
        torch.set_num_threads(start.threads)
    model = model.to("cpu").eval()
    c = cost_report(model, tuple(info.in_shape), info.num_classes)
    start_params = sum(
        p.numel() for p in fresh_model(start, start.size).parameters() if p.requires_grad
    )
    test_acc = test_accuracy(model, start)
    torch.set_num_threads(threads)
    arch = model.arch()
    size = arch["depth"] if start.family == "fnn" else list(arch["blocks"])
    return SearchResult(
        method=method,
        start=start.label,
        dataset=start.dataset,
        seed=start.seed,
        final_arch=arch,
        size=size,
        params=c["params"],
        start_params=start_params,
        latency_ms_b1=c["latency_ms_b1"],
        latency_ms_b64=c["latency_ms_b64"],
        val_acc=val_acc,
        test_acc=test_acc,
        epochs=epochs,
        trainings=trainings,
        wall_s=wall_s,
        criterion=criterion,
        cpu_s=cpu_s,
        details=details or {},
    )
