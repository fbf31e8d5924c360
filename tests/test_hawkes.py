"""Exponential-kernel marked Hawkes: likelihood, gradient, stability, MAP fit, recovery, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from estimators import (
    COURSE_PRIOR,
    DEFAULT_BETA_BOUNDS,
    fit_cascade,
    loglikelihood,
    loglikelihood_grad,
    pareto_mean,
    simulate_cascade,
)


def brute_loglik(t, m, T, p, beta):
    """O(n^2) log-likelihood straight from the definition (events before T, first event given)."""
    t, m = t[t < T], m[t < T]
    ll = 0.0
    for i in range(1, len(t)):
        ll += math.log(p * beta * np.sum(m[:i] * np.exp(-beta * (t[i] - t[:i]))))
    return ll - p * np.sum(m * (1 - np.exp(-beta * (T - t))))


def random_cascade(rng, n=60, span=5000.0):
    t = np.sort(np.concatenate([[0.0], rng.uniform(0, span, n - 1)]))
    m = np.exp(rng.uniform(np.log(10), np.log(1e5), n))
    return t, m


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta", [1e-5, 1e-3, 2e-2])
def test_loglik_matches_brute_force(seed, beta):
    rng = np.random.default_rng(seed)
    t, m = random_cascade(rng)
    T = 4000.0
    p = 10 ** rng.uniform(-4, -2)
    assert loglikelihood(t, m, T, p, beta) == pytest.approx(brute_loglik(t, m, T, p, beta), rel=1e-10, abs=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_gradient_matches_finite_differences(seed):
    rng = np.random.default_rng(100 + seed)
    t, m = random_cascade(rng, n=200)
    T = 5500.0
    p, beta = 10 ** rng.uniform(-4, -2), 10 ** rng.uniform(-4, -2)
    _, g = loglikelihood_grad(t, m, T, p, beta)
    hp, hb = p * 1e-6, beta * 1e-6
    dp = (loglikelihood(t, m, T, p + hp, beta) - loglikelihood(t, m, T, p - hp, beta)) / (2 * hp)
    db = (loglikelihood(t, m, T, p, beta + hb) - loglikelihood(t, m, T, p, beta - hb)) / (2 * hb)
    np.testing.assert_allclose(g, [dp, db], rtol=1e-5)


def test_stable_for_long_gaps_huge_marks_and_many_events():
    rng = np.random.default_rng(7)
    n = 1_000_000
    t = np.sort(rng.uniform(0, 1e6, n))
    t[0] = 0.0
    m = np.exp(rng.uniform(0, np.log(1e8), n))
    beta = 1e4 / (t[-1] - t[0])  # beta * (t_n - t_1) = 1e4
    ll, g = loglikelihood_grad(t, m, t[-1] + 1.0, 1e-6, beta)
    assert np.isfinite(ll) and np.isfinite(g).all()
    # a gap of 1e4 / beta between two events: the naive product exp(-beta dt) underflows to 0
    t2 = np.array([0.0, 1.0, 2.0, 1e6, 1e6 + 1])
    m2 = np.array([1e8, 1.0, 5.0, 2.0, 3.0])
    beta2 = 1e4 / 1e6
    assert loglikelihood(t2, m2, 1e6 + 2, 1e-3, beta2) == pytest.approx(
        brute_loglik_logspace(t2, m2, 1e6 + 2, 1e-3, beta2), rel=1e-12
    )


def brute_loglik_logspace(t, m, T, p, beta):
    """O(n^2) log-likelihood with a log-sum-exp, valid where exp(-beta dt) underflows."""
    from scipy.special import logsumexp

    ll = 0.0
    for i in range(1, len(t)):
        ll += math.log(p * beta) + logsumexp(np.log(m[:i]) - beta * (t[i] - t[:i]))
    return ll - p * np.sum(m * -np.expm1(-beta * (T - t)))


def course_objective(params, t, m, T, prior=COURSE_PRIOR):
    """Minus the course's MAP target: log-normal density on log theta without Jacobian, plus LL."""
    mean, P = prior.precision()
    d = np.log(params) - mean
    return -(-0.5 * d @ P @ d + brute_loglik(t, m, T, *params))


