"""The ``calibrated`` criterion (issue 10 §3): bundles of activation *directions*.

Two samples share a bundle when the angle between their activation vectors is small: the
Euclidean distance of the unit vectors ``u = a / ||a||`` is at most ``radius`` (all-zero rows
stay zero, so dead samples bundle with each other and with nothing else). Bundles are the
connected components of that "closer than radius" graph (single linkage), so the result does
not depend on the order of the samples, and the bundle entropy is > 0 exactly when two
differently labelled samples lie within ``radius`` of each other. It is scale-free: neither
w_max, the learning rate nor the size of the activations enters.

Why directions: a deep FNN that degrades without dead ReLUs maps its inputs onto nearly
parallel vectors in the last hidden layer (rank collapse), so the smallest angle between
differently labelled samples drops by one to two orders of magnitude, while the reference
criterion (float32 resolution of w_max - a*lr/bs) still tells every sample apart.

Protocol and frozen values (docs/calibrated.md; experiments/detector_table.py):
- tuned on MNIST seed 0 only: the 6 x 6 FNN grid (widths 5-100, depths 1-50, 5 epochs on the
  first 20,000 training samples), last hidden layer, the first 64 non-augmented training
  samples (the sample count auto-tune uses); a net is degraded when its VALIDATION accuracy
  (the last 5,000 training samples, never trained on) is more than 5 points below the best
  net of the same width. The test set was not used.
- candidates compared there: rel:R (max-norm tolerance relative to max |a|), max-norm and L2
  distances relative to the mean row norm, dead-unit share, share of samples in non-singleton
  bundles, effective rank, 1-NN accuracy, and this angular distance. On the tuning grid the
  smallest inter-class unit-vector distance was <= 0.050 for 16 of the 18 degraded nets and
  >= 0.063 for all 18 healthy ones (the 2 others, 0.106-0.108, are within 0.6 points of the
  degradation line); every other candidate overlapped more (rel:0.01 flagged 12/18 degraded
  nets, coarse:256 16/18 but with 7/18 false alarms).
- ``RADIUS = 0.056``: the midpoint of that gap (0.050, 0.063), rounded; about 3.2 degrees.
  Frozen before any held-out evaluation; never retuned.
- Known miss, seen on the tuning data before freezing: plain conv nets with BatchNorm that do
  not train (plain-30 at width 1/8, MNIST seed 0, 3 epochs on 10k samples: 12% validation
  accuracy) keep well-spread directions (smallest distance 0.24 at the last block after
  training; not flagged at initialisation either), so this criterion does not flag them.

The radius was chosen for N = 64 samples: with more samples the smallest distance shrinks and
the criterion flags more (name the sample count in reports).
"""

from __future__ import annotations

import torch

from .metric import GROUPINGS, BundleStats, bundle_entropy_from_ids

__all__ = [
    "RADIUS",
    "TUNED_SAMPLES",
    "angular_groups",
    "angular_margin",
    "calibrated_stats",
    "unit_rows",
]

RADIUS = 0.056  # frozen: unit-vector L2 distance below which two samples share a bundle
TUNED_SAMPLES = 64  # the sample count the radius was tuned for


def unit_rows(a: torch.Tensor) -> torch.Tensor:
    """a (N, D) float32 -> (N, D) float64 rows scaled to unit L2 norm; zero rows stay zero."""
    a = a.to(torch.float64)
    norm = torch.linalg.vector_norm(a, dim=1, keepdim=True)  # (N, 1)
    return torch.where(norm > 0, a / norm.clamp_min(1e-300), torch.zeros_like(a))


def _components(n: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Connected components of an undirected graph on n nodes given by edges (src, dst):
    (n,) int64, each node labelled with the smallest node index of its component."""
    lab = torch.arange(n, dtype=torch.int64)
    while True:
        new = lab.clone()
        new.scatter_reduce_(0, src, lab[dst], reduce="amin")
        new.scatter_reduce_(0, dst, lab[src], reduce="amin")
        new = new[new]  # pointer jumping: halves the remaining path lengths
        if torch.equal(new, lab):
            return lab
        lab = new


def angular_groups(
    a: torch.Tensor, radius: float = RADIUS, chunk_rows: int = 1024
) -> tuple[torch.Tensor, int]:
    """Bundles of the rows of ``a`` ((N, D) float32) under ||u_i - u_j||_2 <= radius, u the unit
    rows, by single linkage. Exact duplicates of u are merged first (torch.unique), so a
    collapsed layer costs one distance matrix over its distinct directions.

    Returns (ids (N,) int64 numbered by first appearance, number of bundles)."""
    u = unit_rows(a)  # (N, D)
    _, dup = torch.unique(u + 0.0, dim=0, return_inverse=True)  # (N,) ids of equal directions
    g0 = int(dup.max()) + 1
    first = torch.full((g0,), u.shape[0], dtype=torch.int64)
    first.scatter_reduce_(0, dup, torch.arange(u.shape[0]), reduce="amin")
    reps = u[first]  # (g0, D) one row per distinct direction
    src, dst = [], []
    for s in range(0, g0, chunk_rows):
        d = torch.cdist(reps[s : s + chunk_rows], reps)  # (c, g0) float64
        i, j = torch.nonzero(d <= radius, as_tuple=True)
        keep = i + s < j  # each undirected edge once, no self loops
        src.append(i[keep] + s)
        dst.append(j[keep])
    lab = _components(g0, torch.cat(src), torch.cat(dst))[dup]  # (N,) smallest rep index
    _, inv = torch.unique(lab, return_inverse=True)
    g = int(inv.max()) + 1
    # renumber by first appearance (the convention of every BundleStats)
    first_seen = torch.full((g,), u.shape[0], dtype=torch.int64)
    first_seen.scatter_reduce_(0, inv, torch.arange(u.shape[0]), reduce="amin")
    rank = torch.empty(g, dtype=torch.int64)
    rank[torch.argsort(first_seen)] = torch.arange(g)
    return rank[inv], g


def calibrated_stats(
    a: torch.Tensor, labels: torch.Tensor, num_classes: int, radius: float = RADIUS
) -> BundleStats:
    """BundleStats of validated activations ``a`` ((N, D) float32, finite) and ``labels``
    ((N,) int64 in [0, num_classes)) under the calibrated (angular) criterion."""
    ids, g = angular_groups(a.detach().cpu(), radius)
    ent, sizes = bundle_entropy_from_ids(ids, labels.detach().cpu(), g, num_classes)
    dev = a.device
    return BundleStats(num_bundles=g, entropy=ent, bundle_ids=ids.to(dev), sizes=sizes.to(dev))


def angular_margin(a: torch.Tensor, labels: torch.Tensor, chunk_rows: int = 1024) -> float:
    """Smallest unit-vector L2 distance between two differently labelled rows of ``a``
    ((N, D)); the calibrated criterion is conflicting exactly when it is <= RADIUS. inf when
    all labels are equal."""
    u = unit_rows(a.detach().reshape(a.shape[0], -1).cpu())
    y = labels.detach().cpu().reshape(-1)
    best = float("inf")
    for s in range(0, u.shape[0], chunk_rows):
        d = torch.cdist(u[s : s + chunk_rows], u)  # (c, N)
        diff = y[s : s + chunk_rows, None] != y[None, :]
        if bool(diff.any()):
            best = min(best, float(d[diff].min()))
    return best


GROUPINGS["calibrated"] = calibrated_stats  # metric.Criterion("calibrated").stats calls it
