"""SEISMIC: the final-size predictor of Zhao, Erdogdu, He, Rajaraman & Leskovec (KDD 2015).

Q. Zhao, M. A. Erdogdu, H. Y. He, A. Rajaraman, J. Leskovec, "SEISMIC: A
Self-Exciting Point Process Model for Predicting Tweet Popularity", KDD 2015
(arXiv:1506.02594), and the authors' R package ``seismic`` 1.1 (CRAN, file
``R/tweetfunctions.R``: ``memory.pdf``, ``memory.ccdf``, ``linear.kernel``,
``power.kernel``, ``integral.memory.kernel``, ``get.infectiousness``,
``pred.cascade``). The formulas below are written from the model; the
conventions (windows, which events count where, defaults) follow the package,
which is the reference implementation of the paper. No code is taken from it.

Model
-----
Reshares form a self-exciting point process whose intensity at time ``t`` is

    lambda(t) = p_t * sum_{t_i < t} n_i * phi(t - t_i),

``n_i`` the follower count of the i-th poster (the original post included, at
``t_0``, usually 0), ``p_t`` the (slowly varying) infectiousness and ``phi`` the
human reaction-time density, the *memory kernel* (seconds):

    phi(s) = c0                          for 0 <= s <= s0,
    phi(s) = c0 * (s / s0)**-(1 + theta)  for s > s0,           phi(s) = 0 for s < 0.

It integrates to ``c0 * s0 * (1 + 1/theta)``, which is 1 exactly when
``c0 = theta / (s0 * (1 + theta))``. Defaults are the package's
(``memory.pdf(t, theta = 0.2314843, cutoff = 300, c = 0.0006265725)``), which are
normalised to 7 digits (mass 0.99999982). The values usually quoted for the
paper (``theta = 0.242``, ``s0 = 300 s``, ``c0 = 6.94e-4``) integrate to 1.0685,
not 1; the TiDeH code (Kobayashi & Lambiotte 2016) uses ``theta = 0.242``,
``s0 = 5 min`` with ``c0`` normalised. Pass ``c0=None`` to normalise ``c0`` from
``theta`` and ``s0``.

Infectiousness at the observation time ``t`` (kernel-weighted estimator)
------------------------------------------------------------------------
A triangular kernel looking back from ``t`` with half-width ``w`` (seconds),
``K_t(t - s) = 1 - (t - s) / w`` for ``t - w <= s <= t`` and 0 elsewhere, gives

    R_t   = sum_{i >= 1, t - w <= t_i < t} K_t(t - t_i)                 (weighted reshare count)
    N^e_t = sum_{i >= 0} n_i * int_{max(t_i, t - w)}^{t} K_t(t - s) phi(s - t_i) ds   (weighted exposure)
    p_t   = R_t / N^e_t

The original post is not a reshare (excluded from ``R_t``) but exposes its
followers (included in ``N^e_t``). The window is ``w = clip(t / 2, min_window,
max_window)`` (package defaults 300 s and 2 h). If fewer than ``min_count``
events (original included) fall in ``[t - w, t)``, the window is widened to
reach back to the ``(min_count + 1)``-th most recent event (or to the first
event), so that ``min_count`` events carry positive weight (package
``get.infectiousness``, ``min.count = 5``). ``R_t = 0`` gives ``p_t = 0``.

Prediction
----------
The expected number of events still to come, given the past, in a branching
process where each new reshare has on average ``n_star`` followers, is

    N_hat = n_obs + alpha * p_t * N^e_rest / (1 - gamma * p_t * n_star),
    N^e_rest = sum_i n_i * int_t^inf phi(s - t_i) ds,

``n_obs`` counting the original post (the package's ``pred.cascade`` returns the
number of *reshares*, ``n_obs - 1 + ...``; we count the original, as the rest of
Tweetoscope does). The package uses ``n_star = 100`` and no multipliers
(``alpha = gamma = 1``); the paper also describes a calibrated variant whose
multipliers ``alpha_t``, ``gamma_t`` are learnt on training cascades. Both are
exposed here, default 1 (the package's forecast). With the defaults, the median
absolute relative error on the 50 SEISMIC cascades shipped in
``data/seismic-tideh`` is 0.499 / 0.404 / 0.179 at 10 min / 1 h / 6 h, the
published SEISMIC figures (see ``tests/test_seismic.py``).

Supercritical estimates. When ``gamma * p_t * n_star >= 1`` the series
diverges: the model predicts an unbounded cascade. The package returns
``Inf`` then; so do we (``final_size = inf``, ``supercritical = True``): no
silent cap. A backtest should count these cases (their relative error is
infinite, which a median tolerates and a mean does not).

All integrals are in closed form and vectorised; one prediction is O(n) with no
Python loop over events.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ._validation import check_cascade, check_positive

__all__ = [
    "SEISMIC_THETA",
    "SEISMIC_S0",
    "SEISMIC_C0",
    "SEISMIC_N_STAR",
    "SeismicPrediction",
    "memory_kernel",
    "memory_integral",
    "normalised_c0",
    "seismic_predict",
]

#: Power-law exponent of the memory kernel (package ``seismic`` 1.1, ``memory.pdf``).
SEISMIC_THETA: float = 0.2314843
#: Cut-off of the memory kernel, seconds (package and paper: 5 minutes).
SEISMIC_S0: float = 300.0
#: Plateau density of the memory kernel, 1/s (package; = theta / (s0 (1 + theta)) to 7 digits).
SEISMIC_C0: float = 0.0006265725
#: Mean follower count of a new resharer used by the package's ``pred.cascade``.
SEISMIC_N_STAR: float = 100.0


def normalised_c0(theta: float = SEISMIC_THETA, s0: float = SEISMIC_S0) -> float:
    """The plateau ``c0 = theta / (s0 (1 + theta))`` (1/s) that makes the memory kernel integrate to 1."""
    return theta / (s0 * (1.0 + theta))


def _kernel_params(theta: float, s0: float, c0: float | None) -> tuple[float, float, float]:
    theta = check_positive(theta, "theta")
    if theta >= 1.0:
        raise ValueError(f"theta must be in (0, 1) (reaction-time exponents are about 0.2-0.3), got {theta!r}")
    s0 = check_positive(s0, "s0")
    c0 = normalised_c0(theta, s0) if c0 is None else check_positive(c0, "c0")
    return theta, s0, c0


def _powdiff(a: np.ndarray, b: np.ndarray, e: float) -> np.ndarray:
    """``b**e - a**e`` for ``0 < a <= b`` (``b`` may be inf if ``e < 0``), without cancellation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return a**e * np.expm1(e * np.log1p((b - a) / a))


