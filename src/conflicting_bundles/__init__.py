"""conflicting-bundles: find the layers of a deep network that form conflicting bundles, and
remove them (Peer, Stabinger, Rodriguez-Sanchez 2021)."""

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

__all__ = [
    "BundleStats",
    "Criterion",
    "LayerResult",
    "ProbePoint",
    "Tap",
    "__version__",
    "bundle_stats",
    "conflict_margin",
    "measure",
    "probe",
    "resolution",
    "weight_amplitude",
]
