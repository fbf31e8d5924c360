"""Power-law-kernel marked Hawkes (Mishra et al. 2016): likelihood, gradient, formulas, simulation, fit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.optimize import minimize

from estimators import CascadeTooLarge, ConvergenceWarning, MarkLaw, PowerLawFit, SimulatedCascade, fit_cascade
from estimators.powerlaw import (
    KERNEL_RTOL,
    _Cascade,
    _eval_quadrature,
    _quadrature,
    fit_powerlaw,
    powerlaw_a1,
    powerlaw_loglikelihood,
    powerlaw_loglikelihood_grad,
    powerlaw_n_star,
    simulate_powerlaw_cascade,
)

ALPHA, MU = 2.4, 10.0


def kappa_for(n_star, beta, c, theta, alpha=ALPHA, mu=MU):
    """The kappa giving branching factor n_star."""
    return n_star * theta * c**theta / MarkLaw.pareto(alpha, mu).moment(beta)


def brute_loglik(t, m, T, kappa, beta, c, theta, mark_floor=1.0):
    """O(n^2) log-likelihood straight from the definition (events before T, first event given)."""
    keep = t < T
    t, m = t[keep], np.maximum(m[keep], mark_floor)
    mb = m**beta
    ll = 0.0
    for i in range(1, t.size):
        ll += math.log(kappa * np.sum(mb[:i] * (t[i] - t[:i] + c) ** (-1.0 - theta)))
    return ll - kappa * np.sum(mb * (c**-theta - (T - t + c) ** -theta) / theta)


def brute_loglik_vec(t, m, T, kappa, beta, c, theta):
    """Same as :func:`brute_loglik`, vectorised (for small cascades, n^2 memory)."""
    mb = np.maximum(m, 1.0) ** beta
    lag = t[:, None] - t[None, :]
    mask = np.tril(np.ones((t.size, t.size), dtype=bool), k=-1)
    ker = np.where(mask, (np.where(mask, lag, 0.0) + c) ** (-1.0 - theta), 0.0)
    lam = kappa * ker[1:] @ mb
    return float(np.sum(np.log(lam)) - kappa * np.sum(mb * (c**-theta - (T - t + c) ** -theta) / theta))


def wide_cascade(rng, n):
    """Times log-uniform up to 1e6 s (bursts and long gaps), marks log-uniform up to 1e8."""
    t = np.sort(np.concatenate([[0.0], np.exp(rng.uniform(0.0, np.log(1e6), n - 1))]))
    m = np.exp(rng.uniform(0.0, np.log(1e8), n))
    return t, m, 1e6 + 1.0


def random_params(rng):
    return (
        10 ** rng.uniform(-3, -1),  # kappa
        rng.uniform(0.0, 1.3),  # beta
        10 ** rng.uniform(0.0, 3.5),  # c, s
        10 ** rng.uniform(-2.0, math.log10(3.0)),  # theta
    )


def sim(n_star, beta, c, theta, *, m0, seed):
    return simulate_powerlaw_cascade(kappa_for(n_star, beta, c, theta), beta, c, theta, alpha=ALPHA, mu=MU,
                                     m0=m0, random_state=seed)


# --------------------------------------------------------------------------- likelihood accuracy


@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-9, 1e-12])
def test_kernel_approximation_is_uniformly_accurate(rtol):
    """sum_k a_k e^{-x_k tau} matches (tau + c)**-(1+theta) to rtol relative over the whole range."""
    y_max = 1e6 + 3600.0
    q = _quadrature(1.0, y_max, 1.01, 4.0, rtol)
    ys = np.exp(np.linspace(0.0, np.log(y_max), 3000))
    worst = 0.0
    for s in np.linspace(1.01, 4.0, 23):
        for c in (1.0, 17.0, 3600.0):
            a, _, _ = q.weights(c, s)
            y = ys[ys >= c]
            approx = (a[None, :] * np.exp(-q.x[None, :] * (y[:, None] - c))).sum(axis=1)
            worst = max(worst, float(np.max(np.abs(approx * y**s - 1.0))))
    assert worst <= rtol
    assert q.size <= 160


def test_quadrature_weight_derivatives_match_finite_differences():
    q = _quadrature(1.0, 1e5, 1.01, 4.0, KERNEL_RTOL)
    for c, s in [(1.0, 1.01), (30.0, 1.7), (3600.0, 4.0)]:
        a, ac, as_ = q.weights(c, s)
        hc, hs = 1e-6 * c, 1e-6
        fc = (q.weights(c + hc, s)[0] - q.weights(c - hc, s)[0]) / (2 * hc)
        fs = (q.weights(c, s + hs)[0] - q.weights(c, s - hs)[0]) / (2 * hs)
        np.testing.assert_allclose(ac, fc, rtol=1e-6, atol=1e-12 * np.abs(a).max())
        np.testing.assert_allclose(as_, fs, rtol=1e-6, atol=1e-12 * np.abs(a).max())


@pytest.mark.parametrize("seed", range(4))
def test_loglik_matches_brute_force_on_wide_cascades(seed):
    rng = np.random.default_rng(seed)
    t, m, T = wide_cascade(rng, 1500)
    params = random_params(rng)
    exact = brute_loglik(t, m, T, *params)
    fast = powerlaw_loglikelihood(t, m, T, *params)
    # claimed bound: every log lambda_i within rtol, so |error| <= (n - 1) rtol (plus rounding)
    assert abs(fast - exact) <= (t.size - 1) * KERNEL_RTOL + 1e-12 * abs(exact)
    assert fast == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_loglik_matches_brute_force_on_simulated_cascades(seed):
    # theta = 0.3: heavy tail, events spread over ~1e6 s and beyond
    c = sim(0.85, 0.7, 30.0, 0.3, m0=3e5, seed=seed)
    assert c.times[-1] > 1e5
    T = 1e6
    rng = np.random.default_rng(seed)
    for params in [(c.kappa, c.beta, c.c, c.theta), random_params(rng)]:
        exact = brute_loglik(c.times, c.marks, T, *params)
        assert powerlaw_loglikelihood(c.times, c.marks, T, *params) == pytest.approx(exact, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("rtol", [1e-3, 1e-5])
def test_loglik_error_bound_holds_at_loose_tolerances(rtol):
    rng = np.random.default_rng(11)
    t, m, T = wide_cascade(rng, 800)
    for _ in range(3):
        params = random_params(rng)
        exact = brute_loglik(t, m, T, *params)
        fast = powerlaw_loglikelihood(t, m, T, *params, rtol=rtol)
        assert abs(fast - exact) <= (t.size - 1) * rtol


@pytest.mark.parametrize("seed", range(4))
def test_gradient_matches_finite_differences(seed):
    rng = np.random.default_rng(200 + seed)
    t, m, T = wide_cascade(rng, 600)
    p = np.array(random_params(rng))
    _, g = powerlaw_loglikelihood_grad(t, m, T, *p)
    fd = np.empty(4)
    for k in range(4):
        h = 1e-5 * p[k] if k != 1 else 1e-5
        hi, lo = p.copy(), p.copy()
        hi[k] += h
        lo[k] -= h
        fd[k] = (powerlaw_loglikelihood(t, m, T, *hi) - powerlaw_loglikelihood(t, m, T, *lo)) / (2 * h)
    # per-parameter scale: |d LL / d log p| is what the optimiser sees
    scale = np.abs(fd * np.where(np.arange(4) == 1, 1.0, p)) + 1.0
    np.testing.assert_array_less(np.abs(g - fd) * np.where(np.arange(4) == 1, 1.0, p), 1e-5 * scale)


def test_gradient_also_matches_brute_force_finite_differences():
    """The analytic gradient is that of the exact likelihood up to the approximation error."""
    rng = np.random.default_rng(5)
    t, m, T = wide_cascade(rng, 300)
    p = np.array([0.01, 0.5, 30.0, 0.6])
    _, g = powerlaw_loglikelihood_grad(t, m, T, *p)
    for k in range(4):
        h = 1e-4 * p[k]
        hi, lo = p.copy(), p.copy()
        hi[k] += h
        lo[k] -= h
        fd = (brute_loglik_vec(t, m, T, *hi) - brute_loglik_vec(t, m, T, *lo)) / (2 * h)
        assert g[k] == pytest.approx(fd, rel=1e-5, abs=1e-6 / p[k])


def test_stable_for_1e5_events_long_times_and_huge_marks():
    rng = np.random.default_rng(3)
    n = 100_000
    t = np.sort(rng.uniform(0.0, 1e6, n))
    t[0] = 0.0
    m = np.exp(rng.uniform(0.0, np.log(1e8), n))
    m[::7] = 0.0  # raised to mark_floor
    for params in [(1e-4, 1.3, 1.0, 0.01), (1e-2, 0.0, 3600.0, 3.0), (1e-6, 1.0, 5.0, 1.5)]:
        ll, g = powerlaw_loglikelihood_grad(t, m, 1e6 + 1.0, *params)
        assert np.isfinite(ll) and np.isfinite(g).all()


def test_tabulated_and_streamed_exponentials_agree():
    rng = np.random.default_rng(4)
    t, m, T = wide_cascade(rng, 3000)
    q = _eval_quadrature(t, 20.0, 0.5, KERNEL_RTOL)
    a = _Cascade(t, np.maximum(m, 1.0), T, q)
    b = _Cascade(t, np.maximum(m, 1.0), T, q, max_table=0)
    assert a.table.shape[0] == t.size - 1 and b.table.shape[0] == 0
    la, ga = a.loglik_grad(0.01, 0.8, 20.0, 0.5)
    lb, gb = b.loglik_grad(0.01, 0.8, 20.0, 0.5)
    assert la == pytest.approx(lb, rel=1e-12)
    np.testing.assert_allclose(ga, gb, rtol=1e-10)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("beta,c,theta,alpha,mu", [(0.6, 60.0, 0.8, 2.4, 10.0), (0.0, 1.0, 0.05, 2.016, 1.0),
                                                    (1.2, 3000.0, 2.5, 2.4, 3.0)])
def test_n_star_matches_numeric_integral(beta, c, theta, alpha, mu):
    kappa = 0.01
    dens = lambda m: (alpha - 1) * mu ** (alpha - 1) * m**-alpha  # noqa: E731
    em = integrate.quad(lambda m: m**beta * dens(m), mu, np.inf, limit=200, epsabs=0.0, epsrel=1e-10)[0]
    et = integrate.quad(lambda tau: (tau + c) ** (-1.0 - theta), 0.0, np.inf, limit=200, epsabs=0.0, epsrel=1e-10)[0]
    assert MarkLaw.pareto(alpha, mu).moment(beta) == pytest.approx(em, rel=1e-7)
    assert powerlaw_n_star(kappa, beta, c, theta, mark_law=MarkLaw.pareto(alpha, mu)) == pytest.approx(kappa * em * et, rel=1e-7)


def test_a1_n_star_and_forecast_of_a_fit_match_their_definitions():
    c = sim(0.7, 0.5, 40.0, 0.7, m0=1e5, seed=3)
    T = 2000.0
    f = fit_powerlaw(c.times, c.marks, T)
    t, m = c.times[c.times < T], np.maximum(c.marks[c.times < T], 1.0)
    assert f.n_obs == t.size
    # A1: expected number of direct children after T, integral of the kernel over (T, inf)
    a1 = sum(
        integrate.quad(lambda s, ti=ti, mi=mi: f.kappa * mi**f.beta * (s - ti + f.c) ** (-1.0 - f.theta),
                       T, np.inf, limit=200)[0]
        for ti, mi in zip(t, m)
    )
    assert f.G1 == pytest.approx(a1, rel=1e-6)
    assert powerlaw_a1(c.times, c.marks, T, f.kappa, f.beta, f.c, f.theta) == pytest.approx(a1, rel=1e-6)
    assert f.n_star == pytest.approx(powerlaw_n_star(f.kappa, f.beta, f.c, f.theta, mark_law=MarkLaw.pareto(ALPHA, MU)), rel=1e-12)
    assert f.final_size == pytest.approx(f.n_obs + f.G1 / (1 - f.n_star), rel=1e-12)
    assert f.predict() == pytest.approx(f.final_size)
    assert f.loglik == f.log_posterior
    assert f.loglik == pytest.approx(brute_loglik(c.times, c.marks, T, f.kappa, f.beta, f.c, f.theta), rel=1e-9)


# --------------------------------------------------------------------------- simulation


def test_simulated_sizes_match_the_branching_factor_and_a1():
    n_star, beta, c, theta = 0.5, 0.5, 20.0, 0.6
    kappa = kappa_for(n_star, beta, c, theta)
    rng = np.random.default_rng(0)
    # Pareto root: E[size] = 1 / (1 - n_star)
    sizes = np.array([simulate_powerlaw_cascade(kappa, beta, c, theta, random_state=rng).size for _ in range(20000)])
    se = sizes.std(ddof=1) / math.sqrt(sizes.size)
    assert abs(sizes.mean() - 1.0 / (1.0 - n_star)) < 4 * se
    # fixed root mark: E[size] = 1 + A1(0) / (1 - n_star), A1(0) = kappa m0**beta c**-theta / theta
    m0 = 1e4
    sizes = np.array([simulate_powerlaw_cascade(kappa, beta, c, theta, m0=m0, random_state=rng).size
                      for _ in range(2000)])
    expected = 1.0 + kappa * m0**beta * c**-theta / theta / (1.0 - n_star)
    se = sizes.std(ddof=1) / math.sqrt(sizes.size)
    assert abs(sizes.mean() - expected) < 4 * se


def test_simulated_delays_are_lomax_and_marks_pareto():
    s = sim(0.5, 0.5, 30.0, 0.7, m0=1e8, seed=1)
    assert isinstance(s, SimulatedCascade)
    assert s.n_star == pytest.approx(0.5)
    assert np.all(np.diff(s.times) >= 0) and s.parents[0] == -1 and np.all(s.parents[1:] >= 0)
    assert np.all(s.times[s.parents[1:]] <= s.times[1:])
    delays = s.times[1:] - s.times[s.parents[1:]]
    assert delays.size > 2000
    lomax_cdf = lambda x: 1.0 - (1.0 + x / s.c) ** -s.theta  # noqa: E731
    assert stats.kstest(delays, lomax_cdf).pvalue > 1e-3
    pareto_cdf = lambda x: 1.0 - (MU / x) ** (ALPHA - 1.0)  # noqa: E731
    assert stats.kstest(s.marks[1:], pareto_cdf).pvalue > 1e-3
    # the root's number of direct children is Poisson(kappa m0**beta c**-theta / theta): mean within 5 sd
    lam = s.kappa * 1e8**s.beta * s.c**-s.theta / s.theta
    assert abs(np.sum(s.parents == 0) - lam) < 5 * math.sqrt(lam)


def test_simulator_rejects_supercritical_and_bad_parameters():
    with pytest.raises(ValueError, match="n_star"):
        simulate_powerlaw_cascade(kappa_for(1.2, 0.5, 10.0, 0.5), 0.5, 10.0, 0.5, random_state=0)
    with pytest.raises(ValueError, match="beta"):
        simulate_powerlaw_cascade(1e-3, 1.5, 10.0, 0.5, alpha=2.4, random_state=0)
    with pytest.raises(ValueError, match="theta"):
        simulate_powerlaw_cascade(1e-3, 0.5, 10.0, 0.0, random_state=0)
    with pytest.raises(CascadeTooLarge):
        simulate_powerlaw_cascade(kappa_for(0.95, 0.5, 10.0, 0.5), 0.5, 10.0, 0.5, m0=1e8, max_size=100,
                                  random_state=0)


# --------------------------------------------------------------------------- fit


@pytest.mark.slow
@pytest.mark.parametrize(
    "truth,m0,T,tol",
    [
        # tol: bounds on the median relative error of (n_star, beta, c, theta) over 20 cascades
        (dict(n_star=0.8, beta=0.6, c=60.0, theta=0.8), 1e6, 1e5, (0.06, 0.04, 0.3, 0.1)),
        # short window, heavy censoring: ~10% of the root's children come after T
        (dict(n_star=0.75, beta=0.5, c=10.0, theta=0.4), 1e7, 3600.0, (0.08, 0.1, 0.5, 0.3)),
    ],
)
def test_parameter_recovery_over_many_seeds(truth, m0, T, tol):
    est, true_size, forecast = [], [], []
    for seed in range(20):
        s = sim(**truth, m0=m0, seed=1000 + seed)
        f = fit_powerlaw(s.times, s.marks, T)
        assert f.converged and f.n_obs > 800
        est.append((f.n_star, f.beta, f.c, f.theta))
        true_size.append(s.size)
        forecast.append(f.final_size)
    est = np.array(est)
    tru = np.array([truth["n_star"], truth["beta"], truth["c"], truth["theta"]])
    rel = np.abs(est / tru - 1.0)
    np.testing.assert_array_less(np.median(rel, axis=0), tol)
    # no systematic bias: the median estimate is within the same tolerance of the truth
    np.testing.assert_array_less(np.abs(np.median(est, axis=0) / tru - 1.0), tol)
    # the forecast of the final size is unbiased in the median
    assert abs(np.median(np.array(forecast) / np.array(true_size)) - 1.0) < 0.1


@pytest.mark.parametrize("seed", range(3))
def test_fit_is_the_maximum_of_the_exact_likelihood(seed):
    """Polishing the fit on the exact O(n^2) likelihood (Nelder-Mead) finds nothing better."""
    s = sim(0.7, 0.5, 30.0, 0.6, m0=2e4, seed=seed)
    T = 5000.0
    t, m = s.times[s.times < T], s.marks[s.times < T]
    assert 20 < t.size < 600
    f = fit_powerlaw(t, m, T)
    many = fit_powerlaw(t, m, T, n_starts=15)
    assert f.loglik >= many.loglik - 1e-7 * abs(many.loglik)
    lo = np.array([0.0, 0.0, 0.0, math.log(0.01)])
    hi = np.array([0.999, 0.99 * (ALPHA - 1), math.log(3600.0), math.log(3.0)])

    def neg(v):  # v = (n_star, beta, log c, log theta), clipped to the fit's box
        ns, beta, lc, lt = np.clip(v, lo, hi)
        if ns <= 0:
            return np.inf
        c, th = math.exp(lc), math.exp(lt)
        return -brute_loglik_vec(t, m, T, kappa_for(ns, beta, c, th), beta, c, th)

    x0 = np.array([f.n_star, f.beta, math.log(f.c), math.log(f.theta)])
    res = minimize(neg, x0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 2000})
    assert -res.fun <= f.loglik + 1e-6 * max(1.0, abs(f.loglik))
    # the MLE is at least as likely as the truth
    assert f.loglik >= brute_loglik_vec(t, m, T, s.kappa, s.beta, s.c, s.theta) - 1e-6


def test_fit_fields_bounds_and_dispatch():
    s = sim(0.8, 0.6, 60.0, 0.8, m0=1e5, seed=7)
    T = 1800.0
    f = fit_powerlaw(s.times, s.marks, T)
    assert isinstance(f, PowerLawFit) and f.kernel == "powerlaw"
    assert f.t_obs == T and f.mark_law == MarkLaw.pareto(ALPHA, MU) and f.n_obs == int(np.sum(s.times < T))
    assert 0 < f.n_star <= 0.999 and f.kappa > 0
    assert 0 <= f.beta < ALPHA - 1 and 1.0 <= f.c <= 3600.0 and 0.01 <= f.theta <= 3.0
    assert f.converged and f.n_iter > 0
    np.testing.assert_array_equal(f.features, [f.theta, f.n_star, f.G1])
    g = fit_cascade(s.times, s.marks, T, kernel="powerlaw")
    assert g == f
    # a tighter bound on n_star is honoured
    h = fit_powerlaw(s.times, s.marks, T, max_n_star=0.5)
    assert h.n_star <= 0.5 and h.loglik <= f.loglik + 1e-9


def test_5000_event_fit_completes():
    s = next(s for s in (sim(0.85, 0.5, 30.0, 0.5, m0=1e8, seed=seed) for seed in range(100)) if s.size > 5000)
    T = float(s.times[5000])
    f = fit_powerlaw(s.times, s.marks, T)
    assert f.n_obs == 5000 and f.converged
    assert np.isfinite([f.kappa, f.beta, f.c, f.theta, f.n_star, f.G1, f.final_size, f.loglik]).all()


def test_non_convergence_is_flagged_and_warned():
    s = sim(0.8, 0.6, 60.0, 0.8, m0=1e6, seed=0)
    with pytest.warns(ConvergenceWarning):
        f = fit_powerlaw(s.times, s.marks, 1e5, max_iter=1, n_starts=1)
    assert not f.converged
    assert np.isfinite(f.loglik)


@pytest.mark.parametrize(
    "times,marks",
    [
        (np.array([0.0, 5.0]), np.array([100.0, 0.0])),  # two events
        (np.zeros(40), np.full(40, 10.0)),  # all at the same time
        (np.array([0.0, 0.0, 0.0, 9e5]), np.ones(4)),  # ties then a long gap
        (np.linspace(0.0, 500.0, 200), np.zeros(200)),  # marks all raised to the floor
        (np.concatenate([np.linspace(0.0, 10.0, 300), [9.9e5]]), np.full(301, 1e8)),  # burst, huge marks
        (np.sort(np.random.default_rng(0).uniform(0, 3600, 3000)), np.full(3000, 50.0)),  # Poisson, no excitation
    ],
)
def test_fit_never_returns_nan(times, marks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f = fit_powerlaw(times, marks, 1e6)
    vals = [f.kappa, f.beta, f.c, f.theta, f.n_star, f.G1, f.final_size, f.loglik]
    assert np.isfinite(vals).all()
    assert 0 < f.n_star < 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "times,marks,t_obs,match",
    [
        ([], [], 10.0, "empty"),
        ([0.0], [10.0], 10.0, "at least 2"),
        ([0.0, 5.0, 3.0], [1.0, 1.0, 1.0], 10.0, "sorted"),
        ([0.0, np.nan, 3.0], [1.0, 1.0, 1.0], 10.0, "finite"),
        ([0.0, 1.0, 3.0], [1.0, np.nan, 1.0], 10.0, "finite"),
        ([0.0, 1.0, 3.0], [1.0, -1.0, 1.0], 10.0, ">= 0"),
        ([0.0, 1.0], [1.0, 1.0, 1.0], 10.0, "same length"),
        ([0.0, 1.0, 3.0], [1.0, 1.0, 1.0], np.nan, "t_obs"),
        ([5.0, 6.0], [1.0, 1.0], 4.0, "t_obs"),
    ],
)
def test_bad_input_raises_a_clear_value_error(times, marks, t_obs, match):
    with pytest.raises(ValueError, match=match):
        fit_powerlaw(np.array(times), np.array(marks), t_obs)
    with pytest.raises(ValueError, match=match):
        fit_cascade(np.array(times), np.array(marks), t_obs, kernel="powerlaw")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(max_n_star=1.0), "max_n_star"),
        (dict(mark_floor=0.0), "mark_floor"),
        (dict(beta_bounds=(0.0, 1.4)), "beta_bounds"),
        (dict(c_bounds=(10.0, 1.0)), "increasing"),
        (dict(theta_bounds=(0.0, 1.0)), "theta_bounds"),
    ],
)
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_powerlaw([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], 10.0, **kwargs)


@pytest.mark.parametrize(
    "params,match",
    [((0.0, 0.5, 10.0, 0.5), "kappa"), ((0.1, np.nan, 10.0, 0.5), "beta"), ((0.1, 0.5, -1.0, 0.5), "c"),
     ((0.1, 0.5, 10.0, 0.0), "theta")],
)
def test_loglik_rejects_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        powerlaw_loglikelihood([0.0, 1.0], [1.0, 1.0], 10.0, *params)
    with pytest.raises(ValueError, match="sorted"):
        powerlaw_loglikelihood_grad([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], 10.0, 0.1, 0.5, 10.0, 0.5)