def memory_kernel(
    s: object, *, theta: float = SEISMIC_THETA, s0: float = SEISMIC_S0, c0: float | None = SEISMIC_C0
) -> np.ndarray:
    """Memory kernel ``phi(s)`` (1/s): ``c0`` on ``[0, s0]``, ``c0 (s/s0)**-(1+theta)`` beyond, 0 for ``s < 0``.

    Parameters
    ----------
    s : array-like, any shape
        Delays in seconds since the exposing post.
    theta, s0, c0 : float
        Tail exponent, cut-off (s) and plateau (1/s); ``c0=None`` normalises the
        kernel (see :func:`normalised_c0`). Defaults: package ``seismic`` 1.1.

    Returns
    -------
    ndarray of float64, the shape of ``s``.
    """
    theta, s0, c0 = _kernel_params(theta, s0, c0)
    x = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tail = c0 * (np.maximum(x, s0) / s0) ** -(1.0 + theta)
    return np.where(x < 0, 0.0, np.where(x <= s0, c0, tail))


def _integral(a: np.ndarray, b: np.ndarray, theta: float, s0: float, c0: float) -> np.ndarray:
    """``int_a^b phi`` for ``0 <= a <= b`` (``b`` may be inf), arrays of one shape."""
    flat = c0 * (np.minimum(b, s0) - np.minimum(a, s0))
    lo, hi = np.maximum(a, s0), np.maximum(b, s0)
    # int_lo^hi c0 s0^(1+theta) u^-(1+theta) du = c0 s0^(1+theta) (lo^-theta - hi^-theta) / theta
    power = -c0 * s0 ** (1.0 + theta) / theta * _powdiff(lo, hi, -theta)
    return flat + np.where(hi > lo, power, 0.0)


