"""Mark law, exact simulation, forest correction and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from estimators import (
    SIMULATION_PRIOR,
    draw_parameters,
    fit_pareto,
    pareto_mean,
    sample_pareto,
    simulate_cascade,
    simulate_dataset,
)
from estimators.correction import are_forest, fit_forest, predict_omega
from estimators.forecast import are_weights, forecast_size, omega_target
from estimators.metrics import are, best_constant, kendall, msle_log2, spearman, top_share


@pytest.mark.parametrize("alpha, mu", [(2.4, 10.0), (2.1, 50.0), (3.0, 1.0)])
def test_pareto_fit_recovers_exponent_and_bound(alpha, mu):
    rng = np.random.default_rng(int(alpha * 10))
    # a Pareto tail above mu, mixed with a body below it that the fit must cut away
    marks = np.concatenate([sample_pareto(alpha, mu, 20000, rng), rng.uniform(0, mu, 5000)])
    fit = fit_pareto(marks)
    assert abs(fit.alpha - alpha) < 4 * fit.alpha_se + 0.02
    assert mu * 0.8 <= fit.mu <= mu * 2.0  # the KS choice of the bound errs on the high side
    assert fit.mean == pytest.approx(pareto_mean(fit.alpha, fit.mu))


def test_pareto_fit_bad_input():
    with pytest.raises(ValueError, match="at least 50"):
        fit_pareto(np.ones(10))
    with pytest.raises(ValueError, match=">= 0"):
        fit_pareto(-np.ones(100))
    with pytest.raises(ValueError, match="finite"):
        fit_pareto([np.nan] * 100)


def test_sample_pareto_mean():
    rng = np.random.default_rng(0)
    x = sample_pareto(3.5, 10.0, 400000, rng)
    assert x.min() >= 10.0
    assert x.mean() == pytest.approx(pareto_mean(3.5, 10.0), rel=0.01)


def test_simulation_size_law_matches_branching_theory():
    """Mean final size of a cascade rooted by a mark m0 is 1 + p m0 / (1 - n_star)."""
    p, beta, m0 = 0.02, 1e-3, 100.0
    n_star = p * pareto_mean(2.4, 10.0)
    sizes = np.array([simulate_cascade(p, beta, m0=m0, random_state=s).size for s in range(3000)])
    expected = 1 + p * m0 / (1 - n_star)
    se = sizes.std(ddof=1) / np.sqrt(sizes.size)
    assert abs(sizes.mean() - expected) < 4 * se


def test_simulation_delays_are_exponential():
    c = simulate_cascade(0.02, 2e-3, m0=5e4, random_state=1)
    delays = c.times[1:] - c.times[c.parents[1:]]
    assert (delays > 0).all() and (c.parents[1:] < np.arange(1, c.size)).all()
    assert delays.mean() == pytest.approx(1 / 2e-3, rel=0.05)


def test_simulation_is_seeded_and_rejects_supercritical():
    a = simulate_cascade(0.02, 1e-3, m0=500, random_state=42)
    b = simulate_cascade(0.02, 1e-3, m0=500, random_state=42)
    np.testing.assert_array_equal(a.times, b.times)
    with pytest.raises(ValueError, match="must be < 1"):
        simulate_cascade(0.05, 1e-3)


def test_dataset_respects_prior_truncation_and_min_size():
    d = simulate_dataset(50, random_state=3, min_size=10)
    assert len(d) == 50 and min(c.size for c in d) >= 10
    theta = draw_parameters(2000, prior=SIMULATION_PRIOR, random_state=0)
    assert (theta[:, 0] * pareto_mean(2.4, 10) < 0.99).all()


def test_omega_target_makes_the_forecast_exact():
    n_true, n_obs, n_star, G1 = np.array([50.0, 10.0]), np.array([20.0, 10.0]), np.array([0.5, 0.9]), np.array([4.0, 2.0])
    w = omega_target(n_true, n_obs, n_star, G1)
    np.testing.assert_allclose(forecast_size(n_obs, G1, n_star, w), n_true)
    # the weighted absolute error on omega is the ARE
    omega_hat = np.array([1.0, 2.0])
    np.testing.assert_allclose(
        np.abs(omega_hat - w) * are_weights(n_true, n_obs, n_star, G1),
        are(forecast_size(n_obs, G1, n_star, omega_hat), n_true),
    )


def test_forest_learns_a_constant_correction_as_a_weighted_median():
    rng = np.random.default_rng(0)
    n = 400
    X = np.column_stack([rng.uniform(1e-4, 1e-3, n), rng.uniform(0.1, 0.9, n), rng.uniform(1, 50, n)])
    n_obs = rng.integers(5, 50, n).astype(float)
    # true sizes: the Hawkes forecast scaled by 0.5 (the forest must learn omega = 0.5)
    n_true = n_obs + 0.5 * X[:, 2] / (1 - X[:, 1])
    X7 = np.column_stack([X, n_obs, rng.integers(0, 5, n), rng.uniform(0, 600, n), rng.uniform(10, 1e4, n)])
    forest = fit_forest(X7, n_true)
    assert forest.trend == "regression"  # the model's own forecast is not 0.5 times the mean: a forest must win
    np.testing.assert_allclose(predict_omega(forest, X7[:20]), 0.5, atol=1e-6)


def test_are_forest_predicts_each_leafs_median_of_its_draws_the_least_weighted_absolute_error():
    """Each tree's leaf value is the median of ``r`` over the bootstrap draws (drawn with the weights) that
    fall in that leaf, so no other value has a smaller absolute error on them; the forest averages the trees."""
    rng = np.random.default_rng(1)
    n = 600
    X = np.column_stack([rng.uniform(0, 1, (n, 3)), np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 1, n))])
    r = np.exp(X[:, 0] + rng.standard_t(2, n))  # a heavy right tail
    w = rng.uniform(0.1, 10, n)
    forest = are_forest(X, r, w, n_estimators=8, min_samples_leaf=7, random_state=0)
    leaves = forest.apply(X)
    values = np.empty((n, len(forest.estimators_)))
    for t, (tree, drawn) in enumerate(zip(forest.estimators_, forest.estimators_samples_)):
        is_leaf = tree.tree_.children_left == -1
        assert set(np.unique(leaves[drawn, t])) == set(np.flatnonzero(is_leaf))  # every leaf has draws
        for leaf in np.flatnonzero(is_leaf):
            in_leaf = r[drawn][leaves[drawn, t] == leaf]  # with repeats: a sample drawn twice counts twice
            value = tree.tree_.value[leaf, 0, 0]
            assert value == np.median(in_leaf)
            cost = np.abs(in_leaf - value).sum()
            for other in (value * 0.99, value * 1.01, in_leaf.mean()):
                assert cost <= np.abs(in_leaf - other).sum() * (1 + 1e-12)
        values[:, t] = tree.tree_.value[leaves[:, t], 0, 0]
    np.testing.assert_allclose(forest.predict(X), values.mean(axis=1), rtol=1e-12)
    # the draws follow the weights: a sample of weight 10 is drawn about 100 times as often as one of 0.1
    counts = np.bincount(np.concatenate(forest.estimators_samples_), minlength=n)
    assert counts[w > 5].mean() > 10 * counts[w < 0.5].mean()


def test_the_selection_scores_each_candidate_as_its_own_fit_and_predict_would():
    """fit_forest fits each trend once per fold and shares it among the candidates around it: its
    scores equal those of fitting every candidate on its own (OmegaForest.fit then predict)."""
    from sklearn.model_selection import KFold

    from estimators.correction import CANDIDATES, OmegaForest

    rng = np.random.default_rng(8)
    n = 120
    n_obs = rng.integers(5, 200, n).astype(float)
    X = np.column_stack([rng.uniform(1e-4, 1e-3, n), rng.uniform(0.1, 0.9, n), rng.uniform(1, 50, n), n_obs,
                         rng.integers(0, 5, n), rng.uniform(0, 600, n), rng.uniform(10, 1e4, n)])
    n_true = np.round(n_obs + rng.lognormal(0.0, 1.0, n) * X[:, 2] / (1 - X[:, 1]))
    forest = fit_forest(X, n_true, cv=3, n_estimators=5, random_state=2)
    y, w = omega_target(n_true, n_obs, X[:, 1], X[:, 2]), are_weights(n_true, n_obs, X[:, 1], X[:, 2])
    for loss, leaf, trend in CANDIDATES:
        err = np.empty(n)
        for train, test in KFold(n_splits=3, shuffle=True, random_state=2).split(X):
            model = OmegaForest(loss, leaf, trend=trend, n_estimators=5, random_state=2).fit(X[train], y[train], w[train])
            err[test] = np.abs(np.maximum(model.predict(X[test]), 0.0) - y[test]) * w[test]
        assert forest.cv_are_[f"{loss}/{leaf}/{trend}"] == err.mean()
    # select_trees: the selection compares forests of that many trees, the chosen one has n_estimators
    forests = tuple(c for c in CANDIDATES if c[0] != "none")
    small = fit_forest(X, n_true, cv=3, n_estimators=7, random_state=2, select_trees=5, candidates=forests)
    assert small.cv_are_ == {"/".join(map(str, c)): forest.cv_are_["/".join(map(str, c))] for c in forests}
    assert len(small.forest_.estimators_) == 7
    # never more trees in the selection than in the model (then as many)
    assert fit_forest(X, n_true, cv=3, n_estimators=5, random_state=2, select_trees=20).cv_are_ == forest.cv_are_


@pytest.mark.parametrize("exponent", [0.5, 1.3])
def test_the_correction_chooses_the_counts_trend_where_the_size_follows_the_count(exponent):
    """Where the final size is a power of the count so far and the fit's numbers say nothing, the
    inner cross-validation picks the count's trend, which forecasts those sizes; the series'
    statistics may be missing (NaN)."""
    from estimators.correction import count_trend

    rng = np.random.default_rng(3)
    n = 300
    n_obs = rng.integers(5, 200, n).astype(float)
    n_true = np.round(40.0 * n_obs ** exponent)  # above n_obs: every cascade grows
    X = np.column_stack([rng.uniform(1e-4, 1e-3, n), rng.uniform(0.1, 0.9, n), rng.uniform(1, 50, n), n_obs,
                         np.full((n, 3), np.nan)])
    a, b = count_trend(n_obs, n_true, (0.0, 0.5, 1.0, 1.3))
    assert b == exponent and a == pytest.approx(40.0, rel=0.02)
    assert count_trend(n_obs, np.full(n, 300.0), (0.0, 0.5)) == (300.0, 0.0)  # b = 0: the best constant
    forest = fit_forest(X, n_true, n_estimators=10)
    assert forest.trend == "count"
    n_hat = forecast_size(n_obs, X[:, 2], X[:, 1], predict_omega(forest, X))
    assert np.median(are(n_hat, n_true)) < 0.02


def test_series_features_count_the_recent_events_the_idle_time_and_the_marks():
    from estimators.forecast import RECENT_SHARE, correction_features, series_features

    times = np.array([0.0, 10.0, 70.0, 80.0, 99.0, 100.0, 150.0])
    marks = np.arange(1.0, 8.0)
    assert RECENT_SHARE == 0.25
    assert series_features(times, marks, 100.0) == (2.0, 1.0, 15.0)  # 75 <= t < 100: 80, 99; 70 is before
    assert series_features(times[:1], marks[:1], 100.0) == (0.0, 100.0, 1.0)
    assert series_features(times[:0], marks[:0], 100.0) == (0.0, 100.0, 0.0)
    X = correction_features([[0.1, 1e-3, 0.5, 10.0]], [5])
    assert X.shape == (1, 7) and np.isnan(X[0, 4:]).all() and X[0, :4].tolist() == [1e-3, 0.5, 10.0, 5.0]


def test_series_features_of_a_chunk_are_those_of_each_series():
    """The packed form (the estimator's workers compute a chunk's at once) against the definition,
    written out here with numpy, on series of random lengths (empty ones and windows before the
    first event included)."""
    from estimators.forecast import RECENT_SHARE, series_features_packed

    rng = np.random.default_rng(5)
    sizes = rng.integers(0, 40, size=300)
    sizes[:3] = 0
    times = np.concatenate([np.sort(rng.exponential(500.0, n)) for n in sizes])
    marks = rng.pareto(1.4, times.size) * 10.0
    offsets = np.r_[0, np.cumsum(sizes)]
    t_obs = rng.choice([1e-3, 60.0, 600.0, 3600.0], size=sizes.size)
    got = series_features_packed(times, marks, offsets, t_obs)
    for i in range(sizes.size):
        t, m, T = times[offsets[i]:offsets[i + 1]], marks[offsets[i]:offsets[i + 1]], t_obs[i]
        before = t < T
        want = (np.sum(before & (t >= (1 - RECENT_SHARE) * T)), T - t[before][-1] if before.any() else T,
                m[before].sum())
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="offsets"):
        series_features_packed(times, marks, offsets[:-1], t_obs)
    with pytest.raises(ValueError, match="offsets"):
        series_features_packed(times[:-1], marks[:-1], offsets, t_obs)


def test_forecast_size_of_plain_numbers_is_that_of_arrays():
    """Plain numbers (one fit's final size) skip the arrays: the same result, edge cases included."""
    import itertools

    values = [0, 7, 2.5, 1e308, -3.0, np.nan, np.inf, 0.999999999, 1.0, 1.5, 1e-300]
    for n_obs, G1, n_star, omega in itertools.product(values, repeat=4):
        with np.errstate(all="ignore"):
            want = forecast_size(np.array([n_obs]), np.array([G1]), np.array([n_star]), np.array([omega]))[0]
        got = forecast_size(n_obs, G1, n_star, omega)
        assert np.array_equal(got, want, equal_nan=True), (n_obs, G1, n_star, omega, got, want)


@pytest.mark.parametrize("loss, leaf, trend", [("none", 1, "base"), ("are", 3, "regression"), ("log", 3, "regression"),
                                             ("none", 1, "count"), ("are", 10, "count"), ("are", 5, "base")])
def test_a_compiled_correction_predicts_what_its_forest_predicts_bit_for_bit(loss, leaf, trend):
    """OmegaForest.compile(): the same corrections, to the last bit, for rows with NaN series statistics
    (routed where the trees sent missing values), values beyond float32's precision and rows far from the
    training set; pickled and back; and the same refusals (a wrong shape, a value beyond float32)."""
    import pickle

    from estimators.correction import OmegaForest
    from estimators.inference import CompiledOmega

    rng = np.random.default_rng(11)
    n = 400
    n_obs = rng.integers(5, 200, n).astype(float)
    X = np.column_stack([rng.uniform(1e-4, 1e-3, n), rng.uniform(0.1, 0.9, n), rng.uniform(1, 50, n), n_obs,
                         rng.integers(0, 5, n), rng.uniform(0, 600, n), rng.uniform(10, 1e4, n)])
    X[rng.random(n) < 0.2, 4:] = np.nan  # course-format parameters: no series statistics
    n_true = np.round(n_obs + rng.lognormal(0.0, 1.0, n) * X[:, 2] / (1 - X[:, 1]))
    y, w = omega_target(n_true, n_obs, X[:, 1], X[:, 2]), are_weights(n_true, n_obs, X[:, 1], X[:, 2])
    forest = OmegaForest(loss, leaf, trend=trend, n_estimators=12, random_state=4).fit(X, y, w)
    compiled = pickle.loads(pickle.dumps(forest.compile()))
    assert isinstance(compiled, CompiledOmega)
    new = np.column_stack([rng.uniform(1e-5, 2e-3, 300), rng.uniform(0.0, 0.99, 300), rng.uniform(0.5, 80, 300),
                           rng.integers(1, 400, 300), rng.integers(0, 9, 300), rng.uniform(0, 900, 300),
                           rng.uniform(1, 1e5, 300)])
    new[::5, 4:] = np.nan
    new[1::5, 6] = 1.0 + 1e-9  # beyond float32's precision: compared as scikit-learn compares it
    for rows in (X, new, new[:1]):
        expected = forest.predict(rows)
        assert np.array_equal(compiled.predict(rows), expected)
        assert np.array_equal(predict_omega(compiled, rows), predict_omega(forest, rows))
    with pytest.raises(ValueError, match="shape"):
        compiled.predict(np.ones((3, 4)))
    if loss != "none":
        big = new[:2].copy()
        big[0, 5] = 1e39  # inf in float32
        with pytest.raises(ValueError, match="infinity"), np.errstate(over="ignore"):
            forest.predict(big)
        with pytest.raises(ValueError, match="infinity"):
            compiled.predict(big)


def test_a_compiled_correction_predicts_without_scikit_learn(tmp_path):
    """A process that unpickles a compiled correction and predicts with it never imports scikit-learn
    (the predictor in the pipeline's process: 0.5 s of start-up saved)."""
    import pickle
    import subprocess
    import sys

    from estimators.correction import OmegaForest

    rng = np.random.default_rng(5)
    X = np.column_stack([rng.uniform(1e-4, 1e-3, 200), rng.uniform(0.1, 0.9, 200), rng.uniform(1, 50, 200),
                         rng.integers(5, 200, 200), rng.integers(0, 5, 200), rng.uniform(0, 600, 200),
                         rng.uniform(10, 1e4, 200)])
    forest = OmegaForest("are", 5, trend="base", n_estimators=5).fit(X, rng.uniform(0.5, 2.0, 200))
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(forest.compile()))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", forest.predict(X))
    code = ("import pickle, sys, numpy as np; from pathlib import Path; d = Path(sys.argv[1]); "
            "m = pickle.loads((d / 'm.pkl').read_bytes()); "
            "assert np.array_equal(m.predict(np.load(d / 'X.npy')), np.load(d / 'expected.npy')); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('sklearn', 'skops')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_forest_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        fit_forest(np.ones((5, 4)), np.ones(5))
    with pytest.raises(ValueError, match="finite"):
        fit_forest(np.full((5, 7), np.nan), np.ones(5))
    with pytest.raises(ValueError, match="same number"):
        fit_forest(np.ones((5, 7)), np.ones(4))


def test_metrics():
    np.testing.assert_allclose(are([10, 30, np.inf], [20, 20, 20]), [0.5, 0.5, np.inf])
    assert msle_log2([4, 16], [8, 8]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NaN"):
        are([np.nan], [1])
    with pytest.raises(ValueError, match="true sizes"):
        are([1], [0])


def test_rank_metrics():
    t = np.array([5.0, 1, 4, 2, 3, 9, 8, 7, 6, 10])
    assert spearman(t, t) == pytest.approx(1.0) and kendall(t, t) == pytest.approx(1.0)
    assert spearman(-t, t) == pytest.approx(-1.0) and kendall(-t, t) == pytest.approx(-1.0)
    assert spearman(np.ones(10), t) is None and kendall(np.ones(10), t) is None  # a constant does not rank
    assert top_share(t, t) == 1.0 and top_share(-t, t) == 0.0  # top decile of 10 = the largest one
    assert top_share(t, t, 0.3) == 1.0
    # the largest forecast is the second-largest size: 0 of 1 in the top decile, 2 of 3 in the top 30 %
    p = t.copy()
    p[[5, 9]] = p[[9, 5]]
    assert top_share(p, t) == 0.0 and top_share(p, t, 0.3) == pytest.approx(1.0)
    p = np.where(t >= 9, 100.0, t)  # two forecasts tied at the top, one of them right: half a hit
    assert top_share(p, t) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fraction"):
        top_share(t, t, 0)


def test_best_constant_minimises_the_median_are():
    rng = np.random.default_rng(1)
    sizes = np.exp(rng.normal(7, 1, 301))
    c = best_constant(sizes)
    median_are = lambda x: np.median(np.abs(x - sizes) / sizes)  # noqa: E731
    grid = np.geomspace(sizes.min(), sizes.max(), 20_000)
    assert median_are(c) <= min(median_are(x) for x in grid) + 1e-3
    assert best_constant([7.0]) == 7.0
    with pytest.raises(ValueError, match="sizes"):
        best_constant([])


def test_remaining_size_sd_matches_a_simulated_branching_process():
    """Poisson(G1) roots, Poisson(n*) offspring: the sample sd of the total agrees with the formula."""
    from estimators import remaining_size_sd

    rng = np.random.default_rng(3)
    G1, n_star, runs = 4.0, 0.6, 20_000
    totals = np.empty(runs)
    for r in range(runs):
        gen = total = rng.poisson(G1)
        while gen:
            gen = rng.poisson(n_star * gen)
            total += gen
        totals[r] = total
    sd = remaining_size_sd(G1, n_star)
    assert totals.mean() == pytest.approx(G1 / (1 - n_star), rel=0.03)
    assert totals.std() == pytest.approx(sd, rel=0.05)
    assert remaining_size_sd(G1, 1.0) == float("inf")


def test_mark_law_fits_a_body_and_a_pareto_tail():
    from estimators.marks import MarkLaw

    rng = np.random.default_rng(4)
    n = 60_000
    body = np.exp(rng.normal(5.0, 1.2, n))
    marks = np.where(body < 1500, body, sample_pareto(2.5, 1500.0, n, rng))  # lognormal body, Pareto tail
    law = MarkLaw.fit(marks)
    assert law.alpha == pytest.approx(2.5, abs=0.1) and 1000 < law.mu < 2500
    assert law.mean == pytest.approx(marks.mean(), rel=0.05)
    assert law.tail == pytest.approx(np.mean(marks >= law.mu), abs=1e-9)
    assert law.sample(200_000, rng).mean() == pytest.approx(law.mean, rel=0.05)
    assert law.moment(1.0) == pytest.approx(law.mean)
    # the offspring law: a probability law with mean p E[m]
    p = 0.5 / law.mean
    f = law.offspring_pmf(p, 4096)
    assert f.sum() == pytest.approx(1.0, abs=1e-3)
    assert (np.arange(f.size) * f).sum() == pytest.approx(p * law.mean, rel=0.02)
    course = MarkLaw.pareto()
    assert course.mean == pytest.approx(pareto_mean(2.4, 10.0)) and hash(course) == hash(MarkLaw.pareto())
    with pytest.raises(ValueError, match="alpha"):
        MarkLaw.pareto(alpha=2.0)
    # marks that are Pareto all the way down: no body (this raised in np.array_split)
    plain = MarkLaw.fit(sample_pareto(2.5, 10.0, 5000, rng))
    assert plain.body == () and plain.tail == 1.0 and plain.alpha == pytest.approx(2.5, abs=0.15)


def test_a_learnt_mark_law_enters_the_fits_the_prior_and_the_predictive_law():
    """Wherever E[m] or the offspring law enters, a learnt law replaces the course's: n_star of both
    kernels, the powerlaw profile's gradient, the law of the remaining size and the prior's weights."""
    from estimators import MarkLaw, fit_cascade, simulate_cascade
    from estimators.predictive import are_optimal_size, progeny_pmf
    from estimators.prior import selection_weights

    rng = np.random.default_rng(8)
    n = 20_000
    body = np.exp(rng.normal(5.0, 1.2, n))
    law = MarkLaw.fit(np.where(body < 1500, body, sample_pareto(2.5, 1500.0, n, rng)))
    course = MarkLaw.pareto()
    for beta in (0.0, 0.3, 0.9):  # the slope of log E[m**beta], against a central difference
        h = 1e-6
        numeric = (np.log(law.moment(beta + h)) - np.log(law.moment(beta - h))) / (2 * h) if beta else None
        if numeric is not None:
            assert law.log_moment_slope(beta) == pytest.approx(numeric, rel=1e-5)
        assert course.log_moment_slope(beta) == pytest.approx(np.log(10.0) + 1.0 / (1.4 - beta), rel=1e-12)
    c = next(c for seed in range(100) if (c := simulate_cascade(0.8 / course.mean, 1e-3, random_state=seed)).size > 50)
    f = fit_cascade(c.times, c.marks, 3600.0, mark_law=law, prior=None)
    assert f.n_star == pytest.approx(f.p * law.mean, rel=1e-12) and f.mark_law is law
    g = fit_cascade(c.times, c.marks, 3600.0, kernel="powerlaw", mark_law=law)
    assert g.n_star == pytest.approx(g.kappa * law.moment(g.beta) * g.c ** -g.theta / g.theta, rel=1e-9)
    pl = progeny_pmf(0.3, law)
    pc = progeny_pmf(0.3, course)
    for pmf in (pl, pc):  # total progeny: a law with mean 1 / (1 - n_star)
        assert pmf.sum() == pytest.approx(1.0, abs=1e-9)
        assert (np.arange(pmf.size) * pmf).sum() == pytest.approx(1 / 0.7, rel=1e-2)
    assert np.abs(pl - pc).sum() > 0.01  # ... whose shape depends on the marks' law
    assert are_optimal_size(50, 0.8, 20.0, mark_law=law) != are_optimal_size(50, 0.8, 20.0, mark_law=course)
    w = selection_weights(np.array([0.3, 0.8]), 50, mark_law=law)
    assert w[0] > w[1] > 1 and not np.allclose(w, selection_weights(np.array([0.3, 0.8]), 50))
