"""Reference accuracy on simulated cascades: oracle forecasts and the best achievable ARE.

For each simulated cascade and observation window ``T_obs`` (pairs with at least two
observed events), four forecasts of the final size ``N`` (all events, original included)
are scored by their absolute relative error ``|N_hat - N| / N``:

``oracle_mean``
    The forecast with the TRUE parameters, ``n_obs + G1 / (1 - n_star)`` with
    ``G1 = p sum_{t_i < T} m_i exp(-beta (T - t_i))``.
``oracle_are_optimal``
    With the true parameters, the point minimising the expected ARE under the predictive
    law of ``N`` given the history (and the dataset's selection on ``N``): the
    ``1/N``-weighted median of that law.
``best_achievable``
    The ``1/N``-weighted median of the posterior predictive law of ``N`` under the TRUE
    generating law: ``(log p, log beta)`` bivariate normal (``SIMULATION_PRIOR``)
    truncated to ``n_star < 0.99`` and ``beta`` in ``DEFAULT_BETA_BOUNDS``, Pareto marks,
    and the selection ``min_size <= N <= max_size`` of :func:`simulate_dataset` (it keeps
    cascades of at least ``min_size`` events and redraws those beyond ``max_size``).
    No estimator can have a lower expected ARE on this dataset.
``posterior_mean``
    The mean of that posterior predictive law (for comparison).
``map_plugin``
    The best a point estimate can do knowing the generating law: the MAP fit under the TRUE
    prior and mark law (``estimators.fit_cascade``, same truncation), then the ARE-optimal
    point of the model's law of ``N`` at that estimate (``estimators.predictive``, given
    ``N >= min_size``). It ignores the posterior's spread: its gap to ``best_achievable`` is
    what the pipeline's plug-in forecast loses before any prior is learnt or correction fitted.

Method (Monte Carlo):

* Posterior of ``(u, v) = (log p, log beta)``: the log-likelihood of the observed events
  (``estimators.hawkes._pass``; ``p`` enters in closed form) plus the log prior density.
  For fixed ``v`` the log posterior is concave in ``u``; its slice is bracketed where it
  is within ``DROP_U`` of its maximum and integrated on ``NU`` cells, which gives the
  marginal of ``v`` on a grid of ``NV`` cells. The ``v`` grid is refined adaptively: it
  starts on the truncated prior support and shrinks to the cells within ``DROP_V`` of the
  maximum (plus one cell each side) until that region spans at least half the grid.
  A draw picks a ``v`` cell, jitters ``v`` uniformly inside it, and draws ``u`` from the
  exact slice at that ``v`` (cell pick + uniform jitter on ``NU`` cells). Cells are
  bounded by the truncation, so draws respect it exactly.
* Predictive: given ``(p, beta)`` and the history, the observed events still have
  ``Poisson(G1)`` direct children to come; every future event has a Pareto mark and
  ``Poisson(p m)`` children. Only counts matter, so the remaining size is simulated
  generation by generation (one Poisson draw per generation, ``Poisson(p sum m)``), in
  compiled code, stopped as soon as it exceeds ``max_size - n_obs``.
* Selection: a draw ``(theta, R)`` is kept when ``min_size <= n_obs + R <= max_size``.
  Drawing ``theta`` from prior x likelihood and keeping the draws that satisfy the
  selection samples the joint law of ``(theta, N)`` given the history and the selection,
  so both the posterior and the predictive are conditioned correctly. The oracle versions
  fix ``theta`` at the truth and apply the same selection.
* The ARE-optimal point of a sample is its ``1/N``-weighted median.

Usage: python bench/best_achievable.py [--n 1000] [--seed 0] [--law course] [--windows 600,1200,3600]
       [--samples 1000] [--jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from estimators.hawkes import DEFAULT_BETA_BOUNDS, _pass
from estimators.fit import fit_cascade
from estimators.marks import MarkLaw, pareto_mean
from estimators.predictive import are_optimal_size
from estimators.simulate import SIMULATION_LAWS, SIMULATION_PRIOR, LogNormalPrior, simulate_dataset

__all__ = [
    "GridPosterior",
    "posterior_samples",
    "remaining_size_samples",
    "selected_predictive",
    "are_optimal_point",
    "evaluate_pair",
    "reference_table",
    "NAMES",
]

NAMES = ("oracle_mean", "oracle_are_optimal", "best_achievable", "posterior_mean", "map_plugin")

#: Cells of the v grid and of each u slice; log-density drops that bound the grids.
NV = 128
NU = 128
DROP_V = 30.0
DROP_U = 40.0
#: Prior standard deviations kept below the prior mean on each axis (the upper sides are cut by the truncation).
PRIOR_SDS = 12.0


# --------------------------------------------------------------------------- compiled kernels


@njit(cache=True)
def _seed(s):
    np.random.seed(s)


@njit(cache=True)
def _f(u, v, n1, L, K, mu_u, mu_v, P00, P01, P11):
    """Log posterior (unnormalised) at (u, v) given the beta-pass results L, K."""
    du = u - mu_u
    dv = v - mu_v
    return n1 * (u + v) + L - math.exp(u) * K - 0.5 * (P00 * du * du + 2.0 * P01 * du * dv + P11 * dv * dv)


@njit(cache=True)
def _slice(t, m, T, v, n1, c):
    """Bracket of the u-slice at v: (L, K, A_T, f_max, a, b) with f >= f_max - DROP_U on [a, b]."""
    mu_u, mu_v, P00, P01, P11, ulo, uhi = c[0], c[1], c[2], c[3], c[4], c[5], c[6]
    L, Lb, Lbb, K, Kb, Kbb, AT = _pass(t, m, T, math.exp(v), 1.0)
    # mode: root of the decreasing derivative g(u) = n1 - e^u K - P00 du - P01 dv, clipped to [ulo, uhi]
    dv = v - mu_v
    if n1 - math.exp(uhi) * K - P00 * (uhi - mu_u) - P01 * dv >= 0.0:
        u0 = uhi
    elif n1 - math.exp(ulo) * K - P00 * (ulo - mu_u) - P01 * dv <= 0.0:
        u0 = ulo
    else:
        lo, hi = ulo, uhi
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if n1 - math.exp(mid) * K - P00 * (mid - mu_u) - P01 * dv > 0.0:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-13:
                break
        u0 = 0.5 * (lo + hi)
    f0 = _f(u0, v, n1, L, K, mu_u, mu_v, P00, P01, P11)
    target = f0 - DROP_U
    # left crossing (f increasing on [ulo, u0])
    if _f(ulo, v, n1, L, K, mu_u, mu_v, P00, P01, P11) >= target:
        a = ulo
    else:
        lo, hi = ulo, u0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if _f(mid, v, n1, L, K, mu_u, mu_v, P00, P01, P11) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-10 * (1.0 + abs(hi)):
                break
        a = lo
    if _f(uhi, v, n1, L, K, mu_u, mu_v, P00, P01, P11) >= target:
        b = uhi
    else:
        lo, hi = u0, uhi
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if _f(mid, v, n1, L, K, mu_u, mu_v, P00, P01, P11) < target:
                hi = mid
            else:
                lo = mid
            if hi - lo < 1e-10 * (1.0 + abs(hi)):
                break
        b = hi
    if b <= a:  # degenerate (numerically a point mass): give it a tiny width
        b = a + 1e-12
    return L, K, AT, f0, a, b


@njit(cache=True)
def _slice_grid(v, n1, L, K, a, b, c, lp):
    """Fill lp with the log density at the NU cell centres of [a, b]; return log(integral over u)."""
    nu = lp.shape[0]
    h = (b - a) / nu
    mx = -np.inf
    for k in range(nu):
        lp[k] = _f(a + (k + 0.5) * h, v, n1, L, K, c[0], c[1], c[2], c[3], c[4])
        if lp[k] > mx:
            mx = lp[k]
    s = 0.0
    for k in range(nu):
        s += math.exp(lp[k] - mx)
    return mx + math.log(s * h)


@njit(cache=True)
def _log_marginal_v(t, m, T, vs, n1, c, nu):
    """Log marginal posterior density of v (unnormalised) at each node of vs."""
    out = np.empty(vs.shape[0])
    lp = np.empty(nu)
    for j in range(vs.shape[0]):
        L, K, AT, f0, a, b = _slice(t, m, T, vs[j], n1, c)
        out[j] = _slice_grid(vs[j], n1, L, K, a, b, c, lp)
    return out


@njit(cache=True)
def _sample_theta(t, m, T, v_edges, cum_v, n1, c, nu, size):
    """Draw (u, v, A_T) from the grid posterior: v cell by cum_v then uniform jitter, u from its slice."""
    us = np.empty(size)
    vv = np.empty(size)
    ats = np.empty(size)
    lp = np.empty(nu)
    cu = np.empty(nu)
    for s in range(size):
        j = np.searchsorted(cum_v, np.random.random() * cum_v[-1], side="right")
        j = min(j, cum_v.shape[0] - 1)
        v = v_edges[j] + np.random.random() * (v_edges[j + 1] - v_edges[j])
        L, K, AT, f0, a, b = _slice(t, m, T, v, n1, c)
        _slice_grid(v, n1, L, K, a, b, c, lp)
        acc = 0.0
        for k in range(nu):
            acc += math.exp(lp[k] - f0)
            cu[k] = acc
        k = np.searchsorted(cu, np.random.random() * acc, side="right")
        k = min(k, nu - 1)
        h = (b - a) / nu
        us[s] = a + (k + np.random.random()) * h
        vv[s] = v
        ats[s] = AT
    return us, vv, ats


@njit(cache=True)
def _remaining(G1, p, alpha, mu, limit):
    """Remaining size draws: Poisson(G1[i]) fresh children, each a Galton-Watson tree with
    Pareto(alpha, mu) marks and Poisson(p[i] m) offspring. A draw stops as soon as its total
    exceeds ``limit`` (its value is then > limit but not the full size)."""
    n = G1.shape[0]
    out = np.empty(n, dtype=np.int64)
    e = -1.0 / (alpha - 1.0)
    for i in range(n):
        k = np.random.poisson(G1[i])
        total = k
        while k > 0 and total <= limit:
            s = 0.0
            for _ in range(k):
                s += (1.0 - np.random.random()) ** e
            k = np.random.poisson(p[i] * mu * s)
            total += k
        out[i] = total
    return out


# --------------------------------------------------------------------------- posterior


def _prior_constants(prior, alpha, mu, max_n_star, beta_bounds):
    mean, cov = prior.log_moments()
    P = np.linalg.inv(cov)
    em = pareto_mean(alpha, mu)
    uhi = math.log(max_n_star / em)
    ulo = mean[0] - PRIOR_SDS * math.sqrt(cov[0, 0])
    vlo = max(math.log(beta_bounds[0]), mean[1] - PRIOR_SDS * math.sqrt(cov[1, 1]))
    vhi = math.log(beta_bounds[1])
    if not (ulo < uhi and vlo < vhi):
        raise ValueError("the truncated prior support is empty")
    c = np.array([mean[0], mean[1], P[0, 0], P[0, 1], P[1, 1], ulo, uhi])
    return c, (vlo, vhi)


@dataclass
class GridPosterior:
    """Posterior of ``(log p, log beta)`` given the events before ``t_obs``, on an adaptive grid.

    Build with :meth:`build`; draw with :meth:`sample` (numba's global random state, seed it
    with :func:`seed`). ``v_edges``/``log_marg`` are the final v cells and their log marginal
    densities; ``iterations`` the number of grid refinements.
    """

    t: np.ndarray
    m: np.ndarray
    t_obs: float
    n1: float
    consts: np.ndarray
    v_edges: np.ndarray
    log_marg: np.ndarray
    cum_v: np.ndarray
    iterations: int

    @classmethod
    def build(
        cls,
        times: np.ndarray,
        marks: np.ndarray,
        t_obs: float,
        *,
        prior: LogNormalPrior = SIMULATION_PRIOR,
        alpha: float = 2.4,
        mu: float = 10.0,
        max_n_star: float = 0.99,
        beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
        max_refine: int = 12,
    ) -> "GridPosterior":
        times = np.asarray(times, dtype=np.float64)
        marks = np.asarray(marks, dtype=np.float64)
        keep = times < t_obs
        t = np.ascontiguousarray(times[keep])
        m = np.ascontiguousarray(marks[keep])
        if t.size < 1:
            raise ValueError("no event before t_obs")
        c, (lo, hi) = _prior_constants(prior, alpha, mu, max_n_star, beta_bounds)
        n1 = float(t.size - 1)
        it = 0
        while True:
            it += 1
            edges = np.linspace(lo, hi, NV + 1)
            lm = _log_marginal_v(t, m, float(t_obs), 0.5 * (edges[1:] + edges[:-1]), n1, c, NU)
            idx = np.flatnonzero(lm > lm.max() - DROP_V)
            nlo = edges[max(idx[0] - 1, 0)]
            nhi = edges[min(idx[-1] + 2, NV)]
            if nhi - nlo >= 0.5 * (hi - lo) or it >= max_refine:
                break
            lo, hi = nlo, nhi
        w = np.exp(lm - lm.max())
        return cls(t=t, m=m, t_obs=float(t_obs), n1=n1, consts=c, v_edges=edges, log_marg=lm,
                   cum_v=np.cumsum(w), iterations=it)

    def sample(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` posterior draws: arrays ``p``, ``beta`` and ``G1 = p sum m_i exp(-beta (T - t_i))``."""
        u, v, at = _sample_theta(self.t, self.m, self.t_obs, self.v_edges, self.cum_v, self.n1, self.consts, NU,
                                 int(size))
        p = np.exp(u)
        return p, np.exp(v), p * at


