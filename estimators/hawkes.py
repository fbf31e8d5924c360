"""Marked Hawkes process with exponential kernel: likelihood, MAP/MLE fit, forecast.

The model (the course's): an event with mark ``m`` (the poster's follower count)
at time ``t_j`` raises the intensity by ``p * m * beta * exp(-beta (t - t_j))``.
The first event (the original post, at ``t_1``, usually 0) is given, so the
log-likelihood of the events ``t_1 < ... < t_n < T`` on ``[0, T]`` is

    LL(p, beta) = sum_{i>=2} log lambda(t_i) - int_0^T lambda
                = (n-1) log(p beta) + sum_{i>=2} log A_i(beta)
                  - p sum_i m_i (1 - exp(-beta (T - t_i)))

with ``A_i = sum_{j<i} m_j exp(-beta (t_i - t_j))``. ``A_i`` is carried by a
recursion in O(n): ``log A_i = log(A_{i-1} + m_{i-1}) - beta (t_i - t_{i-1})``
with the bracket kept in linear scale (it is at least ``m_{i-1}``, so it never
underflows) and the exponential applied in log scale, so long gaps
(``beta * dt`` up to 1e4 and beyond) and marks up to 1e8 stay finite. The
derivatives in ``beta`` use the normalised first two moments of the lags
under the weights of ``A_i``, which are bounded, rather than raw sums.

Optimisation runs in ``(u, v) = (log p, log beta)``. The prior is a bivariate
normal density on ``(log p, log beta)`` (the prior lives on log theta; no
Jacobian is added, exactly as the course's ``compute_MAP``). For fixed ``v``
the objective is concave in ``u`` and solved by a safeguarded 1-D Newton; the
profile over ``v`` is scanned on a grid and refined by safeguarded Newton with
analytic first and second derivatives. Everything runs in compiled code.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit

from ._validation import check_cascade, check_positive
from .forecast import forecast_size
from .marks import COURSE_MARKS, MarkLaw
from .results import HawkesFit

__all__ = [
    "LogNormalPrior",
    "COURSE_PRIOR",
    "DEFAULT_BETA_BOUNDS",
    "loglikelihood",
    "loglikelihood_grad",
    "fit_exp",
    "ConvergenceWarning",
]

#: Bounds on beta (1/s) used by the course: time scales from 10 minutes to 10 days.
DEFAULT_BETA_BOUNDS: tuple[float, float] = (1.0 / (3600.0 * 24 * 10), 1.0 / 600.0)


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before meeting its tolerance; the fit has ``converged=False``."""


@dataclass(frozen=True, slots=True)
class LogNormalPrior:
    """Log-normal prior on ``(p, beta)`` given by the moments of ``(p, beta)`` themselves.

    The parameters (``mean_p``, ``mean_beta``, ``sd_p``, ``sd_beta``, ``corr``)
    are the mean, standard deviation and correlation of ``(p, beta)``; they are
    converted by the method of moments into the mean and covariance of the
    normal law of ``(log p, log beta)``, on which the density is evaluated.
    ``beta`` is in 1/s.
    """

    mean_p: float = 0.02
    mean_beta: float = 2e-4
    sd_p: float = 0.01
    sd_beta: float = 1e-3
    corr: float = -0.1

    def log_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (shape (2,)) and covariance (shape (2, 2)) of ``(log p, log beta)``."""
        mean = np.array([self.mean_p, self.mean_beta])
        cov_pb = self.corr * self.sd_p * self.sd_beta
        q = np.array([[self.sd_p**2, cov_pb], [cov_pb, self.sd_beta**2]])
        cov = np.log(q / np.outer(mean, mean) + 1.0)
        return np.log(mean) - np.diag(cov) / 2.0, cov

    def precision(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean of ``(log p, log beta)`` and the inverse of its covariance."""
        m, cov = self.log_moments()
        return m, np.linalg.inv(cov)

    def sample(self, size: int, random_state: np.random.Generator) -> np.ndarray:
        """Draw ``size`` pairs ``(p, beta)`` from the prior, shape (size, 2)."""
        m, cov = self.log_moments()
        return np.exp(random_state.multivariate_normal(m, cov, size=size))


