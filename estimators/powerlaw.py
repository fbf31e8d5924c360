"""Marked Hawkes process with power-law kernel (Mishra, Rizoiu & Xie, CIKM 2016).

The model: an event with mark ``m`` (the poster's follower count) at time
``t_j`` raises the intensity by

    phi(m, tau) = kappa * m**beta * (tau + c)**-(1 + theta),   tau = t - t_j in seconds,

with ``kappa > 0``, mark exponent ``0 <= beta < alpha - 1``, cut-off ``c > 0`` (s)
and tail exponent ``theta > 0``. The original post (the first event) is given, so
the log-likelihood of the events ``t_1 < ... < t_n < T`` on ``[0, T]`` is

    LL = sum_{i>=2} log lambda(t_i) - sum_i kappa m_i**beta (c**-theta - (T - t_i + c)**-theta) / theta,
    lambda(t) = sum_{t_j < t} phi(m_j, t - t_j).

With marks drawn from a :class:`~estimators.marks.MarkLaw` (for the course's Pareto law of
exponent ``alpha`` and lower bound ``mu``, ``E[m**beta] = mu**beta (alpha - 1) / (alpha - 1 - beta)``)
the branching factor is

    n_star = kappa * E[m**beta] * c**-theta / theta,

the expected number of direct children still to come after ``T`` from the
observed events is (``A1`` in the paper, ``G1`` in :class:`PowerLawFit`)

    A1 = sum_i kappa m_i**beta (T - t_i + c)**-theta / theta,

and the final size forecast is ``N = n_obs + A1 / (1 - n_star)``.

Fast likelihood
---------------
The compensator is exact and O(n). The intensity term is O(n^2) if summed
directly; here the kernel is written as a mixture of exponentials through its
Laplace representation (``s = 1 + theta``, ``y = tau + c``)

    y**-s = 1/Gamma(s) int_0^inf x**(s-1) e^{-x y} dx = 1/Gamma(s) int_R e^{s u - e^u y} du,

discretised by the trapezoidal rule on a log-spaced grid ``x_k = e^{u_k}`` of
step ``h``: ``y**-s ~ sum_k a_k(s, c) e^{-x_k tau}`` with
``a_k = h x_k**s e^{-x_k c} / Gamma(s)``. By Poisson summation the relative error
of the infinite trapezoidal sum is ``2 sum_{m>=1} |Gamma(s + 2 pi i m / h)| / Gamma(s)``,
the same for every ``y``: ``h`` is the largest step that keeps it below a quarter
of the tolerance ``rtol`` for every ``s`` in the fitting range. The grid is cut
above where the regularised upper incomplete gamma ``Q(s, x y_min)`` is below a
quarter of ``rtol``; below, all the remaining nodes (an infinite geometric tail
of weights) are lumped into one node whose weight is their exact total and whose
position is their weighted mean (for the smallest ``s``), the cut being the
highest one whose lumping error at the largest lag is below a quarter of
``rtol``. The approximation is uniform in relative terms: every kernel value
``(tau + c)**-(1 + theta)`` with ``tau + c`` in ``[c_min, c_max + t_n - t_1]`` and
``theta`` in the fitting range is matched to ``rtol`` (default 1e-9), so each
``log lambda(t_i)`` is exact to ``rtol`` absolute and the log-likelihood to
``(n - 1) * rtol``. The grid needs K ~ 60-100 nodes (it grows like
``log((c_max + span) / c_min)`` and ``log(1/rtol)``).

The grid is fixed for a fit (it depends on the bounds, not on the parameters),
so ``e^{-x_k (t_i - t_{i-1})}`` is tabulated once and each likelihood pass is
``K`` exponential recursions ``R_k(i) = e^{-x_k dt} (R_k(i-1) + m_{i-1}**beta)``,
O(nK) multiply-adds, no transcendental function in the inner loop. The
parameters enter only through ``m**beta`` and the weights ``a_k``, so the
gradient is analytic: ``d a_k / d c = -x_k a_k``,
``d a_k / d theta = a_k (log x_k - digamma(s))``, and ``d/d beta`` runs a second
recursion with ``m**beta log m``. The gradient returned is the exact gradient of
the approximate log-likelihood, so the optimiser sees a smooth function.

Fit
---
Maximum likelihood on ``(n_star, beta, c, theta)``, ``kappa`` being a function
of ``n_star``. For fixed ``(beta, c, theta)`` the log-likelihood is
``(n-1) log n_star - n_star D + const``, maximised in closed form at
``n_star = (n-1)/D`` clipped to ``[n_star_min, max_n_star]`` (``max_n_star``
defaults to 0.999, so ``n_star < 1`` always holds). The resulting profile in
``(beta, log c, log theta)`` is continuously differentiable (its gradient is the
partial gradient at the clipped optimum) and is maximised by L-BFGS-B within the
box bounds, started from the best points of a coarse grid over
``(beta, c, theta)`` that is evaluated in a few passes (the grid shares one set
of recursions per ``beta``). Default bounds: ``c`` in [1 s, 3600 s] (reaction
delays from a second to an hour), ``theta`` in [0.01, 3] (from an almost flat
kernel to one that decays like ``tau**-4``), ``beta`` in ``[0, 0.99 (alpha - 1)]``
(``E[m**beta]`` is infinite at ``alpha - 1``).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.optimize import minimize
from scipy.special import gammainccinv, gammaln, loggamma, psi

from ._validation import check_cascade, check_positive
from .hawkes import ConvergenceWarning
from .forecast import forecast_size
from .marks import COURSE_MARKS, MarkLaw, sample_pareto
from .results import PowerLawFit
from .simulate import SimulatedCascade, branch

__all__ = [
    "DEFAULT_C_BOUNDS",
    "DEFAULT_THETA_BOUNDS",
    "DEFAULT_MAX_N_STAR",
    "KERNEL_RTOL",
    "PowerLawCascade",
    "powerlaw_n_star",
    "powerlaw_a1",
    "powerlaw_loglikelihood",
    "powerlaw_loglikelihood_grad",
    "fit_powerlaw",
    "simulate_powerlaw_cascade",
]

#: Bounds on the cut-off ``c``, seconds.
DEFAULT_C_BOUNDS: tuple[float, float] = (1.0, 3600.0)
#: Bounds on the tail exponent ``theta``.
DEFAULT_THETA_BOUNDS: tuple[float, float] = (0.01, 3.0)
#: Upper bound on the fitted branching factor.
DEFAULT_MAX_N_STAR: float = 0.999
#: Lower bound on the fitted branching factor (keeps ``log n_star`` finite).
N_STAR_MIN: float = 1e-8
#: Relative accuracy of the exponential-sum approximation of the kernel.
KERNEL_RTOL: float = 1e-9
#: Largest table ``exp(-x_k dt_i)`` kept in memory (elements); beyond, exponentials are recomputed.
MAX_TABLE_SIZE: int = 4_000_000


# --------------------------------------------------------------------------- closed forms


def powerlaw_n_star(
    kappa: float, beta: float, c: float, theta: float, *, mark_law: MarkLaw = COURSE_MARKS
) -> float:
    """Branching factor ``kappa E[m**beta] c**-theta / theta`` (``c`` in seconds)."""
    return float(kappa * mark_law.moment(beta) * c ** (-theta) / theta)


def powerlaw_a1(
    times: np.ndarray, marks: np.ndarray, t_obs: float, kappa: float, beta: float, c: float, theta: float,
    *, mark_floor: float = 1.0,
) -> float:
    """Expected number of direct children after ``t_obs`` of the events before it (``A1``, the paper's notation).

    ``sum_i kappa m_i**beta (t_obs - t_i + c)**-theta / theta``; times and ``c`` in seconds.
    """
    t, m, T = _prepare(times, marks, t_obs, mark_floor, min_events=1)
    return _a1(t, np.log(m), T, kappa, beta, c, theta)


def _a1(t, logm, T, kappa, beta, c, theta):
    lw = beta * logm - theta * np.log(T - t + c)
    return float(kappa / theta * np.exp(lw).sum())


# --------------------------------------------------------------------------- quadrature


@dataclass(frozen=True)
class _Quadrature:
    """Exponential-sum approximation of ``y**-s`` for ``y`` in ``[y_min, y_max]``, ``s`` in ``[s_min, s_max]``.

    ``x`` (shape (K,)) are the decay rates in 1/s; the last one is the lumped tail node.
    ``u`` are the log-rates of the regular nodes (shape (K-1,)), ``h`` the step,
    ``u_cut`` the log-rate of the highest lumped node (the lumped node's rate is the
    mean of the lumped rates weighted by ``x**s_min``).
    """

    x: np.ndarray
    u: np.ndarray
    h: float
    u_cut: float
    rtol: float
    y_min: float
    y_max: float
    s_min: float
    s_max: float

    @property
    def size(self) -> int:
        return int(self.x.size)

    def weights(self, c: float, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights ``a_k`` with ``y**-s ~ sum_k a_k e^{-x_k (y - c)}`` and their derivatives in ``c`` and ``s``.

        Returns ``a``, ``d a / d c``, ``d a / d s``, each of shape (K,).
        """
        K = self.x.size
        la = np.empty(K)
        dls = np.empty(K)
        lg = math.lgamma(s)
        dg = float(psi(s))
        la[:-1] = math.log(self.h) + s * self.u - self.x[:-1] * c - lg
        dls[:-1] = self.u - dg
        # lumped tail: sum_{j>=0} h e^{s (u_cut - j h)} = h e^{s u_cut} / (1 - e^{-s h})
        q = -math.expm1(-s * self.h)
        la[-1] = math.log(self.h) + s * self.u_cut - math.log(q) - self.x[-1] * c - lg
        dls[-1] = self.u_cut - self.h / math.expm1(s * self.h) - dg
        a = np.exp(la)
        return a, -self.x * a, dls * a


def _alias_error(h: float, s: np.ndarray, n_terms: int = 12) -> float:
    """Largest relative aliasing error of the infinite trapezoidal sum over the exponents ``s``."""
    m = np.arange(1, n_terms + 1)
    z = s[:, None] + 2j * np.pi * m[None, :] / h
    return float(np.max(2.0 * np.exp(loggamma(z).real - gammaln(s)[:, None]).sum(axis=1)))


@functools.lru_cache(maxsize=256)
def _quadrature(y_min: float, y_max: float, s_min: float, s_max: float, rtol: float) -> _Quadrature:
    """Build the grid (see the module docstring); each of three error sources gets ``rtol / 4``."""
    eps = rtol / 4.0
    s_grid = np.linspace(s_min, s_max, 25)
    # step: largest h with aliasing error <= eps (the error increases with h)
    lo, hi = 0.02, 2.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if _alias_error(mid, s_grid) <= eps:
            lo = mid
        else:
            hi = mid
    h = lo
    # top: Q(s, x_top y_min) <= eps for all s
    u_top = math.log(float(np.max(gammainccinv(s_grid, eps))) / y_min)
    # lump the nodes below u_cut into one, error checked at the largest lags
    s_ref = s_min
    ys = y_max * np.array([1.0, 0.3, 0.1, 0.03, 0.01])
    ys = ys[ys >= y_min]
    if ys.size == 0:
        ys = np.array([y_max])
    tail = np.arange(600)
    lg = gammaln(s_grid)

    def lump_error(u_cut: float) -> float:
        uj = u_cut - h * tail  # (J,)
        xj = np.exp(uj)
        ratio = -math.expm1(-s_ref * h) / -math.expm1(-(s_ref + 1.0) * h)
        x_star = math.exp(u_cut) * ratio
        err = 0.0
        for y in ys:
            diff = np.exp(-xj * y) - math.exp(-x_star * y)  # (J,)
            # relative to y**-s: h sum_j e^{s u_j} diff_j y**s / Gamma(s)
            w = np.exp(s_grid[:, None] * (uj[None, :] + math.log(y)) - lg[:, None]) * h
            err = max(err, float(np.max(np.abs((w * diff[None, :]).sum(axis=1)))))
        return err

    # start near x y_max = 1 and walk down until the lumping error is small enough
    j0 = max(int(math.floor((u_top + math.log(y_max)) / h)), 0)
    u_cut = u_top - h * j0
    while lump_error(u_cut) > eps:
        u_cut -= h
    n_reg = int(round((u_top - u_cut) / h))  # regular nodes: u_top, ..., u_cut + h
    u = u_top - h * np.arange(n_reg)
    ratio = -math.expm1(-s_ref * h) / -math.expm1(-(s_ref + 1.0) * h)
    x = np.concatenate([np.exp(u), [math.exp(u_cut) * ratio]])
    return _Quadrature(x=x, u=u, h=h, u_cut=u_cut, rtol=rtol, y_min=y_min, y_max=y_max, s_min=s_min, s_max=s_max)


def _round_up(y: float) -> float:
    """Round up to the next point of a 20-per-decade grid (so grids are reused across cascades)."""
    return float(10.0 ** (math.ceil(math.log10(y) * 20.0 - 1e-9) / 20.0))


# --------------------------------------------------------------------------- compiled passes


@njit(cache=True)
def _exp_table(dt, x):
    """``exp(-x_k dt_i)``, shape (n - 1, K)."""
    out = np.empty((dt.shape[0], x.shape[0]))
    for i in range(dt.shape[0]):
        for k in range(x.shape[0]):
            out[i, k] = math.exp(-x[k] * dt[i])
    return out


@njit(cache=True, fastmath={"reassoc", "contract"})
def _pass(dt, mb, mbl, x, table, a, ac, as_, grad):
    """Sum over i >= 2 of log l_i and of the derivatives of log l_i in beta, c and s.

    ``l_i = sum_k a_k R_k(i)`` approximates ``sum_{j<i} m_j**beta (t_i - t_j + c)**-s``.
    ``mb = m**beta``, ``mbl = m**beta log m``; ``a``, ``ac``, ``as_`` are the weights and
    their derivatives in ``c`` and ``s``. ``table`` is ``exp(-x dt)`` or has 0 rows.
    """
    n = mb.shape[0]
    K = x.shape[0]
    R = np.zeros(K)
    S = np.zeros(K)
    e = np.empty(K)
    use_table = table.shape[0] == n - 1 and n > 1
    L = 0.0
    Gb = 0.0
    Gc = 0.0
    Gs = 0.0
    for i in range(1, n):
        if use_table:
            for k in range(K):
                e[k] = table[i - 1, k]
        else:
            for k in range(K):
                e[k] = math.exp(-x[k] * dt[i - 1])
        mp = mb[i - 1]
        lam = 0.0
        if grad:
            lp = mbl[i - 1]
            sb = 0.0
            sc = 0.0
            ss = 0.0
            for k in range(K):
                r = e[k] * (R[k] + mp)
                R[k] = r
                q = e[k] * (S[k] + lp)
                S[k] = q
                lam += a[k] * r
                sb += a[k] * q
                sc += ac[k] * r
                ss += as_[k] * r
            if lam < 1e-300:
                lam = 1e-300
            Gb += sb / lam
            Gc += sc / lam
            Gs += ss / lam
        else:
            for k in range(K):
                r = e[k] * (R[k] + mp)
                R[k] = r
                lam += a[k] * r
            if lam < 1e-300:
                lam = 1e-300
        L += math.log(lam)
    return L, Gb, Gc, Gs


@njit(cache=True, fastmath={"reassoc", "contract"})
def _grid_pass(dt, mb, x, table, A):
    """``sum_{i>=2} log(A[g] . R(i))`` for every row ``g`` of ``A`` (shape (G, K)); one recursion for all."""
    n = mb.shape[0]
    K = x.shape[0]
    G = A.shape[0]
    R = np.zeros(K)
    out = np.zeros(G)
    use_table = table.shape[0] == n - 1 and n > 1
    for i in range(1, n):
        mp = mb[i - 1]
        if use_table:
            for k in range(K):
                R[k] = table[i - 1, k] * (R[k] + mp)
        else:
            for k in range(K):
                R[k] = math.exp(-x[k] * dt[i - 1]) * (R[k] + mp)
        for g in range(G):
            lam = 0.0
            for k in range(K):
                lam += A[g, k] * R[k]
            if lam < 1e-300:
                lam = 1e-300
            out[g] += math.log(lam)
    return out


# --------------------------------------------------------------------------- likelihood


class _Cascade:
    """Observed events prepared for repeated likelihood passes on a fixed quadrature grid."""

    def __init__(self, t: np.ndarray, m: np.ndarray, T: float, quad: _Quadrature, max_table: int = MAX_TABLE_SIZE):
        self.t = t
        self.T = T
        self.n = int(t.size)
        self.n1 = self.n - 1
        self.logm = np.log(m)
        self.dt = np.ascontiguousarray(np.diff(t))
        self.tau = T - t  # > 0
        self.quad = quad
        if self.n1 * quad.size <= max_table:
            self.table = _exp_table(self.dt, quad.x)
        else:
            self.table = np.empty((0, quad.size))
        self.passes = 0

    def compensator(self, beta: float, c: float, theta: float, grad: bool):
        """``sum_i m_i**beta g_i`` with ``g_i = (c**-theta - (tau_i + c)**-theta)/theta`` and its derivatives."""
        mb = np.exp(beta * self.logm)
        D = np.log1p(self.tau / c)
        z = theta * D
        ct = c ** (-theta)
        one_minus = -np.expm1(-z)  # 1 - (1 + tau/c)**-theta
        g = ct * one_minus / theta
        C = float(mb @ g)
        if not grad:
            return C, 0.0, 0.0, 0.0
        Cb = float((mb * self.logm) @ g)
        # d g / d c = c**-s (e^{-s D} - 1)
        dgc = c ** (-(1.0 + theta)) * np.expm1(-(1.0 + theta) * D)
        # d g / d theta = -log(c) g - c**-theta q(z) / theta**2, q(z) = 1 - (1 + z) e^{-z}
        qz = np.where(z < 1e-4, z * z * (0.5 - z / 3.0 + z * z / 8.0), one_minus - z * np.exp(-z))
        dgt = -math.log(c) * g - ct * qz / theta**2
        return C, Cb, float(mb @ dgc), float(mb @ dgt)

    def intensity(self, beta: float, c: float, theta: float, grad: bool):
        """``sum_{i>=2} log l_i`` (``lambda_i = kappa l_i``) and its derivatives in beta, c, theta."""
        mb = np.exp(beta * self.logm)
        mbl = mb * self.logm
        a, ac, as_ = self.quad.weights(c, 1.0 + theta)
        self.passes += 1
        return _pass(self.dt, mb, mbl, self.quad.x, self.table, a, ac, as_, grad)

    def loglik_grad(self, kappa: float, beta: float, c: float, theta: float):
        """Full log-likelihood and gradient in ``(kappa, beta, c, theta)``."""
        L, Lb, Lc, Lt = self.intensity(beta, c, theta, True)
        C, Cb, Cc, Ct = self.compensator(beta, c, theta, True)
        ll = self.n1 * math.log(kappa) + L - kappa * C
        g = np.array([self.n1 / kappa - C, Lb - kappa * Cb, Lc - kappa * Cc, Lt - kappa * Ct])
        return ll, g


def _prepare(times, marks, t_obs, mark_floor, min_events=2):
    t, m, T = check_cascade(times, marks, t_obs, min_events=min_events)
    mark_floor = check_positive(mark_floor, "mark_floor")
    return t, np.maximum(m, mark_floor), T


def _eval_quadrature(t: np.ndarray, c: float, theta: float, rtol: float) -> _Quadrature:
    """Grid for evaluating at given parameters: covers the default bounds too, so it is locally constant."""
    y_min = min(c, DEFAULT_C_BOUNDS[0])
    y_max = _round_up(max(c, DEFAULT_C_BOUNDS[1]) + float(t[-1] - t[0]))
    s_min = 1.0 + min(theta, DEFAULT_THETA_BOUNDS[0])
    s_max = 1.0 + max(theta, DEFAULT_THETA_BOUNDS[1])
    return _quadrature(y_min, y_max, s_min, s_max, rtol)


def powerlaw_loglikelihood(
    times: np.ndarray, marks: np.ndarray, t_obs: float, kappa: float, beta: float, c: float, theta: float,
    *, mark_floor: float = 1.0, rtol: float = KERNEL_RTOL,
) -> float:
    """Log-likelihood of the events before ``t_obs`` (seconds) under the power-law kernel.

    ``c`` in seconds; marks below ``mark_floor`` (followers, > 0) are raised to it.
    Computed in O(n K) with every kernel value exact to ``rtol`` relative, so the
    result is within ``(n - 1) * rtol`` of the exact O(n^2) sum.
    """
    return powerlaw_loglikelihood_grad(times, marks, t_obs, kappa, beta, c, theta, mark_floor=mark_floor, rtol=rtol)[0]


def powerlaw_loglikelihood_grad(
    times: np.ndarray, marks: np.ndarray, t_obs: float, kappa: float, beta: float, c: float, theta: float,
    *, mark_floor: float = 1.0, rtol: float = KERNEL_RTOL,
) -> tuple[float, np.ndarray]:
    """Log-likelihood and its gradient ``[d/dkappa, d/dbeta, d/dc, d/dtheta]`` (shape (4,)).

    The gradient is that of the O(n K) approximation (see the module docstring).
    """
    kappa = check_positive(kappa, "kappa")
    c = check_positive(c, "c")
    theta = check_positive(theta, "theta")
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a number, got {beta!r}") from None
    if not np.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    rtol = check_positive(rtol, "rtol")
    t, m, T = _prepare(times, marks, t_obs, mark_floor, min_events=1)
    casc = _Cascade(t, m, T, _eval_quadrature(t, c, theta, rtol))
    ll, g = casc.loglik_grad(kappa, beta, c, theta)
    return float(ll), g


# --------------------------------------------------------------------------- fit


class _Profile:
    """Log-likelihood maximised over ``n_star`` in closed form, as a function of ``(beta, log c, log theta)``."""

    def __init__(self, casc: _Cascade, mark_law: MarkLaw, n_star_max: float):
        self.casc = casc
        self.mark_law = mark_law
        self.n_star_max = n_star_max

    def log_moment(self, beta: float) -> float:
        """``log E[m**beta]`` under the marks' law."""
        return math.log(self.mark_law.moment(beta))

    def n_star_hat(self, log_k0: float, C: float) -> float:
        """argmax of ``(n-1) log n_star - n_star k0 C`` over ``[N_STAR_MIN, n_star_max]``."""
        n1 = self.casc.n1
        D = math.exp(log_k0) * C
        ns = n1 / D if D > 0 else self.n_star_max
        return min(max(ns, N_STAR_MIN), self.n_star_max)

    def value_grad(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        beta, lc, lt = float(v[0]), float(v[1]), float(v[2])
        c, theta = math.exp(lc), math.exp(lt)
        casc = self.casc
        L, Lb, Lc, Lt = casc.intensity(beta, c, theta, True)
        C, Cb, Cc, Ct = casc.compensator(beta, c, theta, True)
        log_k0 = lt + theta * lc - self.log_moment(beta)  # kappa = n_star * k0
        ns = self.n_star_hat(log_k0, C)
        log_kappa = math.log(ns) + log_k0
        kappa = math.exp(log_kappa)
        n1 = casc.n1
        ll = n1 * log_kappa + L - kappa * C
        gk = n1 - kappa * C  # d LL / d log kappa
        gb = Lb - kappa * Cb - gk * self.mark_law.log_moment_slope(beta)
        gc = c * (Lc - kappa * Cc) + gk * theta
        gt = theta * (Lt - kappa * Ct) + gk * (1.0 + theta * lc)
        return ll, np.array([gb, gc, gt])


def _start_grid(casc: _Cascade, prof: _Profile, beta_bounds, c_bounds, theta_bounds):
    """Profile log-likelihood on a coarse grid; returns (points (G, 3) in (beta, log c, log theta), values (G,))."""
    b_lo, b_hi = beta_bounds
    betas = b_lo + (b_hi - b_lo) * np.array([0.15, 0.5, 0.85])
    cs = np.exp(np.linspace(math.log(c_bounds[0]), math.log(c_bounds[1]), 5))
    ths = np.exp(np.linspace(math.log(theta_bounds[0]), math.log(theta_bounds[1]), 6))
    cc, tt = np.meshgrid(cs, ths, indexing="ij")
    cc, tt = cc.ravel(), tt.ravel()
    A = np.empty((cc.size, casc.quad.size))
    for g in range(cc.size):
        A[g] = casc.quad.weights(cc[g], 1.0 + tt[g])[0]
    pts, vals = [], []
    n1 = casc.n1
    for beta in betas:
        mb = np.exp(beta * casc.logm)
        Ls = _grid_pass(casc.dt, mb, casc.quad.x, casc.table, A)
        casc.passes += 1
        for g in range(cc.size):
            c, theta = cc[g], tt[g]
            C = casc.compensator(beta, c, theta, False)[0]
            log_k0 = math.log(theta) + theta * math.log(c) - prof.log_moment(beta)
            ns = prof.n_star_hat(log_k0, C)
            log_kappa = math.log(ns) + log_k0
            ll = n1 * log_kappa + Ls[g] - math.exp(log_kappa) * C
            pts.append((beta, math.log(c), math.log(theta)))
            vals.append(ll)
    return np.array(pts), np.array(vals)


def fit_powerlaw(
    times: np.ndarray,
    marks: np.ndarray,
    t_obs: float,
    *,
    mark_law: MarkLaw = COURSE_MARKS,
    mark_floor: float = 1.0,
    max_n_star: float = DEFAULT_MAX_N_STAR,
    beta_bounds: tuple[float, float] | None = None,
    c_bounds: tuple[float, float] = DEFAULT_C_BOUNDS,
    theta_bounds: tuple[float, float] = DEFAULT_THETA_BOUNDS,
    n_starts: int = 2,
    rtol: float = KERNEL_RTOL,
    max_iter: int = 500,
) -> PowerLawFit:
    """Maximum-likelihood fit of the power-law kernel to the events before ``t_obs``.

    Parameters
    ----------
    times, marks : array-like, shape (n,)
        Event times (seconds since the original post, sorted) and marks (followers).
        Only events with ``t < t_obs`` are used; at least two are needed.
    t_obs : float
        End of the observation window, seconds.
    mark_law : MarkLaw
        The marks' law, used for ``n_star`` (``E[m**beta]``).
    mark_floor : float
        Marks below it are raised to it (> 0, as ``m**beta`` needs ``m > 0``).
    max_n_star : float
        Upper bound on the branching factor, in (0, 1).
    beta_bounds : (float, float) or None
        Bounds on the mark exponent; default ``(0, 0.99 (alpha - 1))``, ``alpha`` the law's tail exponent.
    c_bounds : (float, float)
        Bounds on ``c``, seconds.
    theta_bounds : (float, float)
        Bounds on ``theta``.
    n_starts : int
        L-BFGS-B runs, from the best points of a 3 x 5 x 6 grid over ``(beta, c, theta)``.
    rtol : float
        Relative accuracy of the kernel approximation.
    max_iter : int
        Iteration limit of each L-BFGS-B run.

    Returns
    -------
    PowerLawFit
        ``converged`` is False (with a :class:`ConvergenceWarning`) if the best run
        did not meet its tolerance.

    Raises
    ------
    ValueError
        On bad input (see :func:`estimators._validation.check_cascade`) or bounds.
    FloatingPointError
        If the optimum is not finite (never returned silently).
    """
    t, m, T = _prepare(times, marks, t_obs, mark_floor)
    if not isinstance(mark_law, MarkLaw):
        raise TypeError(f"mark_law must be a MarkLaw, got {type(mark_law).__name__}")
    alpha = mark_law.alpha
    max_n_star = check_positive(max_n_star, "max_n_star")
    if max_n_star >= 1:
        raise ValueError(f"max_n_star must be in (0, 1), got {max_n_star}")
    if beta_bounds is None:
        beta_bounds = (0.0, 0.99 * (alpha - 1.0))
    b_lo, b_hi = (float(b) for b in beta_bounds)
    if not (0 <= b_lo < b_hi < alpha - 1):
        raise ValueError(f"beta_bounds must satisfy 0 <= lo < hi < alpha - 1 = {alpha - 1}, got {beta_bounds}")
    c_lo, c_hi = (check_positive(b, "c_bounds") for b in c_bounds)
    th_lo, th_hi = (check_positive(b, "theta_bounds") for b in theta_bounds)
    if not (c_lo < c_hi and th_lo < th_hi):
        raise ValueError(f"c_bounds and theta_bounds must be increasing, got {c_bounds}, {theta_bounds}")
    rtol = check_positive(rtol, "rtol")

    quad = _quadrature(c_lo, _round_up(c_hi + float(t[-1] - t[0])), 1.0 + th_lo, 1.0 + th_hi, rtol)
    casc = _Cascade(t, m, T, quad)
    prof = _Profile(casc, mark_law, max_n_star)
    pts, vals = _start_grid(casc, prof, (b_lo, b_hi), (c_lo, c_hi), (th_lo, th_hi))
    scale = 1.0 / casc.n

    def fun(v):
        ll, g = prof.value_grad(v)
        if not np.isfinite(ll) or not np.isfinite(g).all():
            return np.inf, np.zeros(3)
        return -ll * scale, -g * scale

    bounds = [(b_lo, b_hi), (math.log(c_lo), math.log(c_hi)), (math.log(th_lo), math.log(th_hi))]
    order = np.argsort(-np.nan_to_num(vals, nan=-np.inf))
    runs = []
    for j in order[: max(int(n_starts), 1)]:
        res = minimize(fun, pts[j], jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": int(max_iter), "ftol": 1e-13, "gtol": 1e-8})
        ok = bool(res.success) or _projected_grad_small(res, bounds)
        runs.append((float(-res.fun / scale) if np.isfinite(res.fun) else -np.inf, res.x, ok))
    _, x_best, ok = max(runs, key=lambda r: r[0])
    # evaluate once more at the chosen point (also records kappa, n_star)
    ll, _ = prof.value_grad(x_best)
    beta, c, theta = float(x_best[0]), math.exp(x_best[1]), math.exp(x_best[2])
    log_k0 = math.log(theta) + theta * math.log(c) - prof.log_moment(beta)
    C = casc.compensator(beta, c, theta, False)[0]
    n_star = prof.n_star_hat(log_k0, C)
    kappa = n_star * math.exp(log_k0)
    if not (np.isfinite(ll) and np.isfinite(kappa) and np.isfinite(n_star)):
        raise FloatingPointError(f"the power-law fit produced non-finite values (loglik={ll}, kappa={kappa})")
    if not ok:
        warnings.warn("power-law fit: L-BFGS-B did not meet its tolerance", ConvergenceWarning, stacklevel=2)
    G1 = _a1(t, casc.logm, T, kappa, beta, c, theta)
    n_obs = casc.n
    return PowerLawFit(
        kappa=kappa,
        beta=beta,
        c=c,
        theta=theta,
        n_star=float(n_star),
        G1=G1,
        n_obs=n_obs,
        final_size=float(forecast_size(n_obs, G1, n_star)),
        loglik=float(ll),
        log_posterior=float(ll),
        t_obs=T,
        mark_law=mark_law,
        n_iter=int(casc.passes),
        converged=bool(ok),
    )


def _projected_grad_small(res, bounds, tol: float = 1e-5) -> bool:
    """Whether the projected gradient (per event) vanishes at a run that stopped in its line search."""
    if not np.isfinite(res.fun):
        return False
    g = np.asarray(res.jac, dtype=float).copy()
    x = np.asarray(res.x, dtype=float)
    for k, (lo, hi) in enumerate(bounds):
        if (x[k] <= lo + 1e-10 and g[k] > 0) or (x[k] >= hi - 1e-10 and g[k] < 0):
            g[k] = 0.0
    return bool(np.max(np.abs(g)) <= tol)


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True, slots=True)
class PowerLawCascade(SimulatedCascade):
    """A complete cascade simulated with the power-law kernel.

    ``beta`` is the mark exponent (as in :class:`PowerLawFit`), ``kappa``, ``c`` (s)
    and ``theta`` the other kernel parameters; ``p`` is NaN (there is no
    exponential kernel) and :attr:`n_star` is the power-law branching factor.
    """

    kappa: float
    c: float
    theta: float

    @property
    def n_star(self) -> float:
        return powerlaw_n_star(self.kappa, self.beta, self.c, self.theta, mark_law=MarkLaw.pareto(self.alpha, self.mu))


#: Longest delay drawn by the simulator, seconds (Lomax draws beyond it would overflow).
MAX_DELAY: float = 1e300


def simulate_powerlaw_cascade(
    kappa: float,
    beta: float,
    c: float,
    theta: float,
    *,
    alpha: float = 2.4,
    mu: float = 10.0,
    m0: float | None = None,
    max_size: int = 1_000_000,
    random_state: int | np.random.Generator | None = None,
) -> PowerLawCascade:
    """Simulate one complete cascade started by a post with mark ``m0`` at ``t = 0``.

    Exact branching simulation: an event with mark ``m`` has a
    Poisson(``kappa m**beta c**-theta / theta``) number of direct children, each
    after a Lomax delay ``c ((1 - U)**(-1/theta) - 1)`` seconds (density
    proportional to ``(tau + c)**-(1 + theta)``) and with a Pareto(``alpha``, ``mu``)
    mark. Generations run until extinction (``n_star < 1`` is required). Delays
    beyond :data:`MAX_DELAY` (only for tiny ``theta``) are clipped to it.

    Raises
    ------
    ValueError
        On non-positive parameters, ``beta`` outside ``[0, alpha - 1)`` or ``n_star >= 1``.
    CascadeTooLarge
        Beyond ``max_size`` events.
    """
    kappa = check_positive(kappa, "kappa")
    c = check_positive(c, "c")
    theta = check_positive(theta, "theta")
    alpha = check_positive(alpha, "alpha")
    mu = check_positive(mu, "mu")
    beta = float(beta)
    if not 0 <= beta < alpha - 1:
        raise ValueError(f"beta must be in [0, alpha - 1) = [0, {alpha - 1}), got {beta}")
    n_star = powerlaw_n_star(kappa, beta, c, theta, mark_law=MarkLaw.pareto(alpha, mu))
    if n_star >= 1:
        raise ValueError(f"the branching factor n_star = {n_star:.3f} must be < 1 for a finite cascade")
    rng = np.random.default_rng(random_state)
    if m0 is None:
        m0 = float(sample_pareto(alpha, mu, 1, rng)[0])
    m0 = check_positive(m0, "m0")
    rate = kappa * c ** (-theta) / theta

    def delays(n: int) -> np.ndarray:
        u = rng.random(n)
        with np.errstate(over="ignore"):
            return np.minimum(c * np.expm1(-np.log1p(-u) / theta), MAX_DELAY)

    times, marks, parents = branch(
        m0, lambda m: rate * m**beta, delays, alpha=alpha, mu=mu, max_size=max_size, n_star=n_star, rng=rng
    )
    return PowerLawCascade(
        times=times, marks=marks, parents=parents, p=float("nan"), beta=beta, alpha=alpha, mu=mu,
        kappa=kappa, c=c, theta=theta,
    )
