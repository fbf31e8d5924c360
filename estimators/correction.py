"""Random-forest correction of the Hawkes forecast (one forest per observation window).

The Hawkes forecast ``N = n_obs + G1 / (1 - n_star)`` is corrected by a factor
``omega``: ``N = n_obs + omega * G1 / (1 - n_star)``. For a cascade whose true
final size ``N_true`` is known, the factor that would have been exact is

    omega = (N_true - n_obs) * (1 - n_star) / G1                       (the learner's target)

and the forest learns it from the features ``X = [beta, n_star, G1]``.

The correction minimises the ARE, not the squared error: the ARE of a corrected
forecast is ``|omega_hat - omega| * c / N_true`` with ``c = G1 / (1 - n_star)``,
so absolute-error trees with sample weights ``c / N_true`` split and predict (a
weighted median per leaf) exactly by the ARE of the training cascades. A
squared-error forest on omega would forecast a mean, which the heavy right tail
of cascade sizes drags far above the ARE-optimal point.

:class:`OmegaForest` adds a log-linear trend under the forest (omega moves
roughly as a power of the features, a slope that trees only follow with many
cascades), and :func:`fit_forest` picks the forest's loss and leaf size by an
inner cross-validation of the mean ARE, since what works with 40 training
cascades (small leaves, log loss) is not what works with 800.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import QuantileRegressor
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

__all__ = ["omega_target", "are_weights", "OmegaForest", "CANDIDATES", "fit_forest", "predict_omega", "corrected_size"]


def _arrays(*xs: object) -> list[np.ndarray]:
    arrs = [np.asarray(x, dtype=np.float64) for x in xs]
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    return [np.broadcast_to(a, shape) for a in arrs]


def omega_target(n_true: object, n_obs: object, n_star: object, G1: object) -> np.ndarray:
    """The exact correction ``(N_true - n_obs)(1 - n_star)/G1``; 0 where ``G1 == 0``. Shape of the inputs."""
    n_true, n_obs, n_star, G1 = _arrays(n_true, n_obs, n_star, G1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (n_true - n_obs) * (1.0 - n_star) / G1
    return np.where(G1 > 0, w, 0.0)


def are_weights(n_true: object, n_obs: object, n_star: object, G1: object) -> np.ndarray:
    """Sample weights ``G1 / ((1 - n_star) N_true)`` that turn absolute errors on omega into AREs."""
    n_true, n_obs, n_star, G1 = _arrays(n_true, n_obs, n_star, G1)
    return G1 / ((1.0 - n_star) * n_true)


class OmegaForest(RegressorMixin, BaseEstimator):
    """Regression-enhanced random forest predicting the correction ``omega`` from ``X = [beta, n_star, G1]``.

    Two parts (Zhang & Lu, "Regression-enhanced random forests", 2019):

    1. a trend, the linear median regression of ``log omega`` on
       ``log X``: omega moves smoothly, roughly as a power of the features, and
       piecewise-constant trees need many cascades to follow such a slope;
    2. a random forest on the ratio of omega to that trend. ``loss="are"``:
       absolute-error trees fitted with the ARE weights (:func:`are_weights`), so
       splits and leaf values (weighted medians) minimise the ARE of the training
       cascades. ``loss="log"``: squared-error trees on the log of the ratio, a
       geometric mean, steadier when a handful of cascades dominate the weights.

    The prediction is trend times forest. ``fit(X, omega, sample_weight)`` follows
    the scikit-learn contract; learnt state ends in ``_``.
    """

    def __init__(self, loss: str = "are", min_samples_leaf: int = 5, n_estimators: int = 100,
                 random_state: int | None = 0, n_jobs: int | None = None):
        self.loss = loss
        self.min_samples_leaf = min_samples_leaf
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> OmegaForest:
        """Fit on features ``X`` (shape (n, 3)), targets ``omega`` (n,) and ARE weights (n,)."""
        X = np.asarray(X, dtype=np.float64)
        logy = np.log(np.maximum(np.asarray(y, dtype=np.float64), OMEGA_FLOOR))
        logx = _log_features(X)
        self.trend_ = QuantileRegressor(quantile=0.5, alpha=0.0, solver="highs").fit(logx, logy)
        trend = self.trend_.predict(logx)
        resid = logy - trend
        if self.loss == "are":
            # |omega_hat - omega| w = |r_hat - r| * trend * w for the ratio r = omega / trend
            w = np.ones_like(trend) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
            self.forest_ = RandomForestRegressor(
                n_estimators=self.n_estimators, criterion="absolute_error", min_samples_leaf=self.min_samples_leaf,
                random_state=self.random_state, n_jobs=self.n_jobs,
            ).fit(X, np.exp(resid), sample_weight=w * np.exp(trend))
        elif self.loss == "log":
            self.forest_ = RandomForestRegressor(
                n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
                random_state=self.random_state, n_jobs=self.n_jobs,
            ).fit(X, resid)
        else:
            raise ValueError(f"loss must be 'are' or 'log', got {self.loss!r}")
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Correction factors, shape (n,)."""
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64)
        ratio = self.forest_.predict(X)
        if self.loss == "log":
            ratio = np.exp(ratio)
        return ratio * np.exp(self.trend_.predict(_log_features(X)))