#: The course prior on (p, beta).
COURSE_PRIOR = LogNormalPrior()


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def _pass(t, m, T, beta, floor):
    """One O(n) pass: L = sum_{i>=2} log A_i and the compensator K with their beta-derivatives.

    Marks below ``floor`` count as ``floor``.
    Returns (L, dL/dbeta, d2L/dbeta2, K, dK/dbeta, d2K/dbeta2, A_T) where
    K = sum_i m_i (1 - exp(-beta (T - t_i))) and A_T = sum_i m_i exp(-beta (T - t_i)).
    One exponential per event: the compensator's sums are the recursion's state
    carried to T (A_T, and the lag moments under its weights), and the logs are
    taken of running products renormalised before they can overflow.
    """
    n = t.shape[0]
    L = 0.0
    prod = 1.0
    Lb = 0.0
    Lbb = 0.0
    K = 0.0  # compensator / p up to the current event: a sum of positive terms
    ap = max(m[0], floor)  # A_{i-1} + m_{i-1}, never below the last mark
    mean = 0.0  # mean lag under the weights of ap
    var = 0.0  # variance of the lag under the weights of ap
    for i in range(1, n + 1):
        d = (t[i] if i < n else T) - t[i - 1]
        x = beta * d
        if x < 0.25:
            om = -math.expm1(-x)
            e = 1.0 - om
        else:
            e = math.exp(-x)
            om = 1.0 - e
        K += ap * om
        ms = mean + d
        ae = ap * e
        if i == n:
            break
        prod *= ap
        L -= x
        if prod > 1e200 or prod < 1e-200:
            L += math.log(prod)
            prod = 1.0
        Lb -= ms
        Lbb += var
        ap = ae + max(m[i], floor)
        w = ae / ap
        var = w * var + w * (1.0 - w) * ms * ms
        mean = w * ms
    L += math.log(prod)
    AT = ae
    Kb = AT * ms
    Kbb = -AT * (var + ms * ms)
    return L, Lb, Lbb, K, Kb, Kbb, AT


@njit(cache=True)
def _loglik(t, m, T, p, beta, floor):
    n = t.shape[0]
    L, Lb, Lbb, K, Kb, Kbb, AT = _pass(t, m, T, beta, floor)
    ll = (n - 1) * (math.log(p) + math.log(beta)) + L - p * K
    dp = (n - 1) / p - K
    db = (n - 1) / beta + Lb - p * Kb
    return ll, dp, db


@njit(cache=True)
def _solve_u(v, K, n1, mu_u, mu_v, P00, P01, umin, umax):
    """argmax over [umin, umax] of n1*u - exp(u) K - prior(u, v), which is concave in u.

    Newton on the derivative g(u) = n1 - exp(u) K - P00 (u - mu_u) - P01 (v - mu_v),
    a concave decreasing function: Newton converges to its root from any start
    (after at most one overshoot to the right it decreases monotonically), and the
    constrained optimum is that root clipped to the box.
    """
    c = P01 * (v - mu_v) - P00 * mu_u
    if n1 > 0.0 and K > 0.0:
        u = math.log(n1 / K)
    else:
        u = mu_u if P00 > 0.0 else umin
    for _ in range(100):
        eu = math.exp(u)
        g = n1 - eu * K - P00 * u - c
        if u >= umax and g >= 0.0:
            return umax
        if u <= umin and g <= 0.0:
            return umin
        h = -eu * K - P00
        if h >= 0.0:  # no curvature at all: flat objective, nothing to learn
            return min(max(u, umin), umax)
        step = g / h
        u = min(max(u - step, umin - 30.0), umax + 30.0)
        if abs(step) < 1e-12 * (1.0 + abs(u)):
            break
    return min(max(u, umin), umax)


