"""Error and ranking metrics of size forecasts.

The ARE (:func:`are`) says how close a forecast is; on a set of cascades selected by
size, a constant can be close too. The rank metrics (:func:`spearman`, :func:`kendall`,
:func:`top_share`) say whether the forecasts order the cascades as their true sizes
do, which no constant does.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

__all__ = ["are", "msle_log2", "spearman", "kendall", "top_share", "best_constant"]


def _pair(pred: object, true: object) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"forecasts and true sizes must have the same shape, got {p.shape} and {t.shape}")
    if np.isnan(p).any():
        raise ValueError("forecasts contain NaN")
    if not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError("true sizes must be finite and > 0")
    return p, t


def are(pred: object, true: object) -> np.ndarray:
    """Absolute relative error ``|N_hat - N| / N`` per cascade (same shape as the inputs).

    An infinite forecast gives an infinite error.
    """
    p, t = _pair(pred, true)
    return np.abs(p - t) / t


def msle_log2(pred: object, true: object) -> float:
    """Mean squared error of ``log2`` sizes, ``mean((log2 N_hat - log2 N)**2)``.

    Forecasts below 1 are clipped to 1 (a cascade holds at least its original post).
    """
    p, t = _pair(pred, true)
    return float(np.mean((np.log2(np.maximum(p, 1.0)) - np.log2(t)) ** 2))


def _ranked(pred: object, true: object) -> tuple[np.ndarray, np.ndarray] | None:
    """The pair, or ``None`` where no rank metric is defined (fewer than 2 cascades, constant forecasts)."""
    p, t = _pair(pred, true)
    if p.size < 2 or np.all(p == p.flat[0]) or np.all(t == t.flat[0]):
        return None
    return p, t


def spearman(pred: object, true: object) -> float | None:
    """Spearman's rank correlation of forecasts and true sizes; ``None`` if either is constant."""
    pair = _ranked(pred, true)
    if pair is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rho = stats.spearmanr(*pair).statistic
    return float(rho) if math.isfinite(rho) else None


def kendall(pred: object, true: object) -> float | None:
    """Kendall's tau-b of forecasts and true sizes; ``None`` if either is constant."""
    pair = _ranked(pred, true)
    if pair is None:
        return None
    tau = stats.kendalltau(*pair).statistic
    return float(tau) if math.isfinite(tau) else None


def top_share(pred: object, true: object, fraction: float = 0.1) -> float | None:
    """Of the ``ceil(fraction n)`` largest forecasts, the share that are among as many largest true sizes.

    The alert use case: with ``fraction = 0.1``, the precision of an alert raised on the top
    decile of forecasts. Ties in the true sizes count for the larger side (a cascade tied
    with the smallest of the top ones is in); ties in the forecasts split the places
    evenly (the expected share under a random order of the tied ones). ``None`` if the
    forecasts are constant.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pair = _ranked(pred, true)
    if pair is None:
        return None
    p, t = pair
    k = max(1, math.ceil(fraction * p.size))
    in_true = t >= np.sort(t)[-k]
    cut = np.sort(p)[-k]
    above = p > cut
    tied = p == cut
    left = k - int(above.sum())             # places left for the forecasts tied at the cut
    hits = in_true[above].sum() + left * in_true[tied].mean()
    return float(hits / k)


def best_constant(true: object, grid: int = 4096) -> float:
    """The single size with the least median ARE over the sizes ``true`` (shape (n,), > 0).

    The ``j``-th smallest ARE of a constant ``c`` is at most ``e`` where ``j`` sizes lie in
    ``[c / (1 + e), c / (1 - e)]``, so the constant that minimises it is the centre
    ``2 lo hi / (lo + hi)`` of the ``j`` consecutive sorted sizes of least ratio ``hi / lo``
    (O(n log n)). The median (the mean of the two middle AREs for even n) is evaluated exactly
    at those centres, for the orders next to the middle, and at ``grid`` points spaced
    geometrically between the smallest and the largest size: the best of them is returned.
    Cost O(n (grid + 50)).
    """
    sizes = np.asarray(true, dtype=np.float64).ravel()
    if sizes.size == 0 or not np.isfinite(sizes).all() or (sizes <= 0).any():
        raise ValueError("true sizes must be a non-empty array of finite sizes > 0")
    s = np.sort(sizes)
    n = s.size
    lo, hi = float(s[0]), float(s[-1])
    cands = [np.geomspace(lo, hi, grid) if hi > lo else s[:1]]
    for j in range((n + 1) // 2 - 1, n // 2 + 3):  # the orders around the middle
        if 1 <= j <= n:
            a, b = s[: n - j + 1], s[j - 1:]
            tight = np.argsort(b / a, kind="stable")[:8]  # the 8 narrowest windows of j sizes
            cands.append(2.0 * a[tight] * b[tight] / (a[tight] + b[tight]))
    cands = np.unique(np.concatenate(cands))
    best, best_err = lo, math.inf
    for chunk in np.array_split(cands, max(1, cands.size * n // 4_000_000)):
        err = np.median(np.abs(chunk[:, None] - s[None, :]) / s[None, :], axis=1)
        j = int(np.argmin(err))
        if err[j] < best_err:
            best, best_err = float(chunk[j]), float(err[j])
    return best
