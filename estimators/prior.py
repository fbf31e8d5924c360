"""Empirical-Bayes prior on ``(p, beta)``: the population law of the parameters, learnt from cascades.

The course prior (:data:`estimators.COURSE_PRIOR`) is a fixed guess; a dataset's own
cascades say better where ``(p, beta)`` lie. :func:`fit_prior` takes parameter
estimates of many cascades (ideally fitted on the whole of each: complete cascades pin
their parameters down) and fits the log-normal law of :class:`LogNormalPrior` to them.

Samples of cascades are often selected by size (at least ``min_size`` events): that
over-represents large ``p``, and each estimate is weighted by the inverse of its
probability to be selected (the total progeny law of :mod:`estimators.predictive`).

The fits are bounded (``p E[m] < max_n_star``, ``beta`` in ``beta_bounds``), so the
estimates are a sample of a log-normal law *truncated* to those bounds. Each axis of
``(log p, log beta)`` is fitted by maximum likelihood as a truncated normal (the plain
sample moments of a truncated sample are biased towards its inside); the correlation is
the sample correlation of the logs. The MAP fit applies the same bounds, so the fitted
prior with those bounds is the truncated law itself.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .hawkes import DEFAULT_BETA_BOUNDS, LogNormalPrior
from .marks import COURSE_MARKS, MarkLaw
from .predictive import progeny_tail

__all__ = ["fit_prior", "prior_from_log_moments", "selection_weights"]


#: Least variance of ``log p`` and of ``log beta`` a fitted prior may have (below, its covariance is singular
#: in floating point: a fit under it would fail).
MIN_LOG_VARIANCE = 1e-12


def selection_weights(n_star: np.ndarray, min_size: float, *, mark_law: MarkLaw = COURSE_MARKS) -> np.ndarray:
    """Inverse probabilities ``1 / P(N >= min_size | n_star)`` that a cascade reaches ``min_size`` events, shape (n,).

    A dataset that keeps only cascades of at least ``min_size`` events over-represents
    large ``n_star``; weighting each estimate by this factor undoes it. ``N`` is the total
    progeny of the original post (:func:`estimators.predictive.progeny_pmf`).
    """
    k = max(int(np.ceil(min_size)), 1)
    ns = np.clip(np.asarray(n_star, dtype=np.float64), 0.0, 0.99)
    reach = progeny_tail(ns, k, mark_law)
    return 1.0 / np.maximum(reach, 1e-6)


def prior_from_log_moments(mean: np.ndarray, cov: np.ndarray) -> LogNormalPrior:
    """The :class:`LogNormalPrior` whose ``(log p, log beta)`` has this mean (2,) and covariance (2, 2)."""
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    m = np.exp(mean + np.diag(cov) / 2.0)
    q = np.outer(m, m) * np.expm1(cov)
    sd = np.sqrt(np.diag(q))
    return LogNormalPrior(mean_p=float(m[0]), mean_beta=float(m[1]), sd_p=float(sd[0]), sd_beta=float(sd[1]),
                          corr=float(np.clip(q[0, 1] / (sd[0] * sd[1]), -0.99, 0.99)))


def _truncated_normal_mle(x: np.ndarray, lo: float, hi: float, w: np.ndarray) -> tuple[float, float]:
    """Mean and sd of a normal law truncated to ``[lo, hi]`` fitted to ``x`` by weighted maximum likelihood."""
    w = w / w.mean()
    m0 = float(np.average(x, weights=w))
    s0 = float(max(np.sqrt(np.average((x - m0) ** 2, weights=w)), 1e-3))

    def nll(th: np.ndarray) -> float:
        m, s = th[0], np.exp(th[1])
        z = (x - m) / s
        mass = special.ndtr((hi - m) / s) - special.ndtr((lo - m) / s)
        return float(0.5 * np.sum(w * z * z) + x.size * (th[1] + np.log(max(mass, 1e-300))))

    from scipy import optimize  # here: the processes that forecast never refit a prior (0.13 s of imports)

    res = optimize.minimize(nll, [m0, np.log(s0)], method="Nelder-Mead",
                            options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000})
    m, s = float(res.x[0]), float(np.exp(res.x[1]))
    # a truncated sample says little far outside the bounds: keep the mean within a few sd of the data
    if not (np.isfinite(m) and np.isfinite(s)) or abs(m - m0) > 3 * s0 + 3 * s:
        return m0, s0
    return m, s


def fit_prior(
    p: np.ndarray,
    beta: np.ndarray,
    *,
    mark_law: MarkLaw = COURSE_MARKS,
    max_n_star: float = 1.0,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    min_size: float = 1.0,
    min_samples: int = 10,
) -> LogNormalPrior:
    """The log-normal prior on ``(p, beta)`` (beta in 1/s) that best explains these estimates, shape (n,) each.

    ``mark_law``: the marks' law (``n_star = p E[m]``); ``max_n_star`` and
    ``beta_bounds``: the bounds the estimates were fitted under. Estimates on a bound
    carry no information on the law's shape beyond it and are left out. ``min_size``:
    the cascades come from a sample that keeps only those of at least that many events;
    each estimate is weighted by the inverse of its probability to be kept
    (:func:`selection_weights`), which undoes the over-representation of large ``p``.
    ``ValueError`` if fewer than ``min_samples`` estimates are inside the bounds, or if they
    determine no prior (a variance of ``log p`` or ``log beta`` below :data:`MIN_LOG_VARIANCE`).
    """
    p = np.asarray(p, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if p.shape != beta.shape or p.ndim != 1:
        raise ValueError(f"p and beta must be 1-D arrays of the same length, got {p.shape} and {beta.shape}")
    ok = np.isfinite(p) & np.isfinite(beta) & (p > 0) & (beta > 0)
    mean_mark = mark_law.mean
    p_hi = max_n_star / mean_mark
    lo_b, hi_b = np.log(beta_bounds[0]), np.log(beta_bounds[1])
    lp, lb = np.log(p[ok]), np.log(beta[ok])
    inside = (lp < np.log(p_hi) - 1e-6) & (lb > lo_b + 1e-6) & (lb < hi_b - 1e-6)
    lp, lb = lp[inside], lb[inside]
    if lp.size < min_samples:
        raise ValueError(f"need at least {min_samples} estimates strictly inside the bounds to fit a prior, "
                         f"got {lp.size}")
    w = selection_weights(np.exp(lp) * mean_mark, min_size, mark_law=mark_law) if min_size > 1 else np.ones(lp.size)
    mp, sp = _truncated_normal_mle(lp, -np.inf, np.log(p_hi), w)
    mb, sb = _truncated_normal_mle(lb, lo_b, hi_b, w)
    r = float(np.cov(lp, lb, aweights=w)[0, 1] / np.sqrt(np.cov(lp, aweights=w) * np.cov(lb, aweights=w))) if lp.size > 2 else 0.0
    cov = np.array([[sp * sp, r * sp * sb], [r * sp * sb, sb * sb]])
    prior = prior_from_log_moments(np.array([mp, mb]), cov)
    m, C = prior.log_moments()
    if not (np.isfinite(m).all() and np.isfinite(C).all() and min(C[0, 0], C[1, 1]) >= MIN_LOG_VARIANCE):
        # e.g. every usable estimate at one p, or one estimate carrying nearly all the selection weight
        raise ValueError(f"the estimates determine no prior: variances of (log p, log beta) {C[0, 0]:.3g}, "
                         f"{C[1, 1]:.3g} (need finite and >= {MIN_LOG_VARIANCE:g})")
    return prior
