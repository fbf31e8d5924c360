"""Random-forest correction of the Hawkes forecast (one forest per observation window).

The Hawkes forecast ``N = n_obs + G1 / (1 - n_star)`` is corrected by a factor
``omega``: ``N = n_obs + omega * G1 / (1 - n_star)``. For a cascade whose true
final size ``N_true`` is known, the factor that would have been exact is

    omega = (N_true - n_obs) * (1 - n_star) / G1                       (the learner's target)

and the forest learns it from the features ``X = [beta, n_star, G1]``.

The forest minimises the ARE, not the squared error: the ARE of a corrected
forecast is ``|omega_hat - omega| * c / N_true`` with ``c = G1 / (1 - n_star)``,
so a regression tree with the absolute-error criterion and sample weights
``c / N_true`` splits and predicts (a weighted median per leaf) exactly by the
ARE of the training cascades. A squared-error forest would forecast a mean,
which the heavy right tail of cascade sizes drags far above the ARE-optimal point.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.utils.validation import check_is_fitted

__all__ = ["omega_target", "are_weights", "make_forest", "fit_forest", "predict_omega", "corrected_size"]


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


def make_forest(
    *, n_estimators: int = 100, min_samples_leaf: int = 5, max_features: float = 1.0, random_state: int | None = 0,
    n_jobs: int | None = None,
) -> RandomForestRegressor:
    """An unfitted ARE-minimising forest (absolute-error criterion, to be fitted with :func:`are_weights`)."""
    return RandomForestRegressor(
        n_estimators=n_estimators,
        criterion="absolute_error",
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        random_state=random_state,
        n_jobs=n_jobs,
    )


def fit_forest(
    X: np.ndarray, n_true: np.ndarray, n_obs: np.ndarray, *, forest: RandomForestRegressor | None = None
) -> RandomForestRegressor:
    """Fit a forest on features ``X = [beta, n_star, G1]`` (shape (n, 3)) and true sizes (shape (n,)).

    Samples with ``G1 <= 0`` carry no information on omega and are left out.
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
    keep = (X[:, 2] > 0) & (X[:, 1] < 1)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 samples with G1 > 0 and n_star < 1 to fit a forest, got {int(keep.sum())}")
    X, n_true, n_obs = X[keep], n_true[keep], n_obs[keep]
    y = omega_target(n_true, n_obs, X[:, 1], X[:, 2])
    w = are_weights(n_true, n_obs, X[:, 1], X[:, 2])
    forest = make_forest() if forest is None else forest
    return forest.fit(X, y, sample_weight=w)


def predict_omega(forest: RandomForestRegressor, X: np.ndarray) -> np.ndarray:
    """Correction factors for features ``X`` (shape (n, 3)); shape (n,), clipped at 0."""
    check_is_fitted(forest)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.maximum(forest.predict(X), 0.0)


def corrected_size(n_obs: object, G1: object, n_star: object, omega: object) -> np.ndarray:
    """``n_obs + omega * G1 / (1 - n_star)``, element-wise."""
    n_obs, G1, n_star, omega = _arrays(n_obs, G1, n_star, omega)
    return n_obs + omega * G1 / (1.0 - n_star)