def seed(s: int) -> None:
    """Seed numba's random state (used by every sampler of this module)."""
    _seed(int(s) % (2**32))


def posterior_samples(
    times: np.ndarray,
    marks: np.ndarray,
    t_obs: float,
    n_samples: int,
    *,
    prior: LogNormalPrior = SIMULATION_PRIOR,
    alpha: float = 2.4,
    mu: float = 10.0,
    max_n_star: float = 0.99,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    random_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws of ``(p, beta, G1)`` from prior x likelihood of the events before ``t_obs``.

    The prior is ``prior`` (normal on ``(log p, log beta)``) truncated to
    ``p E[m] < max_n_star`` and ``beta`` in ``beta_bounds``. No selection on the final
    size here: that is applied jointly with the predictive (:func:`selected_predictive`).
    """
    if random_state is not None:
        seed(random_state)
    post = GridPosterior.build(times, marks, t_obs, prior=prior, alpha=alpha, mu=mu, max_n_star=max_n_star,
                               beta_bounds=beta_bounds)
    return post.sample(n_samples)


# --------------------------------------------------------------------------- predictive


def remaining_size_samples(
    G1: float | np.ndarray,
    p: float | np.ndarray,
    n_samples: int | None = None,
    *,
    alpha: float = 2.4,
    mu: float = 10.0,
    limit: int = 10**9,
    random_state: int | None = None,
) -> np.ndarray:
    """Draws of the number of events still to come, given ``G1`` and ``p`` (one per entry).

    ``G1`` and ``p`` broadcast together (to ``n_samples`` entries if given). A draw that
    exceeds ``limit`` is stopped there and returned as some value ``> limit``.
    """
    if random_state is not None:
        seed(random_state)
    shape = () if n_samples is None else (int(n_samples),)
    g, pp = np.broadcast_arrays(np.asarray(G1, dtype=np.float64), np.asarray(p, dtype=np.float64))
    if shape:
        g, pp = np.broadcast_to(g, shape), np.broadcast_to(pp, shape)
    g = np.ascontiguousarray(g.ravel())
    pp = np.ascontiguousarray(pp.ravel())
    if (pp * pareto_mean(alpha, mu) >= 1).any():
        raise ValueError("p E[m] must be < 1")
    return _remaining(g, pp, float(alpha), float(mu), int(limit))


def selected_predictive(
    draw_theta,
    n_obs: int,
    n_samples: int,
    *,
    alpha: float = 2.4,
    mu: float = 10.0,
    min_size: int = 10,
    max_size: int = 100_000,
    max_tries: int | None = None,
) -> dict:
    """Joint draws of ``(p, N)`` given the history and the selection ``min_size <= N <= max_size``.

    ``draw_theta(k)`` returns ``k`` draws ``(p, beta, G1)``. Draws are made in batches and
    the first ``n_samples`` that satisfy the selection are kept. Returns a dict with
    ``N``, ``p``, ``beta`` (kept draws), ``tries``, ``below_min`` and ``above_max``
    (rejected draws for each reason).
    """
    max_tries = 1000 * n_samples if max_tries is None else max_tries
    keep_N, keep_p, keep_b = [], [], []
    kept = tries = below = above = 0
    limit = max(max_size - n_obs, 0)
    rate = 1.0
    while kept < n_samples and tries < max_tries:
        k = int(min(max(1.2 * (n_samples - kept) / max(rate, 1e-3), 64), max_tries - tries))
        p, beta, G1 = draw_theta(k)
        R = _remaining(np.ascontiguousarray(G1), np.ascontiguousarray(p), float(alpha), float(mu), int(limit))
        N = n_obs + R
        lo = N < min_size
        hi = N > max_size
        ok = ~(lo | hi)
        tries += k
        below += int(lo.sum())
        above += int(hi.sum())
        keep_N.append(N[ok])
        keep_p.append(p[ok])
        keep_b.append(beta[ok])
        kept += int(ok.sum())
        rate = max(kept, 1) / tries
    N = np.concatenate(keep_N)[:n_samples]
    return {"N": N, "p": np.concatenate(keep_p)[:n_samples], "beta": np.concatenate(keep_b)[:n_samples],
            "tries": tries, "below_min": below, "above_max": above}


def are_optimal_point(samples: np.ndarray) -> float:
    """The point minimising ``E|x - N| / N`` over the empirical law of ``samples``: the 1/N-weighted median.

    The smallest sample value where the cumulative weight (sorted order, weights ``1/N``)
    reaches half the total weight.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    if x.size == 0 or (x <= 0).any():
        raise ValueError("samples must be non-empty and > 0")
    cw = np.cumsum(1.0 / x)
    return float(x[np.searchsorted(cw, 0.5 * cw[-1], side="left")])


def _pit(samples: np.ndarray, x: float, u: float) -> float:
    """Randomised probability integral transform of x under the empirical law of samples."""
    return float(np.mean(samples < x) + u * np.mean(samples == x))


# --------------------------------------------------------------------------- evaluation


def evaluate_pair(
    times: np.ndarray,
    marks: np.ndarray,
    t_obs: float,
    p: float,
    beta: float,
    *,
    alpha: float = 2.4,
    mu: float = 10.0,
    n_samples: int = 1000,
    prior: LogNormalPrior = SIMULATION_PRIOR,
    max_n_star: float = 0.99,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    min_size: int = 10,
    max_size: int = 100_000,
    random_state: int = 0,
) -> dict:
    """The four forecasts for one complete cascade cut at ``t_obs``, with diagnostics."""
    seed(random_state)
    times = np.asarray(times, dtype=np.float64)
    marks = np.asarray(marks, dtype=np.float64)
    N_true = int(times.size)
    obs = times < t_obs
    n_obs = int(obs.sum())
    em = pareto_mean(alpha, mu)
    n_star = p * em
    G1 = p * float(np.sum(marks[obs] * np.exp(-beta * (t_obs - times[obs]))))
    unif = np.random.default_rng(random_state).random(2)

    def oracle(k):
        return np.full(k, p), np.full(k, beta), np.full(k, G1)

    orc = selected_predictive(oracle, n_obs, n_samples, alpha=alpha, mu=mu, min_size=min_size, max_size=max_size)
    post = GridPosterior.build(times, marks, t_obs, prior=prior, alpha=alpha, mu=mu, max_n_star=max_n_star,
                               beta_bounds=beta_bounds)
    bay = selected_predictive(post.sample, n_obs, n_samples, alpha=alpha, mu=mu, min_size=min_size,
                              max_size=max_size)
    law = MarkLaw.pareto(alpha, mu)
    fit = fit_cascade(times, marks, t_obs, mark_law=law, prior=prior, max_n_star=max_n_star, beta_bounds=beta_bounds)
    forecasts = {
        "map_plugin": are_optimal_size(fit.n_obs, fit.n_star, fit.G1, mark_law=law, min_size=min_size),
        "oracle_mean": n_obs + G1 / (1.0 - n_star),
        "oracle_are_optimal": are_optimal_point(orc["N"]),
        "best_achievable": are_optimal_point(bay["N"]),
        "posterior_mean": float(np.mean(bay["N"])),
    }
    return {
        "t_obs": float(t_obs), "n_obs": n_obs, "N": N_true, "n_star": n_star, "G1": G1,
        "forecasts": forecasts,
        "are": {k: abs(v - N_true) / N_true for k, v in forecasts.items()},
        "pit_oracle": _pit(orc["N"], N_true, unif[0]),
        "pit_posterior": _pit(bay["N"], N_true, unif[1]),
        "rank_p": float(np.mean(bay["p"] < p)),
        "rank_beta": float(np.mean(bay["beta"] < beta)),
        "kept_oracle": int(orc["N"].size), "tries_oracle": orc["tries"], "above_max_oracle": orc["above_max"],
        "kept_posterior": int(bay["N"].size), "tries_posterior": bay["tries"],
        "above_max_posterior": bay["above_max"], "below_min_posterior": bay["below_min"],
        "grid_refinements": post.iterations, "n_samples": n_samples,
    }


def _pair_seed(seed_: int, i: int, j: int) -> int:
    return int(np.random.SeedSequence([seed_, i, j]).generate_state(1)[0])


def _cascade_task(args):
    i, times, marks, p, beta, alpha, mu, windows, kw, seed_ = args
    out = []
    for j, T in enumerate(windows):
        if int(np.sum(times < T)) < 2:
            continue
        r = evaluate_pair(times, marks, T, p, beta, alpha=alpha, mu=mu, random_state=_pair_seed(seed_, i, j), **kw)
        r["cascade"] = i
        out.append(r)
    return out


def reference_table(
    cascades,
    windows,
    *,
    n_samples: int = 1000,
    prior: LogNormalPrior = SIMULATION_PRIOR,
    max_n_star: float = 0.99,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    min_size: int = 10,
    max_size: int = 100_000,
    seed: int = 0,
    jobs: int = 1,
    progress: bool = False,
    return_details: bool = False,
):
    """Median and mean ARE of the four forecasts, per window, over the pairs with ``n_obs >= 2``.

    ``cascades``: objects with ``.times``, ``.marks`` (complete cascades) and the truth
    ``.p``, ``.beta``, ``.alpha``, ``.mu``. The remaining arguments describe the generating
    law (defaults: those of :func:`simulate_dataset`). Returns
    ``{window: {name: {"median_are", "mean_are", "n"}}}``, and with ``return_details`` also
    the list of per-pair records of :func:`evaluate_pair`.
    """
    windows = [float(w) for w in windows]
    kw = dict(n_samples=n_samples, prior=prior, max_n_star=max_n_star, beta_bounds=tuple(beta_bounds),
              min_size=min_size, max_size=max_size)
    tasks = [(i, np.asarray(c.times, dtype=np.float64), np.asarray(c.marks, dtype=np.float64), float(c.p),
              float(c.beta), float(c.alpha), float(c.mu), windows, kw, seed) for i, c in enumerate(cascades)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), file=sys.stderr, desc="cascades", smoothing=0.05)
    records = []
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        _cascade_task(tasks[0])  # compile / load the numba cache before forking
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as ex:
            for res in ex.map(_cascade_task, tasks, chunksize=4):
                records.extend(res)
                if bar is not None:
                    bar.update(1)
    else:
        for task in tasks:
            records.extend(_cascade_task(task))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    table = {}
    for T in windows:
        rows = [r for r in records if r["t_obs"] == T]
        table[T] = {}
        for name in NAMES:
            a = np.array([r["are"][name] for r in rows])
            table[T][name] = {"median_are": float(np.median(a)) if a.size else float("nan"),
                              "mean_are": float(np.mean(a)) if a.size else float("nan"), "n": int(a.size)}
    return (table, records) if return_details else table


