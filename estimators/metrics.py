"""Error metrics of size forecasts."""

from __future__ import annotations

import numpy as np

__all__ = ["are", "msle_log2"]


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
