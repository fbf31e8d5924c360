"""A fitted correction (:class:`estimators.correction.OmegaForest`) as plain arrays, to predict without scikit-learn.

:class:`CompiledOmega` predicts exactly what the forest it was made from predicts
(:meth:`estimators.correction.OmegaForest.compile`), bit for bit: its trees are walked as
scikit-learn walks them (features cast to float32, NaN routed where the split sent the
training's missing values, the trees' values summed in order then divided by their count),
and its trend is computed by the same functions. It holds numpy arrays and a
:class:`estimators.marks.MarkLaw` only, so a process that receives one (the predictor, in
the pipeline's process) never imports scikit-learn: 0.5 s of start-up (``import sklearn``
with scipy.stats), and a prediction takes tens of microseconds instead of a few
milliseconds of scikit-learn's per-tree checks.

The trend and the combination of trend and forest live here, shared with the forest itself.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .forecast import FEATURE_NAMES, omega_target
from .marks import MarkLaw
from .predictive import are_optimal_omega

__all__ = ["CompiledOmega", "FlatForest", "predict_omega", "OMEGA_FLOOR", "TRENDS", "check_X", "trend_log",
           "combine"]

#: omega below this is clipped before taking logs (no growth at all gives omega = 0).
OMEGA_FLOOR = 1e-3

#: The trends of a correction (see :class:`estimators.correction.OmegaForest`).
TRENDS = ("base", "regression", "count")


def check_X(X: np.ndarray) -> np.ndarray:
    """``X`` as a float64 array of shape (n, 7) (:data:`estimators.forecast.FEATURE_NAMES`), else ValueError."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"X must have shape (n, {len(FEATURE_NAMES)}) = {list(FEATURE_NAMES)}, got {X.shape}")
    return X


def log_features(X: np.ndarray) -> np.ndarray:
    """The log of ``X`` (shape (n, k)), floored at 1e-300: the regression trend's inputs."""
    return np.log(np.maximum(X, 1e-300))


def trend_log(trend: str, X: np.ndarray, *, mark_law: MarkLaw, min_size: float,
              count: tuple[float, float] | None = None,
              linear: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Log of the trend ``trend`` on checked ``X`` (shape (n, 7)), shape (n,).

    ``"base"``: the ARE-optimal omega under ``mark_law`` given ``N >= min_size``; ``"count"``: the
    omega of the size ``a n_obs**b``, ``count = (a, b)``; ``"regression"``: ``log X[:, :3] @ coef +
    intercept``, ``linear = (coef, intercept)`` (as scikit-learn's linear models predict)."""
    if trend == "base":
        base = are_optimal_omega(X[:, 3], X[:, 1], X[:, 2], mark_law=mark_law, min_size=min_size)
        return np.log(np.maximum(base, OMEGA_FLOOR))
    if trend == "count":
        a, b = count
        return np.log(np.maximum(omega_target(a * X[:, 3] ** b, X[:, 3], X[:, 1], X[:, 2]), OMEGA_FLOOR))
    coef, intercept = linear
    return log_features(X[:, :3]) @ coef + intercept


def combine(loss: str, trend: np.ndarray, forest: np.ndarray | None) -> np.ndarray:
    """The correction from the log of the trend (n,) and the forest's mean prediction (n,; None with
    ``loss="none"``): the trend times the forest's ratio (``loss="are"``) or its exponential (``"log"``)."""
    trend = np.exp(trend)
    if loss == "none":
        return trend
    if loss == "log":
        forest = np.exp(forest)
    return forest * trend


class FlatForest:
    """The trees of a fitted scikit-learn forest regressor as flat node arrays (all trees one after
    the other; ``roots[t]`` the first node of tree ``t``; child indices are flat, -1 at leaves).

    :meth:`predict` is the forest's ``predict``: the mean of the trees' leaf values, X cast to float32."""

    def __init__(self, estimators: list) -> None:
        trees = [e.tree_ for e in estimators]
        sizes = [t.node_count for t in trees]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.roots = starts
        self.left = np.concatenate([np.where(t.children_left >= 0, t.children_left + s, -1)
                                    for t, s in zip(trees, starts)]).astype(np.int32)
        self.right = np.concatenate([np.where(t.children_right >= 0, t.children_right + s, -1)
                                     for t, s in zip(trees, starts)]).astype(np.int32)
        self.feature = np.concatenate([t.feature for t in trees]).astype(np.int32)
        self.threshold = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        self.missing_left = np.concatenate([t.missing_go_to_left for t in trees]).astype(np.bool_)
        self.value = np.concatenate([t.value[:, 0, 0] for t in trees]).astype(np.float64)
        self.n_features = int(estimators[0].n_features_in_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Mean prediction of the trees for float64 ``X`` (shape (n, n_features)), shape (n,)."""
        with np.errstate(over="ignore"):  # beyond float32: inf, refused below
            X32 = np.ascontiguousarray(X, dtype=np.float32)
        if X32.ndim != 2 or X32.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the forest expects (n, {self.n_features})")
        if np.isinf(X32).any():  # as scikit-learn refuses it
            raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
        return _forest_mean(X32, self.roots, self.left, self.right, self.feature, self.threshold,
                            self.missing_left, self.value)


@njit(cache=True)
def _forest_mean(X, roots, left, right, feature, threshold, missing_left, value):  # pragma: no cover  (compiled)
    """Sum over the trees, in order, of each row's leaf value, divided by the number of trees (as
    scikit-learn accumulates them): shape (n,). A float32 feature compares with the float64 threshold."""
    n = X.shape[0]
    out = np.zeros(n)
    for t in range(roots.size):
        for i in range(n):
            node = roots[t]
            while left[node] != -1:
                x = X[i, feature[node]]
                if np.isnan(x):
                    node = left[node] if missing_left[node] else right[node]
                elif x <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            out[i] += value[node]
    out /= roots.size
    return out


class CompiledOmega:
    """A fitted :class:`estimators.correction.OmegaForest` in plain arrays: :meth:`predict` gives the
    same corrections, shape (n,), for ``X`` of shape (n, 7). Made by ``OmegaForest.compile()``."""

    def __init__(self, loss: str, trend: str, mark_law: MarkLaw, min_size: float,
                 count: tuple[float, float] | None, linear: tuple[np.ndarray, float] | None,
                 forest: FlatForest | None) -> None:
        self.loss = loss
        self.trend = trend
        self.mark_law = mark_law
        self.min_size = min_size
        self.count = count
        self.linear = linear
        self.forest = forest

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Correction factors for ``X`` (shape (n, 7)), shape (n,)."""
        X = check_X(X)
        trend = trend_log(self.trend, X, mark_law=self.mark_law, min_size=self.min_size, count=self.count,
                          linear=self.linear)
        return combine(self.loss, trend, None if self.forest is None else self.forest.predict(X))

    def __repr__(self) -> str:
        trees = 0 if self.forest is None else self.forest.roots.size
        return f"CompiledOmega(loss={self.loss!r}, trend={self.trend!r}, trees={trees})"


def predict_omega(model, X: np.ndarray) -> np.ndarray:
    """Correction factors of ``model`` (anything with ``predict``: a :class:`CompiledOmega`, an
    ``OmegaForest``) for ``X`` (shape (n, 7)); shape (n,), clipped at 0."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.maximum(model.predict(X), 0.0)
