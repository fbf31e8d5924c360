"""Correction of the Hawkes forecast learnt from cascades whose final size is known (one model per window).

The Hawkes forecast ``N = n_obs + G1 / (1 - n_star)`` is corrected by a factor
``omega``: ``N = n_obs + omega * G1 / (1 - n_star)``. For a cascade whose true
final size ``N_true`` is known, the factor that would have been exact is

    omega = (N_true - n_obs) * (1 - n_star) / G1                       (the learner's target)

The correction minimises the ARE, not the squared error: the ARE of a corrected
forecast is ``|omega_hat - omega| * c / N_true`` with ``c = G1 / (1 - n_star)``,
so each tree draws its bootstrap sample with probabilities ``c / N_true`` and
predicts, in each leaf, the median of its draws: the value with the least ARE on
the training cascades of that leaf. A forest predicting a mean would be dragged by
the heavy right tail of cascade sizes far above the ARE-optimal point. The trees
split by the squared error of the log (see :func:`are_forest`: about 4 times faster
to grow than absolute-error splits, and within a few per cent of their ARE).

:class:`OmegaForest` is a trend times a random forest on the features
:data:`estimators.forecast.FEATURE_NAMES` (the fit's ``[b, n_star, G1]``, the count so
far and the series' statistics). The default trend is the model's own ARE-optimal forecast
(:func:`estimators.predictive.are_optimal_omega`: the ``1/N``-weighted median of the
law of the final size, given ``N >= min_size``, the smallest size of the training
cascades); the forest learns what the model gets wrong, and may be left out
(``loss="none"``) when it only adds noise. The other trends do without the model's
law: a log-linear median regression of omega on ``[b, n_star, G1]`` and a size growing
with the count so far (``a n_obs**b``, ``b >= 0.1``, the least median ARE on the training
cascades). :func:`fit_forest` picks among :data:`CANDIDATES` by an inner cross-validation
of the mean ARE, so the chosen correction is never worse than the count's trend on the
training folds by that score. A constant size is not among them: on a set selected by
size it often has the least ARE, but it ranks nothing, so it could never raise an alert
on one cascade rather than another (it is the backtest's ``constant`` baseline).
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import QuantileRegressor
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from .forecast import are_weights, forecast_size, omega_target
from .marks import COURSE_MARKS, MarkLaw
from .inference import OMEGA_FLOOR, TRENDS, CompiledOmega, FlatForest, check_X, combine, trend_log
from .inference import log_features as _log_features
from .inference import predict_omega as _predict_omega
from .metrics import best_constant

__all__ = ["OmegaForest", "CANDIDATES", "TRENDS", "COUNT_EXPONENTS", "are_forest", "count_trend", "fit_forest",
           "predict_omega"]


class OmegaForest(RegressorMixin, BaseEstimator):
    """Predicts the correction ``omega`` from ``X`` = :data:`estimators.forecast.FEATURE_NAMES` (shape (n, 7)).

    A trend times a random forest on ``X`` (Zhang & Lu, "Regression-enhanced random
    forests", 2019; NaN series statistics are routed by the trees):

    * ``trend="base"``: the ARE-optimal omega of the Hawkes model itself
      (:func:`estimators.predictive.are_optimal_omega` under the marks' law ``mark_law``,
      conditioned on ``N >= min_size_``, the smallest final size seen in ``fit``);
      ``trend="regression"``: the linear median regression of ``log omega`` on
      ``log [b, n_star, G1]``; ``trend="count"``: the size ``a n_obs**b`` with the least
      median ARE (``b`` in :data:`COUNT_EXPONENTS`, ``count_`` = ``(a, b)``); below ``n_obs``
      it means no growth (omega at :data:`OMEGA_FLOOR`).
    * ``loss="are"``: trees on the ratio of omega to the trend, whose leaf values (medians of
      draws weighted by the ARE weights, :func:`estimators.forecast.are_weights`) minimise the
      ARE of the training cascades (:func:`are_forest`); ``loss="log"``: squared-error
      trees on the log of the ratio (a geometric mean); ``loss="none"``: no forest.

    ``fit(X, omega, sample_weight)`` follows the scikit-learn contract; learnt state ends in ``_``.
    """

    def __init__(self, loss: str = "are", min_samples_leaf: int = 5, n_estimators: int = 100,
                 random_state: int | None = 0, n_jobs: int | None = None, trend: str = "base",
                 mark_law: MarkLaw = COURSE_MARKS):
        self.loss = loss
        self.min_samples_leaf = min_samples_leaf
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.trend = trend
        self.mark_law = mark_law

    def _trend(self, X: np.ndarray) -> np.ndarray:
        """Log of the trend, shape (n,)."""
        if self.trend == "regression":
            return self.trend_.predict(_log_features(X[:, :3]))
        return trend_log(self.trend, X, mark_law=self.mark_law, min_size=self.min_size_,
                         count=getattr(self, "count_", None))

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> OmegaForest:
        """Fit on ``X`` (shape (n, 7)), targets ``omega`` (n,) and ARE weights (n,)."""
        X = check_X(X)
        y = np.asarray(y, dtype=np.float64)
        self._fit_trend(X, y)
        return self._fit_forest(X, y, sample_weight, None if self.loss == "none" else self._trend(X))

    def _fit_trend(self, X: np.ndarray, y: np.ndarray) -> None:
        """The trend's learnt state (``min_size_`` and ``trend_`` or ``count_``), from checked ``X`` and ``y``."""
        if self.loss not in ("are", "log", "none") or self.trend not in TRENDS:
            raise ValueError(f"loss must be 'are', 'log' or 'none' and trend one of {TRENDS}, "
                             f"got {self.loss!r} and {self.trend!r}")
        n_true = forecast_size(X[:, 3], X[:, 2], X[:, 1], y)
        self.min_size_ = float(max(np.floor(n_true.min() + 1e-9), 1.0))
        if self.trend == "regression":
            self.trend_ = QuantileRegressor(quantile=0.5, alpha=0.0, solver="highs").fit(
                _log_features(X[:, :3]), np.log(np.maximum(y, OMEGA_FLOOR)))
        elif self.trend == "count":
            self.count_ = count_trend(X[:, 3], n_true, COUNT_EXPONENTS)
        self.n_features_in_ = X.shape[1]

    def _fit_forest(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                    trend: np.ndarray | None) -> OmegaForest:
        """The forest on the ratio of ``y`` to the fitted trend, ``trend`` its log on ``X`` (None with no forest)."""
        self.forest_ = None
        if self.loss == "none":
            return self
        resid = np.log(np.maximum(y, OMEGA_FLOOR)) - trend
        if self.loss == "are":
            # |omega_hat - omega| w = |r_hat - r| * trend * w for the ratio r = omega / trend
            w = np.ones_like(trend) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
            self.forest_ = are_forest(X, np.exp(resid), w * np.exp(trend), n_estimators=self.n_estimators,
                                      min_samples_leaf=self.min_samples_leaf, random_state=self.random_state,
                                      n_jobs=self.n_jobs)
        else:
            self.forest_ = RandomForestRegressor(
                n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
                random_state=self.random_state, n_jobs=self.n_jobs,
            ).fit(X, resid)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Correction factors for ``X`` (shape (n, 7)), shape (n,)."""
        check_is_fitted(self)
        X = check_X(X)
        return self._predict(X, self._trend(X))

    def _predict(self, X: np.ndarray, trend: np.ndarray) -> np.ndarray:
        """:meth:`predict` given the log of the trend on ``X``."""
        return combine(self.loss, trend, None if self.loss == "none" else self.forest_.predict(X))

    def compile(self) -> CompiledOmega:
        """This fitted model as plain arrays (:class:`estimators.inference.CompiledOmega`): the same
        predictions, bit for bit, without scikit-learn where it is used."""
        check_is_fitted(self)
        linear = None
        if self.trend == "regression":
            linear = (np.array(self.trend_.coef_, dtype=np.float64), float(self.trend_.intercept_))
        count = tuple(self.count_) if self.trend == "count" else None
        forest = None if self.forest_ is None else FlatForest(self.forest_.estimators_)
        return CompiledOmega(self.loss, self.trend, self.mark_law, self.min_size_, count, linear, forest)


def are_forest(X: np.ndarray, r: np.ndarray, w: np.ndarray, *, n_estimators: int, min_samples_leaf: int,
               random_state: int | None, n_jobs: int | None = None) -> RandomForestRegressor:
    """A random forest on ``X`` (shape (n, d)) whose forecast of ``r`` (n,) has the least weighted
    absolute error ``sum w |r_hat - r|`` that its partition allows, for weights ``w`` (n,).

    Each tree draws its bootstrap sample with probabilities ``w`` (scikit-learn's forests do so
    given ``sample_weight``), splits by the squared error of ``log r`` and predicts, in each leaf,
    the median of ``r`` over its draws (the average of the middle two for an even number), which
    minimises the weighted absolute error of the leaf's training samples; the forest averages
    the trees. Absolute-error splits (scikit-learn's ``absolute_error`` criterion, which this
    replaced) are about 4 times slower to grow, and their out-of-sample ARE was from 2 % better to 7 %
    worse (``bench/bench_forest.py``, BENCHMARKS.md); splits on the log are not thrown by the heavy
    right tail of ``r``. ``r`` must be positive.
    """
    forest = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                   random_state=random_state, n_jobs=n_jobs).fit(X, np.log(r), sample_weight=w)
    leaves = forest.apply(X)  # (n, trees): the leaf of each sample in each tree
    for t, (tree, drawn) in enumerate(zip(forest.estimators_, forest.estimators_samples_)):
        nodes, medians = _leaf_medians(leaves[drawn, t], r[drawn])
        tree.tree_.value[nodes, 0, 0] = medians
    return forest


def _leaf_medians(leaf: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct nodes of ``leaf`` (shape (m,): the leaf of each draw) and the median of ``r``
    (m,) over the draws of each."""
    order = np.lexsort((r, leaf))
    leaf, r = leaf[order], r[order]
    starts = np.flatnonzero(np.r_[True, leaf[1:] != leaf[:-1]])
    counts = np.diff(np.r_[starts, leaf.size])
    return leaf[starts], 0.5 * (r[starts + (counts - 1) // 2] + r[starts + counts // 2])


def count_trend(n_obs: np.ndarray, n_true: np.ndarray, exponents: tuple[float, ...]) -> tuple[float, float]:
    """``(a, b)``: the size ``a n_obs**b`` with the least median ARE over these cascades, ``b`` in ``exponents``.

    For a given ``b`` the ARE is ``|a / r - 1|`` with ``r = n_true / n_obs**b``, so ``a`` is
    :func:`estimators.metrics.best_constant` of ``r``; ``b = 0`` is the best constant size.
    """
    n_obs = np.asarray(n_obs, dtype=np.float64)
    n_true = np.asarray(n_true, dtype=np.float64)
    best, best_err = (1.0, 0.0), np.inf
    for b in exponents:
        r = n_true / n_obs ** b
        a = best_constant(r, grid=32)  # the centres of the middle windows do the work (see there)
        err = float(np.median(np.abs(a / r - 1.0)))
        if err < best_err:
            best, best_err = (a, float(b)), err
    return best


#: The exponents ``b`` that the ``count`` trend ``a n_obs**b`` chooses from (1: proportional). From 0.1,
#: not 0: the trend must rank the cascades as their count does (0 would be one constant size).
COUNT_EXPONENTS = tuple(np.round(np.arange(0.1, 1.51, 0.1), 2).tolist())

#: Candidates compared by inner cross-validation in :func:`fit_forest`: (loss, min_samples_leaf, trend).
#: The model's own ARE-optimal forecast wins where the model holds (simulated cascades: a forest on
#: top of it only adds noise); forests around a regression trend or the count's trend compete where
#: it does not (real cascades).
CANDIDATES: tuple[tuple[str, int, str], ...] = (
    ("none", 1, "base"), ("are", 3, "regression"), ("are", 10, "regression"), ("log", 3, "regression"),
    ("none", 1, "count"), ("are", 10, "count"),
)


def fit_forest(
    X: np.ndarray,
    n_true: np.ndarray,
    *,
    candidates: tuple[tuple[str, int, str], ...] = CANDIDATES,
    cv: int = 5,
    n_estimators: int = 100,
    random_state: int | None = 0,
    select_max: int | None = None,
    select_trees: int | None = None,
    mark_law: MarkLaw = COURSE_MARKS,
) -> OmegaForest:
    """Fit the correction on ``X`` (:func:`estimators.forecast.correction_features`, shape (n, 7)) and true final
    sizes (shape (n,)).

    Each candidate ``(loss, min_samples_leaf, trend)`` is scored by the mean ARE of an
    inner ``cv``-fold cross-validation on these samples; the best one is refitted on all
    of them and returned, with the scores in ``cv_are_`` (``"loss/leaf/trend"`` -> mean ARE).
    ``select_max`` bounds the cost of the selection: it then runs on a random subset of
    at most that many samples (the final fit still uses them all), and ``select_trees``
    with forests of that many trees, at most ``n_estimators`` (which the final fit has). Samples with
    ``G1 <= 0`` or ``n_star >= 1`` carry no information on omega and are left out.
    ``mark_law``: the marks' law, for the ``"base"`` trend.
    """
    X = check_X(X)
    n_true = np.asarray(n_true, dtype=np.float64)
    if X.shape[0] != n_true.shape[0]:
        raise ValueError("X and n_true must have the same number of samples")
    if not np.isfinite(X[:, :4]).all() or np.isinf(X[:, 4:]).any():
        raise ValueError("X must be finite (NaN allowed only in the series' statistics)")
    if not candidates:
        raise ValueError("at least one candidate is needed")
    keep = (X[:, 2] > 0) & (X[:, 1] < 1)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 samples with G1 > 0 and n_star < 1 to fit a forest, got {int(keep.sum())}")
    X, n_true = X[keep], n_true[keep]
    n_obs = X[:, 3]
    y = omega_target(n_true, n_obs, X[:, 1], X[:, 2])
    w = are_weights(n_true, n_obs, X[:, 1], X[:, 2])
    kw = {"n_estimators": n_estimators, "random_state": random_state, "mark_law": mark_law}
    scores: dict[tuple[str, int, str], float] = {}
    if len(candidates) > 1 and X.shape[0] >= 2 * cv:
        sub = np.arange(X.shape[0])
        if select_max is not None and sub.size > select_max:
            sub = np.random.default_rng(random_state).choice(sub, size=select_max, replace=False)
        Xs, ys, ws = X[sub], y[sub], w[sub]
        kw_cv = {**kw, "n_estimators": min(select_trees or n_estimators, n_estimators)}
        folds = list(KFold(n_splits=cv, shuffle=True, random_state=random_state).split(Xs))
        err = {c: np.empty(Xs.shape[0]) for c in candidates}
        for train, test in folds:
            # each trend is fitted and evaluated once per fold, for all the candidates around it
            for trend in dict.fromkeys(c[2] for c in candidates):
                around = [c for c in candidates if c[2] == trend]
                base = OmegaForest("none", 1, trend=trend, **kw_cv)
                base._fit_trend(Xs[train], ys[train])
                on_train = base._trend(Xs[train]) if any(c[0] != "none" for c in around) else None
                on_test = base._trend(Xs[test])
                for loss, leaf, _ in around:
                    model = copy.copy(base).set_params(loss=loss, min_samples_leaf=leaf)  # the fitted trend kept
                    model._fit_forest(Xs[train], ys[train], ws[train], on_train)
                    pred = model._predict(Xs[test], on_test)
                    err[(loss, leaf, trend)][test] = np.abs(np.maximum(pred, 0.0) - ys[test]) * ws[test]
        scores = {c: float(e.mean()) for c, e in err.items()}
        best = min(scores, key=scores.__getitem__)
    else:
        best = candidates[0]
    loss, leaf, trend = best
    model = OmegaForest(loss, leaf, trend=trend, **kw).fit(X, y, w)
    model.cv_are_ = {"/".join(map(str, c)): v for c, v in scores.items()}
    return model


def predict_omega(forest: OmegaForest, X: np.ndarray) -> np.ndarray:
    """Correction factors for ``X`` (shape (n, 7)); shape (n,), clipped at 0 (a :class:`CompiledOmega` too)."""
    if not isinstance(forest, CompiledOmega):
        check_is_fitted(forest)
    return _predict_omega(forest, X)