@njit(cache=True)
def _profile(t, m, T, v, n1, mu_u, mu_v, P00, P01, P11, umin, umax, floor):
    """Profile objective at v: (J, dJ/dv, d2J/dv2, u, loglik, A_T = sum m exp(-beta tau))."""
    beta = math.exp(v)
    L, Lb, Lbb, K, Kb, Kbb, AT = _pass(t, m, T, beta, floor)
    u = _solve_u(v, K, n1, mu_u, mu_v, P00, P01, umin, umax)
    p = math.exp(u)
    du = u - mu_u
    dv = v - mu_v
    prior = -0.5 * (P00 * du * du + 2.0 * P01 * du * dv + P11 * dv * dv)
    ll = n1 * (u + v) + L - p * K
    J = ll + prior
    Jv = n1 + beta * (Lb - p * Kb) - (P01 * du + P11 * dv)
    Jvv = beta * (Lb - p * Kb) + beta * beta * (Lbb - p * Kbb) - P11
    if u > umin and u < umax:
        Juu = -p * K - P00
        Juv = -p * beta * Kb - P01
        Jvv = Jvv - Juv * Juv / Juu
    return J, Jv, Jvv, u, ll, AT


@njit(cache=True)
def _fit_map(t, m, T, c, n_grid, tol, max_iter):
    """Maximise the (penalised) log-likelihood over [umin, umax] x [vmin, vmax].

    ``c`` packs (mu_u, mu_v, P00, P01, P11, umin, umax, vmin, vmax, floor): the prior's
    mean and precision on (log p, log beta), the box, and the mark floor.
    Returns (u, v, loglik, objective, A_T, n_passes, converged).
    """
    mu_u, mu_v, P00, P01, P11, umin, umax, vmin, vmax, floor = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
    n1 = float(t.shape[0] - 1)
    best_J = -np.inf
    best_k = 0
    grid = np.empty(n_grid)
    for k in range(n_grid):
        grid[k] = vmin + (vmax - vmin) * k / (n_grid - 1)
        J, Jv, Jvv, u, ll, AT = _profile(t, m, T, grid[k], n1, mu_u, mu_v, P00, P01, P11, umin, umax, floor)
        if J > best_J:
            best_J = J
            best_k = k
    passes = n_grid
    lo = grid[max(best_k - 1, 0)]
    hi = grid[min(best_k + 1, n_grid - 1)]
    v = grid[best_k]
    converged = False
    J, Jv, Jvv, u, ll, AT = _profile(t, m, T, v, n1, mu_u, mu_v, P00, P01, P11, umin, umax, floor)
    passes += 1
    best = (J, v, u, ll, AT)
    for _ in range(max_iter):
        if Jv > 0.0:
            lo = v
        else:
            hi = v
        if (v <= vmin and Jv <= 0.0) or (v >= vmax and Jv >= 0.0):
            converged = True
            break
        if Jvv < 0.0:
            vn = v - Jv / Jvv
        else:
            vn = 0.5 * (lo + hi)
        if not (vn > lo and vn < hi):
            vn = 0.5 * (lo + hi)
        step = abs(vn - v)
        v = vn
        J, Jv, Jvv, u, ll, AT = _profile(t, m, T, v, n1, mu_u, mu_v, P00, P01, P11, umin, umax, floor)
        passes += 1
        if J >= best[0]:
            best = (J, v, u, ll, AT)
        if step < tol or hi - lo < tol:
            converged = True
            break
    J, v, u, ll, AT = best
    return u, v, ll, J, AT, passes, converged


# --------------------------------------------------------------------------- public API


