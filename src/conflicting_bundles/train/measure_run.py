"""measure_run: bundle metrics of every layer of a trained run's model, as training measures."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import runs
from ..data import iterate, load_dataset
from ..measurespec import LayerResult, MeasureSpec
from ..modelmode import evaluating
from ..probes import Probe, resolve_points
from .components import resolve_device, split_validation, w_max
from .config import TrainConfig


def measure_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    all_layers: bool = True,
    n_samples: int = 512,
    criterion: str | None = None,
    kind: str | None = None,
    margin: bool = True,
    data_dir: str | None = None,
    device: str = "cpu",
    write: bool = True,
    factory=None,
    lr: float | None = None,
    batch_size: int | None = None,
) -> list[dict]:
    """Measure a trained run's model (arch.json + checkpoint) the way training does: the first
    ``n_samples`` non-augmented training samples (outside its validation split), the run's lr
    and batch size, the model's w_max. One dict per probe point (layer, num_bundles, entropy,
    conflicting, margin, ...); ``margin`` = metric.conflict_margin (smallest max-norm distance
    between differently labelled samples over the resolution q). Writes measure.csv into the
    run unless ``write=False`` (an OSError then comes after the rows are computed: callers that
    must not lose them pass write=False and write with runs.write_csv themselves). factory:
    the user model factory of a run trained with one (see runs.load_model). lr / batch_size:
    measure as if trained with these (the metric's resolution; default the run's); each row
    says which in ``lr_source`` / ``batch_size_source`` (run / given)."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(runs.load_config(run_dir))
    dev = resolve_device(device)
    model, ckpt = runs.load_model(run_dir, checkpoint, map_location=dev, factory=factory)
    ds = load_dataset(cfg.dataset, "train", data_dir or cfg.data_dir, limit=cfg.train_limit)
    ds, _ = split_validation(ds, cfg.val_split, cfg.val_seed)  # as training measured
    x, y = next(iterate(ds, n_samples, shuffle=False, augment=False, device=dev))  # (N, ...)
    spec = MeasureSpec.from_config(
        cfg, n_samples=len(y), criterion=criterion, kind=kind, lr=lr, batch_size=batch_size
    )
    sources = {
        "lr_source": "run" if lr is None else "given",
        "batch_size_source": "run" if batch_size is None else "given",
    }
    points = resolve_points(model, None, spec.kind)
    points = points if all_layers else points[-1:]
    spec = spec.replace(w_max=w_max(model))
    # One forward; each activation is reduced to its per-layer report at once (the function
    # the lesion signals and prune's conflict scorer use), so memory stays at one layer's
    # activations however deep the model is.
    results: dict[str, LayerResult] = {}

    def on_act(name: str, a: torch.Tensor) -> None:
        results[name] = spec.layer_stats(a, y, num_classes=ds.num_classes, name=name, margin=margin)

    with evaluating(model), torch.no_grad(), Probe(model, points, on_activation=on_act):
        model(x)
    missed = [p.name for p in points if p.name not in results]
    if missed:
        raise RuntimeError(f"probe points {', '.join(missed)} were never reached in the forward.")
    rows = [
        {
            "checkpoint": checkpoint,
            "epoch": int(ckpt["epoch"]),
            "layer": r.name,
            "num_bundles": r.num_bundles,
            "entropy": r.entropy,
            "conflicting": r.conflicting,
            "margin": r.margin,
            "num_samples": r.num_samples,
            "dim": r.dim,
            "criterion": r.criterion,
            "w_max": r.w_max,
            "lr": spec.lr,
            "batch_size": spec.batch_size,
            **sources,
        }
        for r in (results[p.name] for p in points)
    ]
    if write:
        runs.write_csv(run_dir / runs.MEASURE_CSV, rows)
    return rows