def _log_features(X: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(X, 1e-300))


#: omega below this is clipped before taking logs (no growth at all gives omega = 0).
OMEGA_FLOOR = 1e-3

#: Candidate forests compared by inner cross-validation in :func:`fit_forest`: (loss, min_samples_leaf).
CANDIDATES: tuple[tuple[str, int], ...] = (("are", 1), ("are", 3), ("are", 10), ("log", 1), ("log", 3), ("log", 10))


def fit_forest(
    X: np.ndarray,
    n_true: np.ndarray,
    n_obs: np.ndarray,
    *,
    candidates: tuple[tuple[str, int], ...] = CANDIDATES,
    cv: int = 5,
    n_estimators: int = 100,
    random_state: int | None = 0,
    select_max: int | None = None,
) -> OmegaForest:
    """Fit the correction on features ``X = [beta, n_star, G1]`` (shape (n, 3)) and true sizes (shape (n,)).

    Each candidate ``(loss, min_samples_leaf)`` is scored by the mean ARE of an
    inner ``cv``-fold cross-validation on these samples; the best one is refitted
    on all of them and returned, with the scores in ``cv_are_`` (``"loss/leaf"`` -> mean ARE).
    ``select_max`` bounds the cost of the selection: it then runs on a random subset of
    at most that many samples (the final fit still uses them all). Samples with
    ``G1 <= 0`` or ``n_star >= 1`` carry no information on omega and are left out.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 3:
        raise ValueError(f"X must have shape (n, 3) = [beta, n_star, G1], got {X.shape}")
    n_true = np.asarray(n_true, dtype=np.float64)
    n_obs = np.asarray(n_obs, dtype=np.float64)
    if not (X.shape[0] == n_true.shape[0] == n_obs.shape[0]):
        raise ValueError("X, n_true and n_obs must have the same number of samples")
    if not np.isfinite(X).all():
        raise ValueError("X must be finite")
    if not candidates:
        raise ValueError("at least one candidate forest is needed")
    keep = (X[:, 2] > 0) & (X[:, 1] < 1)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 samples with G1 > 0 and n_star < 1 to fit a forest, got {int(keep.sum())}")
    X, n_true, n_obs = X[keep], n_true[keep], n_obs[keep]
    y = omega_target(n_true, n_obs, X[:, 1], X[:, 2])
    w = are_weights(n_true, n_obs, X[:, 1], X[:, 2])
    scores: dict[tuple[str, int], float] = {}
    if len(candidates) > 1 and X.shape[0] >= 2 * cv:
        sub = np.arange(X.shape[0])
        if select_max is not None and sub.size > select_max:
            sub = np.random.default_rng(random_state).choice(sub, size=select_max, replace=False)
        Xs, ys, ws = X[sub], y[sub], w[sub]
        folds = list(KFold(n_splits=cv, shuffle=True, random_state=random_state).split(Xs))
        for cand in candidates:
            err = np.empty(Xs.shape[0])
            for train, test in folds:
                model = OmegaForest(*cand, n_estimators=n_estimators, random_state=random_state)
                model.fit(Xs[train], ys[train], ws[train])
                err[test] = np.abs(np.maximum(model.predict(Xs[test]), 0.0) - ys[test]) * ws[test]
            scores[cand] = float(err.mean())
        best = min(scores, key=scores.__getitem__)
    else:
        best = candidates[0]
    model = OmegaForest(*best, n_estimators=n_estimators, random_state=random_state).fit(X, y, w)
    model.cv_are_ = {f"{loss}/{leaf}": v for (loss, leaf), v in scores.items()}
    return model


def predict_omega(forest: OmegaForest, X: np.ndarray) -> np.ndarray:
    """Correction factors for features ``X`` (shape (n, 3)); shape (n,), clipped at 0."""
    check_is_fitted(forest)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.maximum(forest.predict(X), 0.0)


def corrected_size(n_obs: object, G1: object, n_star: object, omega: object) -> np.ndarray:
    """``n_obs + omega * G1 / (1 - n_star)``, element-wise."""
    n_obs, G1, n_star, omega = _arrays(n_obs, G1, n_star, omega)
    return n_obs + omega * G1 / (1.0 - n_star)