@functools.lru_cache(maxsize=256)
def _fit_constants(mark_law, prior, max_n_star, beta_bounds, mark_floor):
    """Checked constants of ``_fit_map`` (see there) and E[m]."""
    if not isinstance(mark_law, MarkLaw):
        raise TypeError(f"mark_law must be a MarkLaw, got {type(mark_law).__name__}")
    if not 0 < max_n_star <= 1:
        raise ValueError(f"max_n_star must be in (0, 1], got {max_n_star}")
    if len(beta_bounds) != 2:
        raise ValueError(f"beta_bounds must be a pair (min, max) in 1/s, got {beta_bounds}")
    bmin, bmax = (check_positive(b, "beta_bounds") for b in beta_bounds)
    if bmin >= bmax:
        raise ValueError(f"beta_bounds must be increasing, got {beta_bounds}")
    em = mark_law.mean
    # the course's bounds: 1e-8 <= p <= max_n_star / E[m] - 1e-8
    umax = math.log(max_n_star / em - 1e-8)
    umin = math.log(1e-8)
    if prior is None:
        mean, P = np.zeros(2), np.zeros((2, 2))
    else:
        mean, P = prior.precision()
    consts = np.array([mean[0], mean[1], P[0, 0], P[0, 1], P[1, 1], umin, umax, math.log(bmin), math.log(bmax),
                       _check_floor(mark_floor)])
    consts.flags.writeable = False
    return consts, em


def _check_floor(mark_floor: float) -> float:
    return check_positive(mark_floor, "mark_floor")


def loglikelihood(
    times: np.ndarray, marks: np.ndarray, t_obs: float, p: float, beta: float, *, mark_floor: float = 1.0
) -> float:
    """Log-likelihood of the events before ``t_obs`` (seconds) under ``(p, beta)``.

    ``beta`` in 1/s. Marks below ``mark_floor`` (followers) are raised to it.
    """
    return loglikelihood_grad(times, marks, t_obs, p, beta, mark_floor=mark_floor)[0]


def loglikelihood_grad(
    times: np.ndarray, marks: np.ndarray, t_obs: float, p: float, beta: float, *, mark_floor: float = 1.0
) -> tuple[float, np.ndarray]:
    """Log-likelihood and its gradient ``[dLL/dp, dLL/dbeta]`` (shape (2,)), in O(n)."""
    p = check_positive(p, "p")
    beta = check_positive(beta, "beta")
    t, m, T = check_cascade(times, marks, t_obs, min_events=1)
    ll, dp, db = _loglik(t, m, T, p, beta, _check_floor(mark_floor))
    return float(ll), np.array([dp, db])


def fit_exp(
    times: np.ndarray,
    marks: np.ndarray,
    t_obs: float,
    *,
    mark_law: MarkLaw = COURSE_MARKS,
    prior: LogNormalPrior | None = COURSE_PRIOR,
    max_n_star: float = 1.0,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    mark_floor: float = 1.0,
    n_grid: int = 10,
    tol: float = 1e-9,
    max_iter: int = 100,
) -> HawkesFit:
    """MAP (or, with ``prior=None``, maximum-likelihood) fit of the exponential kernel.

    See :func:`estimators.fit_cascade` for the parameters. ``p`` is bounded so
    that ``n_star = p E[m] < max_n_star`` and ``beta`` (1/s) lies in ``beta_bounds``.
    """
    t, m, T = check_cascade(times, marks, t_obs)
    consts, em = _fit_constants(mark_law, prior, max_n_star, tuple(beta_bounds), mark_floor)
    u, v, ll, obj, AT, passes, ok = _fit_map(t, m, T, consts, n_grid, tol, max_iter)
    p, beta = math.exp(u), math.exp(v)
    if not (np.isfinite(ll) and np.isfinite(obj)):
        raise FloatingPointError(f"the fit produced a non-finite objective (loglik={ll}, objective={obj})")
    if not ok:
        warnings.warn(f"exp-kernel fit did not converge in {max_iter} iterations", ConvergenceWarning, stacklevel=2)
    n_star = p * em
    G1 = p * AT
    n_obs = int(t.shape[0])
    return HawkesFit(
        p=p,
        beta=beta,
        n_star=n_star,
        G1=G1,
        n_obs=n_obs,
        final_size=float(forecast_size(n_obs, G1, n_star)),
        loglik=float(ll),
        log_posterior=float(obj),
        t_obs=T,
        mark_law=mark_law,
        n_iter=int(passes),
        converged=bool(ok),
    )
