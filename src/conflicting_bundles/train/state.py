"""TrainState (what callbacks see), the callback protocol, and BundleMeter (the per-epoch bundle
measurement, docs/method.md §8)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..data import iterate
from ..measurespec import MeasureSpec
from ..probes import LayerResult, resolve_points
from .config import TrainConfig, TrainingDiverged


class TrainState:
    """What callbacks see: ``epoch`` (the epoch being trained, 1-based; at on_train_start the
    number of completed epochs), ``model``, ``optimizer``, ``config``, ``metrics`` (rows so far),
    ``row`` (the row being filled: at on_train_start the init row on a fresh run, else None;
    at on_epoch_end the current epoch's row), ``layer_rows``, ``run_dir``, ``device``,
    ``train_ds``/``val_ds``/``test_ds`` (val_ds None without val_split, test_ds None
    without test_eval), ``num_classes``, ``resumed``; ``train_model`` is the module the
    training step calls (a DistributedDataParallel around ``model`` under torchrun, else
    ``model``). Under torchrun every rank runs every hook: write files on rank 0 only
    (``distributed.is_main``) and make decisions on rank 0 (``distributed.run_on_main``)."""

    def __init__(self, config, model, optimizer, run_dir, device, train_ds, test_ds, num_classes):
        self.config: TrainConfig = config
        self.model: nn.Module = model
        self.optimizer = optimizer
        self.run_dir: Path = run_dir
        self.device = device
        self.train_ds, self.test_ds = train_ds, test_ds
        self.val_ds = None  # the held-out validation part of the training set (val_split)
        self.num_classes = num_classes
        self.epoch = 0
        self.metrics: list[dict] = []
        self.layer_rows: list[dict] = []
        self.row: dict | None = None
        self.resumed = False
        self.stop_reason: str | None = None
        self.train_model: nn.Module = model
        self._measure_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def stop(self, reason: str) -> None:
        """End the run after the current callback hook (the current row is still written)."""
        self.stop_reason = reason

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def measure_batch(self, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first N training samples, without augmentation: x (N, C, H, W), y (N,)."""
        n = n_samples or self.config.measure_samples or 64
        if self._measure_batch is None or len(self._measure_batch[1]) < n:
            self._measure_batch = next(
                iterate(self.train_ds, n, shuffle=False, augment=False, device=self.device)
            )
        x, y = self._measure_batch
        return x[:n], y[:n]

    def measure(
        self,
        layers="last",
        *,
        kind: str | None = None,
        n_samples: int | None = None,
        criterion: str | None = None,
    ) -> list[LayerResult]:
        """Bundle statistics on the first N non-augmented training samples with the run's lr,
        batch size and the model's current w_max. layers: "last" (the last probe point),
        "all" (every declared probe point) or anything ``probes.measure`` accepts. Runs on the
        calling rank only (no collectives): under torchrun wrap it in distributed.run_on_main."""
        spec = self.measure_spec(n_samples=n_samples, criterion=criterion, kind=kind)
        if isinstance(layers, str) and layers in ("last", "all"):
            points = resolve_points(self.model, None, spec.kind)
            layers = points[-1:] if layers == "last" else points
        x, y = self.measure_batch(spec.n_samples)
        return spec.run(self.model, x, y, layers, num_classes=self.num_classes)

    def measure_spec(self, **overrides) -> MeasureSpec:
        """The run's measurement context (lr, batch size, criterion, kind, samples), with
        ``overrides`` (None keeps the run's value)."""
        return MeasureSpec.from_config(self.config, **overrides)


def call_hooks(callbacks, hook: str, state: TrainState) -> None:
    """Call ``hook`` (on_train_start, on_epoch_start, on_epoch_end, on_train_end) of every
    callback that has it. Every callback sees every hook, also after one of them called
    state.stop(): the loop checks state.stopped only between hooks."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


class BundleMeter:
    """The per-epoch bundle measurement (docs/method.md §8): num_bundles and bundle entropy of
    the last probe point (all points with ``all_layers``) at initialisation and after every
    ``every``-th epoch and the last one; fills ``num_bundles``, ``bundle_entropy``,
    ``bundle_layer`` (and ``conflicting_layers``) of the row, per-layer rows in layer_rows."""

    def __init__(self, all_layers: bool = False, every: int = 1):
        self.all_layers, self.every = all_layers, every

    def _measure(self, state: TrainState) -> list[LayerResult]:
        try:
            return state.measure("all" if self.all_layers else "last")
        except ValueError as err:
            if "NaN" not in str(err):
                raise
            # finite weights can still overflow to Inf activations: the run has diverged
            raise TrainingDiverged(
                f"{err} (epoch {state.row['epoch']}). Lower the learning rate (now "
                f"{state.config.lr:g}) and start a new run.",
                state.row["epoch"],
                None,
            ) from err

    def _record(self, state: TrainState) -> None:
        t0 = time.perf_counter()
        # Under torchrun rank 0 measures (on the same samples as a single process) and every
        # rank gets its numbers, so all ranks hold the same rows.
        results = distributed.run_on_main(self._measure, state)
        last = results[-1]
        row = state.row
        row["num_bundles"] = last.num_bundles
        row["bundle_entropy"] = last.entropy
        row["bundle_layer"] = last.name
        if self.all_layers:
            row["conflicting_layers"] = sum(r.conflicting for r in results)
            state.layer_rows.extend(
                {
                    "epoch": row["epoch"],
                    "layer": r.name,
                    "num_bundles": r.num_bundles,
                    "entropy": r.entropy,
                    "conflicting": r.conflicting,
                    "num_samples": r.num_samples,
                }
                for r in results
            )
        row["measure_time"] = time.perf_counter() - t0

    def on_train_start(self, state: TrainState) -> None:
        if state.row is not None:  # fresh run: the row of epoch 0 (initialisation)
            self._record(state)

    def on_epoch_end(self, state: TrainState) -> None:
        e = state.epoch
        if e % self.every == 0 or e == state.config.epochs:
            self._record(state)
