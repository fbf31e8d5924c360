"""The reference-accuracy benchmark (bench/best_achievable.py): samplers and the ARE-optimal point."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import best_achievable as ba  # noqa: E402

from estimators import (  # noqa: E402
    DEFAULT_BETA_BOUNDS,
    SIMULATION_PRIOR,
    loglikelihood,
    pareto_mean,
    simulate_cascade,
    simulate_dataset,
)


@pytest.mark.parametrize("alpha, p", [(3.5, 0.05), (2.4, 0.02)])
def test_remaining_size_mean_is_G1_over_one_minus_n_star(alpha, p):
    G1 = 4.0
    n_star = p * pareto_mean(alpha, 10.0)
    R = ba.remaining_size_samples(G1, p, 1_000_000, alpha=alpha, random_state=1)
    expected = G1 / (1 - n_star)
    if alpha > 3:  # finite variance: a standard-error test
        assert abs(R.mean() - expected) < 4 * R.std() / math.sqrt(R.size)
    else:  # marks with infinite variance (tail 1.4): the mean converges slowly, allow 3 %
        assert R.mean() == pytest.approx(expected, rel=0.03)


def test_remaining_size_stops_beyond_limit():
    R = ba.remaining_size_samples(50.0, 0.028, 2000, limit=100, random_state=2)  # n_star = 0.98
    assert (R > 100).any() and (R[R > 100] < 10_000_000).all()


def test_are_optimal_point_hand_made():
    assert ba.are_optimal_point([1, 2, 10]) == 1.0  # weights 1, .5, .1: the first already holds half
    assert ba.are_optimal_point([10, 10, 10, 100, 100, 100, 100]) == 10.0  # 0.3 of 0.34 on 10
    assert ba.are_optimal_point([10, 20]) == 10.0  # 0.1 of 0.15 on 10
    assert ba.are_optimal_point([20, 20, 20, 10]) == 20.0  # cumulative 0.1, 0.15, 0.2, 0.25: half is 0.125
    with pytest.raises(ValueError):
        ba.are_optimal_point([])


def test_are_optimal_point_minimises_expected_are():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(1, 200, size=rng.integers(1, 40)).astype(float)
        cand = np.unique(x)  # the objective is piecewise linear with kinks at the samples
        obj = np.abs(cand[:, None] - x[None, :]).__truediv__(x[None, :]).mean(axis=1)
        best = ba.are_optimal_point(x)
        assert np.mean(np.abs(best - x) / x) <= obj.min() + 1e-12


def test_counts_sampler_matches_simulate_cascade_root_only():
    """A history made of the root alone (T = 0+): N = 1 + R with G1 = p m0."""
    p, beta, m0 = 0.02, 1e-3, 200.0
    n = 20000
    sim = np.array([simulate_cascade(p, beta, m0=m0, random_state=s).size for s in range(n)])
    cnt = 1 + ba.remaining_size_samples(p * m0, p, n, random_state=3)
    for q in (1, 2, 3, 5, 8, 13, 20, 40, 100):
        f1, f2 = np.mean(sim <= q), np.mean(cnt <= q)
        f = 0.5 * (f1 + f2)
        se = math.sqrt(max(f * (1 - f), 1e-4) * 2 / n)
        assert abs(f1 - f2) < 4.5 * se, (q, f1, f2)
    assert stats.ks_2samp(sim, cnt).pvalue > 1e-3


def test_oracle_predictive_is_calibrated_on_simulated_histories():
    """Cut complete cascades at T: the true N is a draw of the oracle predictive (uniform PIT)."""
    p, beta, T = 0.022, 1e-3, 900.0
    rng = np.random.default_rng(4)
    ba.seed(5)
    pits = []
    for s in range(1500):
        c = simulate_cascade(p, beta, random_state=1000 + s)
        obs = c.times < T
        G1 = p * np.sum(c.marks[obs] * np.exp(-beta * (T - c.times[obs])))
        N = obs.sum() + ba.remaining_size_samples(G1, p, 300)
        pits.append(ba._pit(N, c.size, rng.random()))
    assert stats.kstest(pits, "uniform").pvalue > 1e-3


def test_log_posterior_uses_the_public_likelihood():
    c = simulate_dataset(1, random_state=7)[0]
    T = 3600.0
    cst, _ = ba._prior_constants(SIMULATION_PRIOR, 2.4, 10.0, 0.99, DEFAULT_BETA_BOUNDS)
    t, m = c.times[c.times < T], c.marks[c.times < T]
    for p, beta in [(0.01, 1e-3), (0.025, 3e-4)]:
        u, v = math.log(p), math.log(beta)
        L, K, AT, f0, a, b = ba._slice(t, m, T, v, float(t.size - 1), cst)
        f = ba._f(u, v, float(t.size - 1), L, K, *cst[:5])
        d = np.array([u, v]) - cst[:2]
        P = np.array([[cst[2], cst[3]], [cst[3], cst[4]]])
        assert f + 0.5 * d @ P @ d == pytest.approx(loglikelihood(c.times, c.marks, T, p, beta), rel=1e-10)
        assert AT == pytest.approx(np.sum(m * np.exp(-beta * (T - t))), rel=1e-10)


def test_posterior_samples_match_quadrature():
    c = simulate_dataset(4, random_state=5)[3]
    T = 3600.0
    t, m = c.times[c.times < T], c.marks[c.times < T]
    n1 = t.size - 1
    mean, cov = SIMULATION_PRIOR.log_moments()
    P = np.linalg.inv(cov)
    uhi = math.log(0.99 / pareto_mean(2.4, 10.0))
    vs = np.linspace(math.log(DEFAULT_BETA_BOUNDS[0]), math.log(DEFAULT_BETA_BOUNDS[1]), 1201)
    vs = 0.5 * (vs[1:] + vs[:-1])
    us = np.linspace(mean[0] - 12 * math.sqrt(cov[0, 0]), uhi, 1201)
    us = 0.5 * (us[1:] + us[:-1])
    lp = np.empty((vs.size, us.size))
    for j, v in enumerate(vs):
        du, dv = us - mean[0], v - mean[1]
        L = ba._slice(t, m, T, v, float(n1), ba._prior_constants(SIMULATION_PRIOR, 2.4, 10.0, 0.99,
                                                                  DEFAULT_BETA_BOUNDS)[0])
        lp[j] = n1 * (us + v) + L[0] - np.exp(us) * L[1] - 0.5 * (P[0, 0] * du**2 + 2 * P[0, 1] * du * dv
                                                                    + P[1, 1] * dv**2)
        if j % 200 == 0:  # spot checks against the public likelihood
            ll = [loglikelihood(t, m, T, math.exp(u), math.exp(v)) for u in us[::40]]
            prior = -0.5 * (P[0, 0] * du**2 + 2 * P[0, 1] * du * dv + P[1, 1] * dv**2)
            np.testing.assert_allclose(lp[j, ::40] - prior[::40], ll, rtol=1e-9)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    Eu, Ev = w.sum(0) @ us, w.sum(1) @ vs
    Su = math.sqrt(w.sum(0) @ (us - Eu) ** 2)
    Sv = math.sqrt(w.sum(1) @ (vs - Ev) ** 2)
    p, beta, G1 = ba.posterior_samples(c.times, c.marks, T, 40000, random_state=6)
    lu, lv = np.log(p), np.log(beta)
    assert abs(lu.mean() - Eu) < 4 * Su / 200 and abs(lv.mean() - Ev) < 4 * Sv / 200
    assert lu.std() == pytest.approx(Su, rel=0.02) and lv.std() == pytest.approx(Sv, rel=0.02)
    assert (p * pareto_mean(2.4, 10.0) < 0.99).all()
    assert ((beta >= DEFAULT_BETA_BOUNDS[0]) & (beta <= DEFAULT_BETA_BOUNDS[1])).all()
    np.testing.assert_allclose(G1, p * np.array([np.sum(m * np.exp(-b * (T - t))) for b in beta]), rtol=1e-9)


def test_selected_predictive_respects_the_selection():
    ba.seed(8)
    out = ba.selected_predictive(lambda k: (np.full(k, 0.02), np.full(k, 1e-3), np.full(k, 3.0)), 4, 500,
                                 min_size=10, max_size=60)
    N = out["N"]
    assert N.size == 500 and N.min() >= 10 and N.max() <= 60
    assert out["below_min"] > 0 and out["above_max"] > 0
    assert out["tries"] >= 500 + out["below_min"] + out["above_max"]


def test_reference_table_shape_and_oracle_sense():
    data = simulate_dataset(12, random_state=9)
    table = ba.reference_table(data, [600, 3600], n_samples=200, seed=1)
    assert set(table) == {600.0, 3600.0}
    for T, row in table.items():
        assert set(row) == set(ba.NAMES)
        n = {row[k]["n"] for k in ba.NAMES}
        assert len(n) == 1 and 0 < n.pop() <= 12
        for v in row.values():
            assert v["median_are"] >= 0 and v["mean_are"] >= 0
    # the seeded Monte Carlo is reproducible
    assert ba.reference_table(data, [600, 3600], n_samples=200, seed=1) == table
