"""The mark (follower-count) distribution: a Pareto law with exponent ``alpha`` and lower bound ``mu``.

Density ``f(m) = (alpha - 1) mu**(alpha - 1) m**-alpha`` for ``m >= mu``, so the
survival function is ``(mu / m)**(alpha - 1)`` and the mean
``mu (alpha - 1) / (alpha - 2)`` is finite for ``alpha > 2``. The course
constants ``alpha = 2.4``, ``mu = 10`` are defaults, not truths for real data:
:func:`fit_pareto` estimates both from observed marks (Clauset, Shalizi & Newman,
SIAM Review 2009: maximum likelihood for ``alpha``, ``mu`` chosen by the
Kolmogorov-Smirnov distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_positive

__all__ = ["pareto_mean", "sample_pareto", "fit_pareto", "ParetoFit"]


def pareto_mean(alpha: float, mu: float) -> float:
    """Mean mark ``mu (alpha - 1) / (alpha - 2)``; ``inf`` when ``alpha <= 2``."""
    if alpha <= 2:
        return float("inf")
    return mu * (alpha - 1.0) / (alpha - 2.0)


def sample_pareto(alpha: float, mu: float, size: int | tuple, random_state: np.random.Generator) -> np.ndarray:
    """Draw marks from the Pareto law (exponent ``alpha`` > 1, lower bound ``mu`` > 0)."""
    return mu * (1.0 + random_state.pareto(alpha - 1.0, size=size))


@dataclass(frozen=True, slots=True)
class ParetoFit:
    """Pareto tail fitted to marks: exponent ``alpha``, lower bound ``mu``.

    ``n_tail`` marks were ``>= mu`` out of ``n``; ``ks`` is the Kolmogorov-Smirnov
    distance of the tail fit and ``alpha_se`` the standard error of ``alpha``.
    """

    alpha: float
    mu: float
    n_tail: int
    n: int
    ks: float
    alpha_se: float

    @property
    def mean(self) -> float:
        return pareto_mean(self.alpha, self.mu)


def _alpha_mle(tail: np.ndarray, mu: float) -> float:
    s = np.log(tail / mu).sum()
    return 1.0 + tail.size / s if s > 0 else np.inf


def fit_pareto(marks: np.ndarray, *, mu: float | None = None, min_tail: int = 50, n_candidates: int = 200) -> ParetoFit:
    """Fit the Pareto exponent (and, unless given, the lower bound) of positive marks.

    Parameters
    ----------
    marks : array-like, shape (n,)
        Follower counts; zeros are ignored (a Pareto law has positive support).
    mu : float, optional
        Fixed lower bound. Otherwise chosen among up to ``n_candidates`` quantiles
        of the marks to minimise the KS distance of the tail fit.
    min_tail : int
        Smallest number of marks a candidate tail must hold.
    """
    m = np.asarray(marks, dtype=np.float64).ravel()
    if m.size == 0 or not np.isfinite(m).all():
        raise ValueError("marks must be a non-empty array of finite numbers")
    if (m < 0).any():
        raise ValueError("marks must be >= 0")
    m = np.sort(m[m > 0])
    if m.size < min_tail:
        raise ValueError(f"need at least {min_tail} positive marks to fit a Pareto tail, got {m.size}")
    if mu is not None:
        candidates = np.array([check_positive(mu, "mu")])
    else:
        qs = np.linspace(0.0, 1.0 - min_tail / m.size, n_candidates)
        candidates = np.unique(np.quantile(m, qs, method="lower"))
    best = None
    for xmin in candidates:
        start = np.searchsorted(m, xmin, side="left")
        tail = m[start:]
        if tail.size < min_tail:
            continue
        a = _alpha_mle(tail, xmin)
        if not np.isfinite(a):
            continue
        emp = np.arange(1, tail.size + 1) / tail.size
        model = 1.0 - (xmin / tail) ** (a - 1.0)
        ks = float(np.max(np.abs(emp - model)))
        if best is None or ks < best[0]:
            best = (ks, a, float(xmin), tail.size)
    if best is None:
        raise ValueError("no candidate lower bound leaves a usable tail")
    ks, a, xmin, nt = best
    return ParetoFit(alpha=float(a), mu=xmin, n_tail=int(nt), n=int(np.asarray(marks).size), ks=ks,
                     alpha_se=float((a - 1.0) / np.sqrt(nt)))
