"""The law of the remaining size, the ARE-optimal forecast, and the empirical-Bayes prior."""

from __future__ import annotations

import numpy as np
import pytest

from estimators import SIMULATION_PRIOR, draw_parameters, pareto_mean
from estimators.predictive import are_optimal_omega, are_optimal_size, offspring_pmf, progeny_pmf, remaining_size_pmf
from estimators.prior import fit_prior, prior_from_log_moments, selection_weights

EM = pareto_mean(2.4, 10.0)


def remaining_by_simulation(n_star: float, G1: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Independent Monte Carlo of the remaining size: Poisson(G1) children, then generation by generation."""
    p = n_star / EM
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = rng.poisson(G1)
        total = k
        while k > 0:
            marks = 10.0 * (1.0 + rng.pareto(1.4, size=k))
            k = rng.poisson(p * marks.sum())
            total += k
        out[i] = total
    return out


def weighted_median(x: np.ndarray) -> float:
    x = np.sort(x.astype(np.float64))
    cw = np.cumsum(1.0 / x)
    return float(x[np.searchsorted(cw, 0.5 * cw[-1])])


def test_offspring_law_is_the_pareto_mixture_of_poissons():
    rng = np.random.default_rng(0)
    for n_star in (0.2, 0.8):
        p = n_star / EM
        f = offspring_pmf(p, 2.4, 10.0, 200_000)
        assert f.sum() == pytest.approx(1.0, abs=1e-6)
        assert (f * np.arange(f.size)).sum() == pytest.approx(n_star, rel=1e-2)  # the far tail is cut
        draws = rng.poisson(p * 10.0 * (1.0 + rng.pareto(1.4, size=400_000)))
        emp = np.bincount(draws, minlength=20)[:20] / draws.size
        se = np.sqrt(f[:20] * (1 - f[:20]) / draws.size)
        assert (np.abs(emp - f[:20]) <= 5 * se + 1e-5).all()


def test_progeny_law():
    for n_star in (0.0, 0.3, 0.6):
        T = progeny_pmf(n_star)
        assert T[0] == 0 and T.sum() == pytest.approx(1.0)
        assert T[1] == pytest.approx(offspring_pmf(max(n_star, 1e-12) / EM, 2.4, 10.0, 4)[0])  # no child at all
        # E[T] = 1 / (1 - n_star); the heavy tail beyond 1024 events, kept as an atom at 1024, holds a little of it
        assert (T * np.arange(T.size)).sum() == pytest.approx(1 / (1 - n_star), rel=0.06)
        assert (T * np.arange(T.size)).sum() <= 1 / (1 - n_star)
    with pytest.raises(ValueError, match="n_star"):
        progeny_pmf(1.0)
    with pytest.raises(TypeError, match="MarkLaw"):
        progeny_pmf(0.5, (2.4, 10.0))


@pytest.mark.parametrize("n_star,G1,n_obs", [(0.5, 3.0, 5), (0.8, 10.0, 20), (0.3, 0.5, 3)])
def test_remaining_size_law_and_are_optimal_point_match_a_simulation(n_star, G1, n_obs):
    rng = np.random.default_rng(1)
    draws = remaining_by_simulation(n_star, G1, 100_000, rng)
    pR = remaining_size_pmf(n_star, G1)
    emp = np.bincount(draws, minlength=40)[:40] / draws.size
    se = np.sqrt(pR[:40] * (1 - pR[:40]) / draws.size)
    assert (np.abs(emp - pR[:40]) <= 5 * se + 1e-4).all()
    x = are_optimal_size(n_obs, n_star, G1)
    assert abs(x - weighted_median(n_obs + draws)) <= 1
    assert n_obs <= x < n_obs + G1 / (1 - n_star)  # below the mean forecast: the tail is heavy
    # conditioning on a minimum final size moves the point up, never below the minimum
    assert are_optimal_size(n_obs, n_star, G1, min_size=n_obs + 30) >= n_obs + 30


def test_are_optimal_forecasts_of_a_batch_equal_each_cascades_own_law():
    """are_optimal_omega computes a batch's laws together (cached grid spectra, one inverse FFT per
    length, spectra beyond the cache's length too): equal to each cascade's remaining_size_pmf and its
    1/N-weighted median, computed directly."""
    from estimators import MarkLaw

    rng = np.random.default_rng(4)
    n = 400
    n_obs = rng.integers(1, 300, n).astype(float)
    n_star = np.concatenate([np.round(rng.uniform(0, 0.98, 40), 2), rng.uniform(0, 0.98, n - 40)])  # grid points too
    G1 = np.exp(rng.uniform(-3, 7, n))  # laws of 256 up to 2**18 entries
    law = MarkLaw.fit(np.exp(rng.normal(5, 1.5, 5000)))
    for mark_law, min_size in ((law, 1.0), (law, 30.0)):
        got = are_optimal_omega(n_obs, n_star, G1, mark_law=mark_law, min_size=min_size)
        for i in range(n):
            pR = remaining_size_pmf(n_star[i], G1[i], mark_law)
            N = n_obs[i] + np.arange(pR.size)
            w = np.where(N >= min_size, pR / N, 0.0)
            total = w.sum() + max(1.0 - pR.sum(), 0.0) / (n_obs[i] + pR.size)
            j = int(np.searchsorted(np.cumsum(w), 0.5 * total))
            x = N[j] if j < N.size else n_obs[i] + pR.size
            assert got[i] == pytest.approx((x - n_obs[i]) * (1 - n_star[i]) / G1[i], rel=1e-12, abs=1e-300), i


def test_are_optimal_edge_cases():
    assert are_optimal_size(7, 0.5, 0.0) == 7
    assert are_optimal_size(7, 0.5, 0.0, min_size=10) == 10
    assert are_optimal_size(7, 1.0, 3.0) == np.inf
    with pytest.raises(ValueError, match="n_obs"):
        are_optimal_size(-1, 0.5, 3.0)
    with pytest.raises(ValueError, match="G1"):
        remaining_size_pmf(0.5, np.nan)
    w = are_optimal_omega([7, 7, 7], [0.5, 0.5, 1.2], [3.0, 0.0, 3.0])
    assert w[1] == 0 and w[2] == 0 and w[0] == pytest.approx((are_optimal_size(7, 0.5, 3.0) - 7) * 0.5 / 3.0)


def test_fit_prior_recovers_a_truncated_log_normal():
    theta = draw_parameters(4000, prior=SIMULATION_PRIOR, max_n_star=0.99, random_state=2)
    fitted = fit_prior(theta[:, 0], theta[:, 1], max_n_star=0.99)
    m, C = fitted.log_moments()
    m0, C0 = SIMULATION_PRIOR.log_moments()
    np.testing.assert_allclose(m, m0, atol=0.05)
    np.testing.assert_allclose(np.sqrt(np.diag(C)), np.sqrt(np.diag(C0)), rtol=0.1)
    # the plain sample mean of log beta is pulled inside the bound (1/600 s sits near the mode)
    assert abs(np.log(theta[:, 1]).mean() - m0[1]) > 0.2


def test_selection_weights_undo_a_selection_on_size():
    rng = np.random.default_rng(3)
    theta = draw_parameters(6000, prior=SIMULATION_PRIOR, max_n_star=0.99, random_state=4)
    n_star = theta[:, 0] * EM
    sizes = np.array([rng.choice(1025, p=progeny_pmf(ns) / progeny_pmf(ns).sum()) for ns in n_star])
    kept = sizes >= 10  # a dataset that keeps cascades of 10 events or more
    m0 = SIMULATION_PRIOR.log_moments()[0][0]
    naive = fit_prior(theta[kept, 0], theta[kept, 1], max_n_star=0.99).log_moments()[0][0]
    corrected = fit_prior(theta[kept, 0], theta[kept, 1], max_n_star=0.99, min_size=10).log_moments()[0][0]
    assert naive - m0 > 0.15  # large p is over-represented among the kept cascades
    assert abs(corrected - m0) < 0.08
    w = selection_weights(np.array([0.1, 0.5, 0.9]), 10)
    assert (np.diff(w) < 0).all() and (w >= 1).all()


def test_fit_prior_errors_and_round_trip():
    with pytest.raises(ValueError, match="at least 10"):
        fit_prior(np.full(5, 0.02), np.full(5, 1e-3))
    with pytest.raises(ValueError, match="same length"):
        fit_prior(np.full(5, 0.02), np.full(4, 1e-3))
    m, C = SIMULATION_PRIOR.log_moments()
    m2, C2 = prior_from_log_moments(m, C).log_moments()
    np.testing.assert_allclose(m2, m, rtol=1e-9)
    np.testing.assert_allclose(C2, C, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_star", [0.3, 0.93])
def test_progeny_law_equals_the_hitting_time_theorem_by_direct_convolution(n_star):
    """P(T = n) = P(S_n = n - 1) / n with S_n's law from n explicit convolutions of the offspring law
    (for n <= 60), against the grid law of progeny_pmf (computed by FFT and a matrix product), for
    the course's Pareto law and a learnt law with a heavier tail."""
    from estimators.marks import COURSE_MARKS, MarkLaw

    rng = np.random.default_rng(4)
    for law in (COURSE_MARKS, MarkLaw.fit(10.0 * (1.0 + rng.pareto(1.3, 4000)))):
        f = law.offspring_pmf(n_star / law.mean, 64)
        s, want = np.array([1.0]), [0.0]
        for n in range(1, 61):
            s = np.convolve(s, f)[:64]
            want.append(s[n - 1] / n)
        got = progeny_pmf(n_star, law)[:61]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-15)  # the FFT's wrap-around: ~1e-6 here