def memory_integral(
    a: object,
    b: object,
    *,
    theta: float = SEISMIC_THETA,
    s0: float = SEISMIC_S0,
    c0: float | None = SEISMIC_C0,
) -> np.ndarray:
    """``int_a^b phi(s) ds`` in closed form, vectorised (dimensionless).

    Parameters
    ----------
    a, b : array-like, broadcastable
        Limits in seconds; ``b = inf`` is allowed (tail mass). The integral is
        signed: ``memory_integral(b, a) == -memory_integral(a, b)``.
    theta, s0, c0 : float
        As in :func:`memory_kernel`.

    Returns
    -------
    ndarray of float64, the broadcast shape of ``a`` and ``b``.

    Notes
    -----
    With ``P(x) = int_0^x phi``: ``P(x) = c0 x`` for ``x <= s0`` and
    ``c0 s0 + c0 s0 (1 - (x/s0)**-theta) / theta`` beyond, so
    ``P(inf) = c0 s0 (1 + 1/theta)``; the package's ``memory.ccdf`` is
    ``1 - P(x)`` for the normalised kernel. Differences of powers are taken
    with ``expm1``/``log1p`` so narrow intervals far in the tail keep full
    relative precision.
    """
    theta, s0, c0 = _kernel_params(theta, s0, c0)
    x, y = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("memory_integral limits must not be NaN")
    lo = np.maximum(np.minimum(x, y), 0.0)
    hi = np.maximum(np.maximum(x, y), 0.0)
    return np.where(x <= y, 1.0, -1.0) * _integral(lo, hi, theta, s0, c0)


def _weighted_exposure(u_lo: np.ndarray, u_hi: np.ndarray, w: float, theta: float, s0: float, c0: float) -> np.ndarray:
    """``int_{max(u_lo, 0)}^{u_hi} (u - u_lo) / w * phi(u) du`` per event (``u_hi > 0``).

    ``u = s - t_i`` is the delay since the event, ``u_lo = t - w - t_i`` the delay
    at the far end of the triangular window, where its weight ``1 - (t - s)/w``
    is zero; so the weight is ``(u - u_lo) / w``.
    """
    a = np.maximum(u_lo, 0.0)
    b = u_hi
    # Plateau part, u in [a, min(b, s0)] (empty if a >= s0): c0 * int (u - u_lo) du.
    fb = np.minimum(b, s0)
    fa = np.minimum(a, fb)
    flat = c0 * (fb - fa) * (0.5 * (fa + fb) - u_lo)
    # Power part, u in [max(a, s0), max(b, s0)]: C * int (u - u_lo) u^-(1+theta) du,
    # = C * [(b'^(1-theta) - a'^(1-theta)) / (1 - theta) - u_lo (a'^-theta - b'^-theta) / theta].
    pa, pb = np.maximum(a, s0), np.maximum(b, s0)
    C = c0 * s0 ** (1.0 + theta)
    power = C * (_powdiff(pa, pb, 1.0 - theta) / (1.0 - theta) + u_lo * _powdiff(pa, pb, -theta) / theta)
    return (flat + np.where(pb > pa, power, 0.0)) / w


@dataclass(frozen=True, slots=True)
class SeismicPrediction:
    """A SEISMIC forecast at one observation time.

    Attributes
    ----------
    final_size : float
        Forecast final number of events, the original post included:
        ``n_obs + alpha p N^e_rest / (1 - gamma p n_star)``; ``inf`` when supercritical.
    infectiousness : float
        ``p_t = R_t / N^e_t``, expected reshares per exposed follower (dimensionless).
    n_obs : int
        Events observed before ``t_obs`` (the original post included).
    t_obs : float
        Observation time, seconds since the original post.
    exposure : float
        ``N^e_t``, the kernel-weighted exposure (followers, weighted).
    remaining_exposure : float
        ``N^e_rest = sum_i n_i int_{t_obs}^inf phi(s - t_i) ds`` (followers).
    supercritical : bool
        ``gamma * p_t * n_star >= 1``: the branching series diverges, ``final_size`` is inf.
    weighted_count : float
        ``R_t``, the kernel-weighted number of reshares in the window.
    window : float
        Half-width ``w`` of the triangular kernel actually used, seconds.
    """

    final_size: float
    infectiousness: float
    n_obs: int
    t_obs: float
    exposure: float
    remaining_exposure: float
    supercritical: bool
    weighted_count: float
    window: float

    def to_dict(self) -> dict:
        return asdict(self)


