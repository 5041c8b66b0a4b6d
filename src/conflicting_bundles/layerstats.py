"""The per-layer report of the bundle metric: :class:`LayerResult` (bundles, entropy and the
conflict margin of one probe point) and :func:`layer_result`, the one function that computes it
from an activation. Sits right above :mod:`conflicting_bundles.metric` (imports only it), so
probes, the measurement spec and every consumer share it without a circle."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .metric import Criterion, conflict_margin

__all__ = ["LayerResult", "layer_result"]


@dataclass
class LayerResult:
    """Bundle statistics of one probe point: the per-layer report. ``criterion`` names the
    rule that produced them, ``w_max`` the amplitude used (None where not recorded), ``margin``
    the conflict margin (metric.conflict_margin, units of q; None when not computed)."""

    name: str
    num_bundles: int
    entropy: float
    num_samples: int
    dim: int
    bundle_ids: torch.Tensor = field(repr=False)
    sizes: torch.Tensor = field(repr=False)
    criterion: str = "reference"
    w_max: float | None = None
    margin: float | None = None

    @property
    def conflicting(self) -> bool:
        return self.entropy > 0.0

    def as_dict(self) -> dict:
        return {
            "layer": self.name,
            "num_bundles": self.num_bundles,
            "entropy": self.entropy,
            "conflicting": self.conflicting,
            "num_samples": self.num_samples,
            "dim": self.dim,
            "criterion": self.criterion,
            "w_max": self.w_max,
            "margin": self.margin,
        }


def layer_result(
    name: str,
    a: torch.Tensor,
    y: torch.Tensor,
    *,
    criterion: str | Criterion = "reference",
    w_max: float,
    lr: float,
    batch_size: int,
    num_classes: int | None = None,
    margin: bool = False,
) -> LayerResult:
    """The per-layer report of one activation a (N, ...) (flattened to (N, D)) with labels
    y (N,): bundles and entropy under ``criterion`` and, with ``margin``, the conflict margin.
    The one function behind measure_run, the lesion signals and the conflict scorer (called
    through :meth:`MeasureSpec.layer_stats`); :func:`measure` computes the same numbers
    chunk-wise."""
    crit = Criterion.parse(criterion)
    a = a.reshape(a.shape[0], -1)  # (N, D)
    st = crit.stats(a, y, num_classes=num_classes, w_max=w_max, lr=lr, batch_size=batch_size)
    m = conflict_margin(a, y, w_max=w_max, lr=lr, batch_size=batch_size) if margin else None
    return LayerResult(
        name,
        st.num_bundles,
        st.entropy,
        int(a.shape[0]),
        int(a.shape[1]),
        st.bundle_ids,
        st.sizes,
        crit.name,
        float(w_max),
        m,
    )