def test_progeny_tail_is_the_tail_of_each_progeny_law():
    """Beyond HEAD_TERMS, the tail of the grid law itself; up to it, 1 - the head summed by explicit
    convolutions (exact), which the whole law's FFT matches to its wrap-around (< 1e-7)."""
    from estimators.marks import COURSE_MARKS, MarkLaw
    from estimators.predictive import HEAD_TERMS, progeny_tail

    ns = np.array([[0.0, 0.123, 0.5], [0.77, 0.9, 0.99]])
    want = np.array([[progeny_pmf(float(x))[HEAD_TERMS + 1:].sum() for x in row] for row in ns])
    np.testing.assert_allclose(progeny_tail(ns, HEAD_TERMS + 1), want, rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(5)
    ns = np.array([0.0, 0.12, 0.5, 0.77, 0.9, 0.99])  # grid laws (the same interpolation between them)
    for law in (COURSE_MARKS, MarkLaw.fit(10.0 * (1.0 + rng.pareto(1.3, 4000))), MarkLaw.pareto(4.5, 10.0)):
        for k in (1, 2, 3, 25, HEAD_TERMS):
            exact = []
            for x in ns:
                head = 1.0 if x == 0 else 0.0
                if x > 0:
                    f = law.offspring_pmf(x / law.mean, k + 1)
                    s = np.array([1.0])
                    for n in range(1, k):
                        s = np.convolve(s, f)[:k]
                        head += s[n - 1] / n
                exact.append(max(1.0 - head, 0.0) if k > 1 else 1.0)
            got = progeny_tail(ns, k, law)
            np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-15)
            fft = np.array([progeny_pmf(float(x), law)[k:].sum() for x in ns])
            np.testing.assert_allclose(got, fft, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="n_star"):
        progeny_tail(np.array([0.5, 1.0]), 3)