def seismic_predict(
    times: object,
    marks: object,
    t_obs: float,
    *,
    theta: float = SEISMIC_THETA,
    s0: float = SEISMIC_S0,
    c0: float | None = SEISMIC_C0,
    n_star: float = SEISMIC_N_STAR,
    alpha: float = 1.0,
    gamma: float = 1.0,
    min_window: float = 300.0,
    max_window: float = 7200.0,
    min_count: int = 5,
) -> SeismicPrediction:
    """SEISMIC forecast of a cascade's final size from the events before ``t_obs``.

    Parameters
    ----------
    times : array-like, shape (n,)
        Event times in seconds since the original post, sorted; ``times[0]`` is
        the original post (usually 0).
    marks : array-like, shape (n,)
        Follower counts of the posters, >= 0.
    t_obs : float
        Observation time, seconds; only events with ``t < t_obs`` are used.
    theta, s0, c0 : float
        Memory kernel (see :func:`memory_kernel`); ``c0=None`` normalises it.
    n_star : float
        Mean follower count of a future resharer (package default 100).
    alpha, gamma : float
        Multipliers of the paper's calibrated forecast, ``alpha`` on the
        expected direct reshares still to come, ``gamma`` on the branching
        ratio ``p n_star``. 1 and 1 is the package's ``pred.cascade``.
    min_window, max_window : float
        Bounds on the triangular kernel's half-width ``w = t_obs / 2``, seconds.
    min_count : int
        Minimum number of events inside the window before it is widened.

    Returns
    -------
    SeismicPrediction

    Raises
    ------
    ValueError
        On invalid events (see :func:`estimators._validation.check_cascade`) or
        parameters, or if the observed posts expose nobody (all follower counts
        0) while reshares were seen, so that ``p_t`` is undefined.
    """
    t, m, T = check_cascade(times, marks, t_obs, min_events=1)
    theta, s0, c0 = _kernel_params(theta, s0, c0)
    n_star = check_positive(n_star, "n_star")
    alpha = check_positive(alpha, "alpha", strict=False)
    gamma = check_positive(gamma, "gamma", strict=False)
    min_window = check_positive(min_window, "min_window")
    max_window = check_positive(max_window, "max_window")
    if min_window > max_window:
        raise ValueError(f"min_window must be <= max_window, got {min_window!r} > {max_window!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 0:
        raise ValueError(f"min_count must be an integer >= 0, got {min_count!r}")
    n = t.size

    # Window (package get.infectiousness): w = clip(t/2, min, max), widened to hold min_count events.
    w = min(max(T / 2.0, min_window), max_window)
    first = int(np.searchsorted(t, T - w, side="left"))
    if n - first < min_count:
        j0 = max(n - min_count - 1, 0)
        w = T - float(t[j0])
        first = j0

    # R_t: reshares (not the original, index 0) in [T - w, T), triangular weights.
    r = t[max(first, 1) :]
    weighted_count = float(np.sum(np.clip(1.0 - (T - r) / w, 0.0, 1.0)))

    # N^e_t: every event, its followers times the kernel-weighted memory mass inside the window.
    exposure = float(np.dot(m, _weighted_exposure(T - w - t, T - t, w, theta, s0, c0)))
    # N^e_rest: followers times the memory mass still to come after T.
    remaining = float(np.dot(m, _integral(T - t, np.full(n, np.inf), theta, s0, c0)))

    if weighted_count == 0.0:
        p = 0.0
    elif exposure > 0.0:
        p = weighted_count / exposure
    else:
        raise ValueError(
            "the observed posts expose no follower (all marks are 0) but reshares were seen: "
            "the infectiousness is undefined"
        )

    branching = gamma * p * n_star
    supercritical = branching >= 1.0
    final = math.inf if supercritical else n + alpha * p * remaining / (1.0 - branching)
    return SeismicPrediction(
        final_size=float(final),
        infectiousness=float(p),
        n_obs=int(n),
        t_obs=float(T),
        exposure=exposure,
        remaining_exposure=remaining,
        supercritical=bool(supercritical),
        weighted_count=weighted_count,
        window=float(w),
    )
