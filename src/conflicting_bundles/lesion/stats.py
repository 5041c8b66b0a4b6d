"""Rank statistics: Spearman correlation, partial Spearman given controls, p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _ranks(v: Sequence[float]) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(np.asarray(v, dtype=np.float64))


def pvalue(r: float, df: int) -> float:
    """Two-sided p of a (partial) correlation r with df degrees of freedom (t-test)."""
    from scipy.stats import t as student_t

    if not math.isfinite(r) or df < 1:
        return float("nan")
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt(df / (1.0 - r * r))
    return float(2.0 * student_t.sf(abs(t), df))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def partial_spearman(x: Sequence[float], y: Sequence[float], z) -> float:
    """Spearman correlation of x and y controlling for z (one control (n,) or several (n, m)):
    the Pearson correlation of the residuals of rank(x) and rank(y) after a least-squares fit
    on an intercept and the ranks of each control. nan when a residual is constant (x or y
    fully explained by the controls)."""
    zc = np.asarray(z, dtype=np.float64)
    zc = zc[:, None] if zc.ndim == 1 else zc  # (n, m)
    rx, ry = _ranks(x), _ranks(y)
    design = np.column_stack([np.ones(len(rx))] + [_ranks(c) for c in zc.T])  # (n, 1 + m)

    def resid(r: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(design, r, rcond=None)
        return r - design @ coef

    ex, ey = resid(rx), resid(ry)
    scale = max(1.0, float(np.abs(rx).max()))
    if ex.std() < 1e-9 * scale or ey.std() < 1e-9 * scale:
        return float("nan")
    return float(np.corrcoef(ex, ey)[0, 1])