def test_offspring_pmf_of_a_few_terms_is_the_head_of_a_longer_one():
    """Fewer terms than the Pareto exponent once started the downward recursion from a wrong Gamma value."""
    from estimators.marks import MarkLaw

    for alpha in (2.4, 3.5, 4.5, 6.0):
        law = MarkLaw.pareto(alpha, 10.0)
        long = law.offspring_pmf(0.3 / law.mean, 50)
        for size in range(1, 7):
            np.testing.assert_allclose(law.offspring_pmf(0.3 / law.mean, size), long[:size], rtol=1e-13)


def test_a_learnt_laws_offspring_pmf_is_its_poisson_mixture_to_the_last_bit():
    """The body's Poisson terms are computed only where they do not underflow to 0: the result is
    the mixture over all the terms, bit for bit, at small and large rates."""
    from scipy import special

    from estimators.marks import COURSE_MARKS
    from tweetoscope.models import learn_mark_law

    rng = np.random.default_rng(6)
    for marks in (10.0 * (1.0 - rng.random(20000)) ** (-1 / 2.4), np.round(rng.lognormal(5.0, 2.5, 20000))):
        law = learn_mark_law(marks, COURSE_MARKS)
        assert law.body and law.tail < 1
        for n_star in (0.01, 0.5, 0.99):
            p, size = n_star / law.mean, 2048
            k = np.arange(size, dtype=np.float64)[:, None]
            lam = p * np.asarray(law.body)[None, :]
            body = np.exp(special.xlogy(k, lam) - special.gammaln(k + 1.0) - lam).mean(axis=1)
            want = law.tail * offspring_pmf(p, law.alpha, law.mu, size) + (1.0 - law.tail) * body
            np.testing.assert_array_equal(law.offspring_pmf(p, size), want)


def test_estimates_that_determine_no_prior_are_refused_and_the_settings_prior_is_kept():
    """Every estimate at one p (or one carrying nearly all the selection weight) fitted a prior of zero
    variance, whose covariance cannot be inverted: every fit under it failed ("Singular matrix")."""
    from estimators.prior import MIN_LOG_VARIANCE
    from tweetoscope.config import Settings
    from tweetoscope.estimator import empirical_prior

    rng = np.random.default_rng(0)
    beta = np.exp(rng.normal(-7.0, 1.0, 50))
    with pytest.raises(ValueError, match="determine no prior"):
        fit_prior(np.full(50, 0.01), beta)
    settings = Settings()
    assert empirical_prior(np.full(50, 0.01), beta, np.full(50, 20.0), settings) == settings.prior
    prior = fit_prior(np.exp(rng.normal(-4.0, 0.5, 50)), beta)  # a spread of p: a prior
    assert np.linalg.eigvalsh(prior.log_moments()[1]).min() > MIN_LOG_VARIANCE