@pytest.mark.parametrize("seed", range(6))
def test_map_reaches_the_optimum_of_the_course_objective(seed):
    rng = np.random.default_rng(seed)
    c = simulate_cascade(0.02, 1e-3, m0=2000, random_state=rng)
    T = 1200.0
    fit = fit_cascade(c.times, c.marks, T, max_n_star=1.0)
    t, m = c.times[c.times < T], c.marks[c.times < T]
    em = pareto_mean(2.4, 10.0)
    bounds = [(1e-8 / em, 1 / em * (1 - 1e-9)), DEFAULT_BETA_BOUNDS]
    best = min(
        (minimize(course_objective, x0, args=(t, m, T), bounds=bounds, method="Powell") for x0 in
         [(0.02, 2e-4), (0.01, 1e-3), (0.025, 1.5e-3), (0.005, 1e-5)]),
        key=lambda r: r.fun,
    )
    assert fit.converged
    assert -fit.log_posterior <= best.fun + 1e-7 * abs(best.fun)
    assert fit.log_posterior == pytest.approx(-course_objective(np.array([fit.p, fit.beta]), t, m, T), rel=1e-10)


def test_parameter_recovery_over_many_seeds():
    """MLE on complete cascades: log-errors of p and beta are unbiased within 3 standard errors, and small."""
    p_true, beta_true = 0.02, 1e-3
    errs = []
    for seed in range(40):
        c = simulate_cascade(p_true, beta_true, m0=5e4, random_state=seed)
        fit = fit_cascade(c.times, c.marks, c.times[-1] + 1.0, prior=None, beta_bounds=(1e-6, 1.0))
        errs.append((math.log(fit.p / p_true), math.log(fit.beta / beta_true)))
    errs = np.array(errs)
    mean, se = errs.mean(axis=0), errs.std(axis=0, ddof=1) / np.sqrt(len(errs))
    assert (np.abs(mean) < 3 * se + 0.01).all(), (mean, se)
    assert (np.median(np.abs(errs), axis=0) < [0.1, 0.15]).all()


def test_fit_fields_are_consistent():
    c = simulate_cascade(0.02, 1e-3, m0=1000, random_state=3)
    fit = fit_cascade(c.times, c.marks, 900.0)
    n = int((c.times < 900).sum())
    assert fit.n_obs == n
    assert fit.n_star == pytest.approx(fit.p * pareto_mean(2.4, 10))
    G1 = fit.p * np.sum(c.marks[:n] * np.exp(-fit.beta * (900 - c.times[:n])))
    assert fit.G1 == pytest.approx(G1)
    assert fit.final_size == pytest.approx(n + G1 / (1 - fit.n_star))
    assert fit.loglik == pytest.approx(brute_loglik(c.times, c.marks, 900.0, fit.p, fit.beta))
    assert fit.kernel == "exp"


@pytest.mark.parametrize(
    "times, marks, t_obs, match",
    [
        ([], [], 10.0, "empty"),
        ([0.0], [10.0], 10.0, "at least 2 events"),
        ([0.0, 5.0, 3.0], [1, 1, 1], 10.0, "sorted"),
        ([0.0, -1.0], [1, 1], 10.0, ">= 0"),
        ([0.0, np.nan], [1, 1], 10.0, "finite"),
        ([0.0, 1.0], [1, np.nan], 10.0, "finite"),
        ([0.0, 1.0], [1, -3], 10.0, "marks must be >= 0"),
        ([5.0, 6.0], [1, 1], 4.0, "not after the first event"),
        ([0.0, 1.0], [1, 1, 1], 10.0, "same length"),
        ([0.0, 1.0, 2.0], [1, 1, 1], np.nan, "t_obs"),
        ([[0.0, 1.0]], [[1, 1]], 10.0, "1-D"),
    ],
)
def test_bad_input_raises_a_clear_value_error(times, marks, t_obs, match):
    with pytest.raises(ValueError, match=match):
        fit_cascade(times, marks, t_obs)


def test_unknown_kernel():
    with pytest.raises(ValueError, match="kernel"):
        fit_cascade([0, 1], [1, 1], 5, kernel="gauss")


@pytest.mark.parametrize(
    "times, marks",
    [
        ([0.0, 0.0, 0.0, 0.0], [10, 10, 10, 10]),  # simultaneous events
        ([0.0, 1e-9, 2e-9], [1e8, 1e8, 1e8]),  # huge marks, tiny gaps
        ([0.0, 599.0], [0.0, 0.0]),  # posters without followers
        ([0.0] + list(np.linspace(1, 599, 5000)), [1e3] * 5001),  # explosive burst
    ],
)
def test_fit_never_returns_nan(times, marks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_cascade(times, marks, 600.0)
    values = [fit.p, fit.beta, fit.n_star, fit.G1, fit.final_size, fit.loglik, fit.log_posterior]
    assert all(np.isfinite(v) for v in values), fit
