"""``tweetoscope backtest``: per-window accuracy of every predictor on a dataset of complete cascades.

For each observation window ``T`` the cascades with at least
``settings.min_cascade_size`` events before ``T`` are scored (the same set for
every predictor). Each predictor forecasts the final size from the events
before ``T``; the report gives the median and mean ARE ``|N_hat - N| / N``, the
number of cascades and the seconds spent.

Predictors
    ``observed``   the size so far (no growth);
    ``hawkes``     MAP fit of the chosen kernel, ``omega = 1``;
    ``hawkes+rf``  the same fit corrected by the ARE-minimising forest, trained by
                   K-fold cross-validation across cascades (never on the cascade it
                   predicts);
    ``seismic``    SEISMIC (Zhao et al., KDD 2015);
    ``oracle``     the exponential-kernel forecast with the true parameters, when the
                   dataset carries its ``truth.jsonl``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import KFold

from estimators import ConvergenceWarning, fit_cascade, pareto_mean
from estimators.correction import corrected_size, fit_forest, predict_omega
from estimators.metrics import are, msle_log2
from estimators.seismic import seismic_predict
from streams.datasets import Cascade, Dataset

from .config import Settings

__all__ = ["PREDICTORS", "Score", "WindowFits", "fit_window", "cross_validated_forecasts", "backtest"]

PREDICTORS = ("observed", "hawkes", "hawkes+rf", "seismic", "oracle")


@dataclass(frozen=True, slots=True)
class Score:
    """Accuracy of one predictor at one window.

    ``mean_are`` and ``msle_log2`` are ``None`` when a forecast was infinite, ``median_are``
    when more than half were (JSON has no infinity); ``n_infinite`` counts them.
    """

    median_are: float | None
    mean_are: float | None
    n: int
    seconds: float
    n_infinite: int
    msle_log2: float | None

    @classmethod
    def of(cls, forecasts: np.ndarray, truth: np.ndarray, seconds: float) -> Score:
        if np.isnan(forecasts).any():
            raise FloatingPointError("a predictor returned a NaN forecast")
        errors = are(forecasts, truth)
        finite = np.isfinite(errors)
        mean = float(errors.mean()) if finite.all() else None
        return cls(
            median_are=float(med) if np.isfinite(med := np.median(errors)) else None,
            mean_are=mean,
            n=int(errors.size),
            seconds=round(float(seconds), 4),
            n_infinite=int((~finite).sum()),
            msle_log2=msle_log2(forecasts, truth) if finite.all() else None,
        )


@dataclass(frozen=True, slots=True)
class WindowFits:
    """Hawkes fits of the scored cascades at one window.

    ``index`` (positions in the dataset, shape (k,)), ``n_obs``, ``n_true``,
    ``X`` (forest features, shape (k, 3)), ``G1``, ``n_star``, ``hawkes``
    (uncorrected forecasts) and the seconds the fits took.
    """

    t_obs: float
    index: np.ndarray
    n_obs: np.ndarray
    n_true: np.ndarray
    X: np.ndarray
    G1: np.ndarray
    n_star: np.ndarray
    hawkes: np.ndarray
    seconds: float


def _n_obs(c: Cascade, t_obs: float) -> int:
    return int(np.searchsorted(c.times, t_obs, side="left"))


def fit_window(
    cascades: Sequence[Cascade], t_obs: float, settings: Settings, *, tick: Callable[[], None] | None = None
) -> WindowFits:
    """Fit every cascade with at least ``settings.min_cascade_size`` events before ``t_obs`` (seconds)."""
    kw = settings.fit_kwargs()
    index, rows = [], []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, c in enumerate(cascades):
            if tick is not None:
                tick()
            if _n_obs(c, t_obs) < settings.min_cascade_size:
                continue
            f = fit_cascade(c.times, c.marks, t_obs, **kw)
            index.append(i)
            rows.append((f.n_obs, c.size, *f.features, f.G1, f.n_star, f.final_size))
    seconds = time.perf_counter() - start
    r = np.array(rows, dtype=np.float64).reshape(-1, 8)
    return WindowFits(
        t_obs=float(t_obs), index=np.array(index, dtype=np.int64), n_obs=r[:, 0], n_true=r[:, 1], X=r[:, 2:5],
        G1=r[:, 5], n_star=r[:, 6], hawkes=r[:, 7], seconds=seconds,
    )


def cross_validated_forecasts(fits: WindowFits, settings: Settings) -> np.ndarray:
    """Forest-corrected forecasts, each from a forest that never saw its cascade (K-fold). Shape (k,)."""
    k = fits.index.size
    folds = min(settings.cv_folds, k)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 cascades at T_obs={fits.t_obs:g}, got {k}")
    out = np.empty(k)
    kfold = KFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    for train, test in kfold.split(fits.X):
        forest = fit_forest(fits.X[train], fits.n_true[train], fits.n_obs[train],
                            n_estimators=settings.forest_trees, random_state=settings.seed)
        omega = predict_omega(forest, fits.X[test])
        out[test] = corrected_size(fits.n_obs[test], fits.G1[test], fits.n_star[test], omega)
    return out


def _oracle(c: Cascade, truth: dict, t_obs: float) -> float:
    n = _n_obs(c, t_obs)
    p, beta = float(truth["p"]), float(truth["beta"])
    n_star = p * pareto_mean(float(truth["alpha"]), float(truth["mu"]))
    G1 = p * float(np.sum(c.marks[:n] * np.exp(-beta * (t_obs - c.times[:n]))))
    return n + G1 / (1.0 - n_star) if n_star < 1 else math.inf


def backtest(dataset: Dataset, settings: Settings, *, progress: bool = False) -> dict:
    """Score every predictor at every window of ``settings.windows`` on ``dataset``.

    Returns ``{"data", "cascades", "kernel", "windows": {"600": {predictor: Score fields}}}``
    with non-finite means reported as ``None``.
    """
    cascades = dataset.cascades
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(settings.windows) * len(cascades) * 2, desc="backtest", unit="fit", leave=False)
    tick = bar.update if bar is not None else None
    report: dict = {"data": dataset.path, "cascades": len(cascades), "kernel": settings.kernel, "windows": {}}
    try:
        for t_obs in settings.windows:
            fits = fit_window(cascades, t_obs, settings, tick=tick)
            if fits.index.size == 0:
                report["windows"][str(t_obs)] = {}
                if bar is not None:
                    bar.update(len(cascades))
                continue
            truth = fits.n_true
            scores: dict[str, Score] = {}
            scores["observed"] = Score.of(fits.n_obs, truth, 0.0)
            scores["hawkes"] = Score.of(fits.hawkes, truth, fits.seconds)
            if fits.index.size >= 2:
                start = time.perf_counter()
                rf = cross_validated_forecasts(fits, settings)
                scores["hawkes+rf"] = Score.of(rf, truth, fits.seconds + time.perf_counter() - start)
            start = time.perf_counter()
            seismic = np.empty(fits.index.size)
            for j, i in enumerate(fits.index):
                c = cascades[i]
                seismic[j] = seismic_predict(c.times, c.marks, t_obs, n_star=settings.seismic_n_star).final_size
                if tick is not None:
                    tick()
            scores["seismic"] = Score.of(seismic, truth, time.perf_counter() - start)
            if bar is not None:
                bar.update(len(cascades) - fits.index.size)
            if dataset.truth is not None:
                start = time.perf_counter()
                oracle = np.array([_oracle(cascades[i], dataset.truth[i], t_obs) for i in fits.index])
                scores["oracle"] = Score.of(oracle, truth, time.perf_counter() - start)
            report["windows"][str(t_obs)] = {k: asdict(v) for k, v in scores.items()}
    finally:
        if bar is not None:
            bar.close()
    return report
