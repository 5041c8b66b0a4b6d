"""Bundles and bundle entropy (docs/method.md §2) on tensors.

Imports torch, numpy and rowgroups only: no nn.Module, no I/O. Every other part of the project
calls :func:`bundle_stats`; a :class:`Criterion` names the grouping rule of a result.

Grouping is exact (rowgroups.group_rows): 64-bit row hashes propose groups, each is verified
element by element, a sort-based refinement takes over on a hash collision. All-distinct rows
cost 64 sampled columns, duplicated rows about three memory passes. On CPU it runs with at most
rowgroups.CPU_THREADS (1) torch threads, restoring the caller's: the work is memory-bound and
extra threads are slow on a busy machine; results never depend on the thread count."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .rowgroups import bounded_threads, group_rows, group_rows_exact

__all__ = [
    "BundleStats",
    "Criterion",
    "bundle_stats",
    "bundle_entropy_from_ids",
    "conflict_margin",
    "group_rows",
    "resolution",
    "weight_amplitude",
]

MODES = ("reference", "raw", "tolerance")

# Largest column block (bytes, as int64 keys) that group_rows materialises at once.
_CHUNK_BYTES = 64 * 2**20
# largest dense (bundles x classes) count table; beyond it counts are sparse (O(N))
DENSE_COUNT_LIMIT = 1 << 24


@dataclass
class BundleStats:
    """Result of :func:`bundle_stats`.

    num_bundles: number of bundles (distinct rows under the mode's equality).
    entropy: bundle entropy, (1/N) sum_b |b| H(b); 0 iff every bundle is label-pure.
    bundle_ids: (N,) int64, bundles numbered 0.. in order of first appearance.
    sizes: (num_bundles,) int64, samples per bundle.
    """

    num_bundles: int
    entropy: float
    bundle_ids: torch.Tensor
    sizes: torch.Tensor

    @property
    def conflicting(self) -> bool:
        return self.entropy > 0.0

    @property
    def num_samples(self) -> int:
        return int(self.bundle_ids.numel())

    def as_dict(self) -> dict:
        return {
            "num_bundles": self.num_bundles,
            "entropy": self.entropy,
            "conflicting": self.conflicting,
            "num_samples": self.num_samples,
            "largest_bundle": int(self.sizes.max()) if self.sizes.numel() else 0,
        }


def weight_amplitude(model: torch.nn.Module) -> float:
    """w_max: the largest |p| over all trainable parameters (buffers such as BN running stats
    are not parameters and so are excluded). 0.0 for a model without trainable parameters."""
    w = 0.0
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.numel():
                w = max(w, float(p.detach().abs().max()))
    return w


def resolution(w_max: float, lr: float = 1e-3, batch_size: int = 64) -> float:
    """q ~ ulp(w_max) * bs / lr: the per-component activation difference below which the
    reference criterion cannot tell two samples apart (docs/method.md §9)."""
    ulp = float(np.spacing(np.float32(abs(w_max)))) if w_max else float(np.finfo(np.float32).tiny)
    return ulp * batch_size / lr


# --------------------------------------------------------------------------------- validation
def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (ValueError, TypeError) as e:
            raise TypeError(
                f"{what}: cannot convert a {type(x).__name__} to an array ({e})."
            ) from e
    raise TypeError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}.")


def _prepare(acts, labels, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    a = _as_tensor(acts, "acts")
    y = _as_tensor(labels, "labels")
    if a.dim() == 0 or a.shape[0] == 0:
        raise ValueError("acts is empty: bundle statistics need at least one sample (N >= 1).")
    n = a.shape[0]
    if y.dim() != 1:
        y = y.reshape(-1) if y.numel() == n else y
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(
            f"labels must have shape (N,) = ({n},) to match acts of shape {tuple(a.shape)}, "
            f"got {tuple(y.shape)}."
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        if y.is_floating_point() and bool(torch.all(y == torch.round(y))):
            pass  # 3.0 is accepted as class 3; 2.5 is not.
        else:
            raise TypeError(f"labels must be integers (got dtype {y.dtype}); pass class indices.")
    y = y.to(device=a.device, dtype=torch.int64)
    if bool((y < 0).any()):
        raise ValueError(f"labels must be >= 0; found {int(y.min())}.")
    ymax = int(y.max())
    if num_classes is None:
        num_classes = ymax + 1
    elif ymax >= num_classes:
        raise ValueError(
            f"label {ymax} is out of range for num_classes={num_classes}; labels must be in "
            f"[0, {num_classes - 1}] (or leave num_classes=None to infer it)."
        )
    if a.is_complex():
        raise TypeError("acts must be real-valued, got a complex tensor.")
    # float16/bfloat16/int activations are cast to float32 first, as the reference does.
    a = a.reshape(n, -1).to(torch.float32)
    return a, y, int(num_classes)


def _check_finite(v: torch.Tensor, what: str) -> None:
    if bool(torch.isfinite(v.sum())):
        return  # one cheap reduction; only a non-finite sum needs the element-wise check
    bad = ~torch.isfinite(v)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(dim=1)).flatten()[:5].tolist()
        raise ValueError(
            f"{what} contain NaN or Inf (first bad samples: {rows}). Bundles are undefined for "
            "non-finite values: the network has diverged; lower the learning rate or check "
            "the input."
        )


# ------------------------------------------------------------------------------------ grouping
# Exact grouping (hash-proposed, element-wise verified) lives in rowgroups.py.


def group_rows_tolerance(v: torch.Tensor, gamma: float) -> tuple[torch.Tensor, int]:
    """Leader clustering under max-norm distance <= gamma.

    "Closer than gamma" is not transitive; chains are resolved the way the reference loop
    resolves them: take the first unassigned sample as a leader, assign every still-unassigned
    sample within gamma of the LEADER to its bundle, repeat. Bundles are therefore numbered by
    first appearance and a sample joins the earliest leader that covers it. Worst case
    O(N^2 D) vectorised work (every sample a leader).
    """
    n = v.shape[0]
    dev = v.device
    ids = torch.full((n,), -1, dtype=torch.int64, device=dev)
    g = 0
    unassigned = torch.arange(n, device=dev)
    while unassigned.numel():
        leader = unassigned[0]
        dist = (v[unassigned] - v[leader]).abs().amax(dim=1)  # (U,)
        close = dist <= gamma
        ids[unassigned[close]] = g
        g += 1
        unassigned = unassigned[~close]
    return ids, g


# ------------------------------------------------------------------------------------ entropy
def bundle_entropy_from_ids(
    bundle_ids: torch.Tensor, labels: torch.Tensor, num_bundles: int, num_classes: int
) -> tuple[float, torch.Tensor]:
    """Bundle entropy (1/N) sum_b |b| H(b), H(b) = max(0, -sum_c p_bc ln(p_bc + 1e-5)).

    Computed in float64 (the reference's numpy default). Returns (entropy, sizes (B,) int64).
    Memory is O(B x C) for the dense table; above ``DENSE_COUNT_LIMIT`` entries (huge label
    values, e.g. one label of 10**9) the counts are taken over the (bundle, label) pairs that
    occur instead, O(N).
    """
    n = bundle_ids.numel()
    if num_bundles * num_classes > DENSE_COUNT_LIMIT:
        return _sparse_entropy(bundle_ids, labels, num_bundles)
    counts = torch.bincount(bundle_ids * num_classes + labels, minlength=num_bundles * num_classes)
    counts = counts.reshape(num_bundles, num_classes).to(torch.float64)  # (B, C)
    sizes = counts.sum(dim=1)  # (B,)
    p = counts / sizes[:, None]
    h = -(p * torch.log(p + 1e-5)).sum(dim=1)  # empty classes: 0 * ln(1e-5) = 0
    h = torch.clamp(h, min=0.0)
    entropy = float((sizes * h).sum() / n)
    return entropy, sizes.to(torch.int64)


def _sparse_entropy(
    bundle_ids: torch.Tensor, labels: torch.Tensor, num_bundles: int
) -> tuple[float, torch.Tensor]:
    """:func:`bundle_entropy_from_ids` over the occurring (bundle, label) pairs only: O(N)."""
    n = bundle_ids.numel()
    _, compact = torch.unique(labels, return_inverse=True)  # (N,) in [0, K), K <= N
    k = int(compact.max()) + 1
    keys, cnt = torch.unique(bundle_ids * k + compact, return_counts=True)  # sorted pairs
    b = keys // k
    sizes = torch.zeros(num_bundles, dtype=torch.float64, device=labels.device)
    sizes.index_add_(0, b, cnt.to(torch.float64))
    p = cnt.to(torch.float64) / sizes[b]
    h = torch.zeros(num_bundles, dtype=torch.float64, device=labels.device)
    h.index_add_(0, b, -(p * torch.log(p + 1e-5)))
    h = torch.clamp(h, min=0.0)
    entropy = float((sizes * h).sum() / n)
    return entropy, sizes.to(torch.int64)


# ------------------------------------------------------------------------------------ public
def _transform(a: torch.Tensor, w_max: float, lr: float, batch_size: int) -> torch.Tensor:
    """v = f32(w_max) - (a * f32(lr)) * f32(1/bs), in float32 and in exactly this order."""
    t = a * torch.tensor(lr, dtype=torch.float32, device=a.device)
    t = t * torch.tensor(1.0 / batch_size, dtype=torch.float32, device=a.device)
    return torch.tensor(w_max, dtype=torch.float32, device=a.device) - t


def reference_transform(w_max: float, lr: float, batch_size: int):
    return lambda blk: _transform(blk, w_max, lr, batch_size)


def bundle_stats(
    acts,
    labels,
    *,
    num_classes: int | None = None,
    w_max: float = 0.0,
    lr: float = 1e-3,
    batch_size: int = 64,
    mode: str = "reference",
    gamma: float | None = None,
    max_block_bytes: int = _CHUNK_BYTES,
) -> BundleStats:
    """Bundles of one layer's activations and their bundle entropy.

    acts: (N, ...) torch tensor or numpy array, flattened to (N, D) float32.
    labels: (N,) integers in [0, num_classes).
    mode: "reference" (docs/method.md §2: v = w_max - a*lr*(1/bs) in float32, exact row equality),
      "raw" (exact equality of the float32 activations), or "tolerance" (rows within ``gamma``
      in max-norm of the raw activations, leader clustering, see :func:`group_rows_tolerance`).
    Memory beyond the (N, D) float32 input: cache-sized chunks, O(N) ids and blocks of at most
    ``max_block_bytes`` (64 MiB; a collision's fallback, the kept sampled columns); the
    transform is applied to one representative row per group of bitwise-equal rows. Result
    tensors live on the input's device.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if mode == "reference":
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr}.")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        if not math.isfinite(w_max):
            raise ValueError(f"w_max must be finite, got {w_max}.")
    if mode == "tolerance" and (gamma is None or not gamma >= 0):
        raise ValueError(
            "mode='tolerance' needs gamma >= 0 (the max-norm distance that merges rows)."
        )
    dev = acts.device if isinstance(acts, torch.Tensor) else torch.device("cpu")
    with bounded_threads(dev):
        return _bundle_stats(
            acts, labels, num_classes, w_max, lr, batch_size, mode, gamma, max_block_bytes
        )


def _bundle_stats(
    acts, labels, num_classes, w_max, lr, batch_size, mode, gamma, max_block_bytes
) -> BundleStats:
    """:func:`bundle_stats` after the argument checks (run under :func:`bounded_threads`)."""
    a, y, c = _prepare(acts, labels, num_classes)
    if mode == "tolerance":
        _check_finite(a, "activations")
        ids, g = group_rows_tolerance(a, float(gamma))
    else:
        t = reference_transform(float(w_max), float(lr), int(batch_size))
        ids, g, reps = group_rows_exact(a, t if mode == "reference" else None, max_block_bytes)
        # every row is bitwise equal to one of reps: a is finite iff a[reps] is (a gather is
        # cheaper than the one pass over a only when reps are few)
        few = 4 * reps.numel() <= a.shape[0]
        if not bool(torch.isfinite((a[reps] if few else a).sum())):
            _check_finite(a, "activations")
    if g == a.shape[0]:  # all singletons: each H(b) = max(0, -ln(1 + 1e-5)) = 0 exactly
        sizes = torch.ones(g, dtype=torch.int64, device=a.device)
        return BundleStats(num_bundles=g, entropy=0.0, bundle_ids=ids, sizes=sizes)
    entropy, sizes = bundle_entropy_from_ids(ids, y, g, c)
    return BundleStats(num_bundles=g, entropy=entropy, bundle_ids=ids, sizes=sizes)


def conflict_margin(
    acts, labels, *, w_max: float, lr: float = 1e-3, batch_size: int = 64, chunk_rows: int = 512
) -> float:
    """Smallest max-norm distance between two differently labelled samples, divided by the
    reference resolution q (docs/method.md §9). margin > 1 guarantees reference entropy 0; inf when
    all labels are equal. O(N^2 D), meant for N <= a few thousand."""
    a, y, _ = _prepare(acts, labels, None)
    _check_finite(a, "activations")
    q = resolution(w_max, lr, batch_size)
    best = math.inf
    for s in range(0, a.shape[0], chunk_rows):
        d = torch.cdist(a[s : s + chunk_rows].double(), a.double(), p=float("inf"))  # (n, N)
        diff = y[s : s + chunk_rows, None] != y[None, :]
        if bool(diff.any()):
            best = min(best, float(d[diff].min()))
    return best / q


# Criterion kinds implemented outside this module: kind -> fn(a (N, D) float32 finite, labels
# (N,) int64, num_classes) -> BundleStats. calibrated.py adds "calibrated" when the package is
# imported, so this module imports no other module of the package.
GROUPINGS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], BundleStats]] = {}


