"""One measurement context: everything that decides a bundle measurement besides the model.

The bundle metric of docs/method.md §2 depends on the learning rate and batch size of the
training (through the resolution q ~ ulp(w_max) * bs / lr), the criterion, the probe kind, the
number of samples and w_max. A :class:`MeasureSpec` carries them together, so that train's
per-epoch meter, ``measure_run`` and any later scorer measure a run the way it was trained::

    spec = MeasureSpec.from_run("runs/fnn")             # the run's lr, batch size, criterion...
    spec = MeasureSpec.from_run("runs/fnn", n_samples=512, criterion="raw")   # overrides
    results = spec.run(model, x, y, num_classes=10)     # -> list[LayerResult]
    r = spec.layer_stats(a, y, w_max=w, margin=True)    # one activation (N, D) -> LayerResult
    row.update(spec.to_dict())                          # say what produced a number

:meth:`MeasureSpec.layer_stats` (:func:`layer_result`) is the one per-layer report (bundles,
entropy, flag, margin, w_max) behind ``measure_run``, the lesion signals and prune's conflict
scorer; ``run`` (probes.measure, train's meter) computes the same numbers chunk-wise.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import nn

from .layerstats import LayerResult, layer_result
from .metric import Criterion

__all__ = ["MeasureSpec", "LayerResult", "layer_result"]


@dataclass(frozen=True)
class MeasureSpec:
    """lr, batch_size: of the training (not of the measurement); criterion: a Criterion name
    ("reference" is the paper's); kind: the model's probe kind (None = its default);
    n_samples: the first N non-augmented training samples; w_max: None = the model's current
    largest |parameter|, else this value."""

    lr: float = 1e-3
    batch_size: int = 64
    criterion: str = "reference"
    kind: str | None = None
    n_samples: int = 64
    w_max: float | None = None

    def __post_init__(self) -> None:
        Criterion.parse(self.criterion)  # ValueError for unknown criteria
        if not self.lr > 0 or self.batch_size < 1 or self.n_samples < 1:
            raise ValueError(
                f"MeasureSpec needs lr > 0, batch_size >= 1 and n_samples >= 1, got lr "
                f"{self.lr}, batch_size {self.batch_size}, n_samples {self.n_samples}."
            )

    @classmethod
    def from_config(cls, config, **overrides) -> MeasureSpec:
        """From a TrainConfig or its dict (config.json): lr, batch_size, criterion,
        measure_kind, measure_samples (64 when the run measured nothing); ``overrides`` that
        are None keep the config's value."""
        c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        base = {
            "lr": c.get("lr", cls.lr),
            "batch_size": c.get("batch_size", cls.batch_size),
            "criterion": c.get("criterion", cls.criterion),
            "kind": c.get("measure_kind"),
            "n_samples": c.get("measure_samples") or cls.n_samples,
        }
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown MeasureSpec field(s) {', '.join(unknown)}.")
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **overrides) -> MeasureSpec:
        """From a run directory's config.json (see from_config)."""
        from .runs import load_config

        return cls.from_config(load_config(run_dir), **overrides)

    def replace(self, **changes) -> MeasureSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able fields, the criterion by its canonical name."""
        d = dataclasses.asdict(self)
        d["criterion"] = Criterion.parse(self.criterion).name
        return d

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        layers=None,
        *,
        num_classes: int | None = None,
        w_max: float | None = None,
    ) -> list[LayerResult]:
        """probes.measure on the first n_samples of x (N, ...) / y (N,) with this context.
        layers: None = the model's declared probe points of ``kind``, or anything
        probes.measure accepts (resolved points are used as given). w_max overrides the
        spec's."""
        from .probes import ProbePoint, measure

        resolved = isinstance(layers, list) and all(isinstance(p, ProbePoint) for p in layers)
        return measure(
            model,
            [(x, y)],
            layers,
            kind=None if resolved else self.kind,
            n_samples=self.n_samples,
            lr=self.lr,
            batch_size=self.batch_size,
            criterion=self.criterion,
            num_classes=num_classes,
            w_max=w_max if w_max is not None else self.w_max,
        )

    def layer_stats(
        self,
        a: torch.Tensor,
        y: torch.Tensor,
        *,
        w_max: float | None = None,
        num_classes: int | None = None,
        criterion: str | Criterion | None = None,
        name: str = "",
        margin: bool = False,
    ) -> LayerResult:
        """The per-layer report (:func:`layer_result`) of one activation a (N, ...) with
        labels y (N,) under this context: its lr and batch size, its criterion unless
        ``criterion`` is given, w_max as given else the spec's (one of them is required)."""
        w = w_max if w_max is not None else self.w_max
        if w is None:
            raise ValueError("layer_stats needs w_max: pass w_max= or build the spec with one.")
        return layer_result(
            name,
            a,
            y,
            criterion=self.criterion if criterion is None else criterion,
            w_max=w,
            lr=self.lr,
            batch_size=self.batch_size,
            num_classes=num_classes,
            margin=margin,
        )