# --------------------------------------------------------------------------- CLI


def _diagnostics(records, windows):
    from scipy import stats

    out = {}
    for T in windows:
        rows = [r for r in records if r["t_obs"] == T]
        if not rows:
            continue
        d = {}
        for key in ("pit_oracle", "pit_posterior", "rank_p", "rank_beta"):
            x = np.array([r[key] for r in rows])
            d[key] = {"mean": float(x.mean()), "ks_pvalue": float(stats.kstest(x, "uniform").pvalue)}
        d["n_obs_median"] = float(np.median([r["n_obs"] for r in rows]))
        d["acceptance_oracle"] = float(sum(r["kept_oracle"] for r in rows) / sum(r["tries_oracle"] for r in rows))
        d["acceptance_posterior"] = float(sum(r["kept_posterior"] for r in rows)
                                          / sum(r["tries_posterior"] for r in rows))
        d["above_max_draws_oracle"] = int(sum(r["above_max_oracle"] for r in rows))
        d["above_max_draws_posterior"] = int(sum(r["above_max_posterior"] for r in rows))
        d["draws_posterior"] = int(sum(r["tries_posterior"] for r in rows))
        d["short_samples_oracle"] = int(sum((r["kept_oracle"] < r["n_samples"]) for r in rows))
        d["short_samples_posterior"] = int(sum((r["kept_posterior"] < r["n_samples"]) for r in rows))
        d["min_kept_oracle"] = int(min(r["kept_oracle"] for r in rows))
        d["min_kept_posterior"] = int(min(r["kept_posterior"] for r in rows))
        d["max_grid_refinements"] = int(max(r["grid_refinements"] for r in rows))
        out[T] = d
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="simulated cascades")
    ap.add_argument("--seed", type=int, default=0, help="seed of simulate_dataset and of the Monte Carlo")
    ap.add_argument("--windows", default="600,1200,3600")
    ap.add_argument("--samples", type=int, default=2000, help="kept predictive draws per (cascade, window)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--law", choices=list(SIMULATION_LAWS), default="course",
                    help="generating law (as tweetoscope simulate --law; default course)")
    args = ap.parse_args(argv)
    law = SIMULATION_LAWS[args.law]
    windows = [float(w) for w in args.windows.split(",")]

    t0 = time.perf_counter()
    data = simulate_dataset(args.n, prior=law.prior, alpha=law.alpha, mu=law.mu, random_state=args.seed)
    table, records = reference_table(data, windows, n_samples=args.samples, prior=law.prior, seed=args.seed,
                                     jobs=args.jobs, progress=True, return_details=True)
    seconds = time.perf_counter() - t0
    diag = _diagnostics(records, windows)
    if args.json:
        import orjson

        res = {"n": args.n, "seed": args.seed, "law": args.law, "samples": args.samples, "seconds": seconds,
               "table": {str(int(T) if T.is_integer() else T): v for T, v in table.items()},
               "diagnostics": {str(int(T) if T.is_integer() else T): v for T, v in diag.items()}}
        print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"{args.n} simulated cascades (simulate_dataset, law {args.law}, seed {args.seed}), "
          f"{args.samples} kept draws per pair, {seconds:.0f} s")
    print(f"{'T_obs':>6} {'pairs':>5}  " + "  ".join(f"{n:>20}" for n in NAMES))
    print(f"{'':>6} {'':>5}  " + "  ".join(f"{'median / mean ARE':>20}" for _ in NAMES))
    for T in windows:
        row = table[T]
        print(f"{T:>6g} {row[NAMES[0]]['n']:>5}  "
              + "  ".join(f"{row[n]['median_are']:>9.3f} / {row[n]['mean_are']:<8.3f}" for n in NAMES))
    print("diagnostics (PIT of the true N and ranks of the true p, beta in the posterior: uniform if correct)")
    for T, d in diag.items():
        print(f"  T_obs={T:g}: n_obs median {d['n_obs_median']:.0f}; PIT oracle mean {d['pit_oracle']['mean']:.3f} "
              f"(KS p={d['pit_oracle']['ks_pvalue']:.2f}), posterior {d['pit_posterior']['mean']:.3f} "
              f"(KS p={d['pit_posterior']['ks_pvalue']:.2f}); rank p {d['rank_p']['mean']:.3f} "
              f"(KS p={d['rank_p']['ks_pvalue']:.2f}), beta {d['rank_beta']['mean']:.3f} "
              f"(KS p={d['rank_beta']['ks_pvalue']:.2f}); acceptance oracle {d['acceptance_oracle']:.2f}, "
              f"posterior {d['acceptance_posterior']:.2f}; draws beyond max_size {d['above_max_draws_oracle']} "
              f"(oracle), {d['above_max_draws_posterior']}/{d['draws_posterior']} (posterior); pairs short of draws "
              f"{d['short_samples_oracle']} (oracle, min kept {d['min_kept_oracle']}), "
              f"{d['short_samples_posterior']} (posterior, min kept {d['min_kept_posterior']}); "
              f"grid refinements <= {d['max_grid_refinements']}")


if __name__ == "__main__":
    main()