@dataclass(frozen=True)
class Criterion:
    """A named grouping rule, so that every result can say which criterion produced it.

    - ``reference``: docs/method.md §2 (the default, never altered).
    - ``raw``: exact equality of raw activations.
    - ``coarse:K``: rows whose components all differ by at most K*q (q = :func:`resolution`),
      i.e. the reference resolution made K times coarser.
    - ``tol:G``: absolute max-norm tolerance G on raw activations.
    - ``rel:R``: tolerance R times the layer's activation scale (max |a| over the batch), which
      avoids the dependence on where w_max falls on the float32 grid.
    - ``calibrated``: angular bundles (unit activation vectors within calibrated.RADIUS, single
      linkage), tuned on MNIST seed 0 only and frozen; see :mod:`conflicting_bundles.calibrated`
      and docs/calibrated.md. Never the default.
    """

    kind: str = "reference"
    value: float | None = None

    @staticmethod
    def parse(text: str | Criterion) -> Criterion:
        if isinstance(text, Criterion):
            return text
        t = text.strip().lower()
        if t in ("reference", "raw", "calibrated"):
            return Criterion(t)
        kind, _, val = t.partition(":")
        if kind in ("coarse", "tol", "rel") and val:
            try:
                x = float(val)
            except ValueError:
                x = float("nan")
            if not (x >= 0 and math.isfinite(x)):
                raise ValueError(f"criterion {text!r}: the value after ':' must be a number >= 0.")
            return Criterion(kind, x)
        raise ValueError(
            f"unknown criterion {text!r}; use reference, raw, coarse:K (e.g. coarse:16), "
            "tol:G (absolute), rel:R (relative to the activation scale) or calibrated."
        )

    @property
    def name(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    def __str__(self) -> str:
        return self.name

    def stats(
        self, acts, labels, *, num_classes=None, w_max=0.0, lr=1e-3, batch_size=64
    ) -> BundleStats:
        """bundle_stats under this criterion."""
        kw = dict(num_classes=num_classes)
        if self.kind == "reference":
            return bundle_stats(acts, labels, w_max=w_max, lr=lr, batch_size=batch_size, **kw)
        if self.kind == "raw":
            return bundle_stats(acts, labels, mode="raw", **kw)
        if self.kind in GROUPINGS:  # registered from above (calibrated.py registers itself)
            a, y, c = _prepare(acts, labels, num_classes)
            _check_finite(a, "activations")
            return GROUPINGS[self.kind](a, y, c)
        if self.kind == "coarse":
            gamma = self.value * resolution(w_max, lr, batch_size)
        elif self.kind == "tol":
            gamma = self.value
        else:
            a = _as_tensor(acts, "acts")
            scale = float(a.detach().abs().max()) if a.numel() else 0.0
            gamma = self.value * scale
        return bundle_stats(acts, labels, mode="tolerance", gamma=gamma, **kw)
