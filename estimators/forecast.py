"""The model's rules in one place: the forecast, the correction's target, each kernel's parameters and features.

Every part of the product that forecasts a size, learns a correction or ships a fit
(the estimator, the predictor, the learner and the backtest) goes through these
functions, so that they cannot drift apart.

A fit of either kernel gives the branching factor ``n_star`` and ``G1``, the expected
number of direct children still to come from the events observed before ``t_obs``.
The forecast of the final size is

    N = n_obs + omega * G1 / (1 - n_star)                               (:func:`forecast_size`)

with ``omega = 1`` for the model alone and ``omega`` learnt by the correction
otherwise. A fit travels as four numbers ``(a, b, n_star, G1)``
(:func:`message_params`; the ``params`` of a ``parameters`` message):

=============  ============================  =====================================
kernel         ``a``                         ``b``
=============  ============================  =====================================
``exp``        ``p`` (per follower)          ``beta``, the decay rate (1/s)
``powerlaw``   ``kappa``, the kernel scale   ``theta``, the tail exponent of decay
=============  ============================  =====================================

and the correction's features are ``[b, n_star, G1, n_obs, n_recent, t_idle, mark_sum]``
(:func:`correction_features`), whatever side of the product computes them: the fit's
three numbers, the count so far, and three statistics of the observed series
(:func:`series_features`) that the feature-driven predictors of Mishra, Rizoiu & Xie
(CIKM 2016) found predictive: the events in the last quarter of the window, the time
since the last event and the sum of the marks. Series statistics that a message did
not carry (a course-format ``parameters`` message) are NaN, which the correction's
trees route like any other value.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numba import njit

__all__ = ["KERNELS", "forecast_size", "omega_target", "are_weights", "message_params", "correction_features",
           "series_features", "series_features_packed", "FEATURE_NAMES", "SERIES_FEATURES", "RECENT_SHARE"]

#: The Hawkes kernels a fit can use.
KERNELS = ("exp", "powerlaw")

#: Names of the correction's features, in the columns' order of :func:`correction_features`.
FEATURE_NAMES = ("b", "n_star", "G1", "n_obs", "n_recent", "t_idle", "mark_sum")

#: The statistics of the observed series among the correction's features (:func:`series_features`).
SERIES_FEATURES = FEATURE_NAMES[4:]

#: ``n_recent`` counts the events of the last ``RECENT_SHARE`` of the observation window.
RECENT_SHARE = 0.25


class _Fit(Protocol):
    kernel: str
    n_star: float
    G1: float


#: Types of the plain numbers :func:`forecast_size` takes without arrays.
_NUMBERS = frozenset({float, int})


def _arrays(*xs: object) -> list[np.ndarray]:
    arrs = [np.asarray(x, dtype=np.float64) for x in xs]
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    return [np.broadcast_to(a, shape) for a in arrs]


def forecast_size(n_obs: object, G1: object, n_star: object, omega: object = 1.0) -> np.ndarray:
    """The final size ``n_obs + omega * G1 / (1 - n_star)``, element-wise; ``inf`` where ``n_star >= 1``.

    Shape of the broadcast inputs (a 0-d array for scalars: ``float()`` it).
    """
    if type(n_obs) in _NUMBERS and type(G1) in _NUMBERS and type(n_star) in _NUMBERS and type(omega) in _NUMBERS:
        # one fit (every fit computes its final size): the same IEEE arithmetic on Python floats, without
        # the arrays (1 instead of 25 us; the arrays cost the estimator's workers more than the fits)
        return np.float64(n_obs + omega * G1 / (1.0 - n_star) if n_star < 1.0 else np.inf)
    n_obs, G1, n_star, omega = _arrays(n_obs, G1, n_star, omega)
    sub = n_star < 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(sub, n_obs + omega * G1 / np.where(sub, 1.0 - n_star, 1.0), np.inf)


def omega_target(n_true: object, n_obs: object, n_star: object, G1: object) -> np.ndarray:
    """The correction that would have been exact, ``(n_true - n_obs)(1 - n_star) / G1``; 0 where ``G1 <= 0``.

    Shape of the broadcast inputs. The learner's target.
    """
    n_true, n_obs, n_star, G1 = _arrays(n_true, n_obs, n_star, G1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = (n_true - n_obs) * (1.0 - n_star) / G1
    return np.where(G1 > 0, w, 0.0)


def are_weights(n_true: object, n_obs: object, n_star: object, G1: object) -> np.ndarray:
    """Sample weights ``G1 / ((1 - n_star) n_true)``: an absolute error on omega times its weight is the ARE."""
    n_true, n_obs, n_star, G1 = _arrays(n_true, n_obs, n_star, G1)
    return G1 / ((1.0 - n_star) * n_true)


def message_params(fit: _Fit) -> tuple[float, float, float, float]:
    """The four numbers ``(a, b, n_star, G1)`` that carry a fit (see the module's table)."""
    if fit.kernel == "exp":
        return float(fit.p), float(fit.beta), float(fit.n_star), float(fit.G1)  # type: ignore[attr-defined]
    if fit.kernel == "powerlaw":
        return float(fit.kappa), float(fit.theta), float(fit.n_star), float(fit.G1)  # type: ignore[attr-defined]
    raise ValueError(f"kernel must be one of {KERNELS}, got {fit.kernel!r}")


def series_features(times: np.ndarray, marks: np.ndarray, t_obs: float) -> tuple[float, float, float]:
    """``(n_recent, t_idle, mark_sum)`` of the events before ``t_obs`` (seconds from the cascade's start).

    ``n_recent``: the events in the last :data:`RECENT_SHARE` of the window
    ``[(1 - RECENT_SHARE) t_obs, t_obs)``; ``t_idle``: seconds from the last event to ``t_obs``;
    ``mark_sum``: the sum of their marks. ``times`` and ``marks``: shape (n,), times sorted.
    """
    times = np.ascontiguousarray(times, dtype=np.float64)
    out = series_features_packed(times, np.ascontiguousarray(marks, dtype=np.float64),
                                 np.array([0, times.size]), np.array([t_obs], dtype=np.float64))
    return tuple(out[0].tolist())


def series_features_packed(times: np.ndarray, marks: np.ndarray, offsets: np.ndarray,
                           t_obs: np.ndarray) -> np.ndarray:
    """:func:`series_features` of many series at once, shape (k, 3): series ``i`` has the events
    ``offsets[i]:offsets[i + 1]`` of ``times`` and ``marks`` (shape (n,), times sorted within each
    series; ``offsets`` shape (k + 1,), non-decreasing) and the window ``t_obs[i]`` (shape (k,), seconds)."""
    times, marks = np.asarray(times, dtype=np.float64), np.asarray(marks, dtype=np.float64)
    offsets, t_obs = np.asarray(offsets, dtype=np.int64), np.asarray(t_obs, dtype=np.float64)
    if (times.ndim != 1 or times.shape != marks.shape or t_obs.ndim != 1 or offsets.shape != (t_obs.size + 1,)
            or (offsets.size and (offsets[0] < 0 or offsets[-1] > times.size or np.any(np.diff(offsets) < 0)))):
        raise ValueError(f"times and marks must have the same shape (n,), t_obs shape (k,) and offsets (k + 1,) "
                         f"non-decreasing within [0, n]; got {times.shape}, {marks.shape}, {t_obs.shape}, "
                         f"{offsets.shape}")
    out = np.empty((t_obs.size, 3))
    _series_stats(times, marks, offsets, t_obs, RECENT_SHARE, out)
    return out


@njit(cache=True)
def _series_stats(times, marks, offsets, t_obs, share, out):  # pragma: no cover  (compiled)
    for i in range(t_obs.size):
        lo, hi, T = offsets[i], offsets[i + 1], t_obs[i]
        k = lo + np.searchsorted(times[lo:hi], T)  # side="left": the events before T
        if k == lo:
            out[i, 0], out[i, 1], out[i, 2] = 0.0, T, 0.0
            continue
        recent = k - (lo + np.searchsorted(times[lo:k], (1.0 - share) * T))
        total = 0.0
        for j in range(lo, k):
            total += marks[j]
        out[i, 0], out[i, 1], out[i, 2] = recent, T - times[k - 1], total


def correction_features(params: object, n_obs: object, series: object = None) -> np.ndarray:
    """The correction's features :data:`FEATURE_NAMES`, shape (n, 7).

    ``params``: rows of :func:`message_params`, shape (n, 4) (or (4,) for one fit);
    ``n_obs``: the events observed, shape (n,); ``series``: rows of :func:`series_features`,
    shape (n, 3), NaN where unknown (``None``: all unknown).
    """
    P = np.atleast_2d(np.asarray(params, dtype=np.float64))
    n = np.atleast_1d(np.asarray(n_obs, dtype=np.float64))
    if P.ndim != 2 or P.shape[1] != 4 or n.shape != (P.shape[0],):
        raise ValueError(f"params must have shape (n, 4) and n_obs shape (n,), got {P.shape} and {n.shape}")
    S = np.full((P.shape[0], 3), np.nan) if series is None else np.asarray(series, dtype=np.float64).reshape(-1, 3)
    if S.shape[0] != P.shape[0]:
        raise ValueError(f"series must have shape (n, 3) = {SERIES_FEATURES}, got {S.shape}")
    return np.column_stack([P[:, 1:4], n, S])
