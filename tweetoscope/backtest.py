"""``tweetoscope backtest``: per-window accuracy of every predictor on a dataset of complete cascades.

For each observation window ``T`` the cascades with at least
``settings.min_cascade_size`` events before ``T`` are scored (the same set for
every predictor). Each predictor forecasts the final size from the events
before ``T``; the report gives the median and mean ARE ``|N_hat - N| / N``, the
number of cascades and the seconds spent.

Predictors
    ``observed``   the size so far (no growth);
    ``hawkes``     MAP fit of the chosen kernel, ``omega = 1``;
    ``hawkes+rf``  the pipeline's default predictor, trained by K-fold cross-validation
                   across cascades (never on the cascade it predicts): MAP fit under
                   the empirical prior of the training cascades
                   (:func:`tweetoscope.estimator.empirical_prior`), then the learnt correction
                   (:func:`estimators.correction.fit_forest`: the model's ARE-optimal
                   forecast, corrected by a forest where that helps);
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

from estimators import ConvergenceWarning, LogNormalPrior, fit_cascade, pareto_mean
from estimators.correction import corrected_size, fit_forest, predict_omega
from estimators.metrics import are, msle_log2
from estimators.seismic import seismic_predict
from streams.datasets import Cascade, Dataset

from .collector import final_T_obs
from .config import Settings
from .estimator import complete_fit_kwargs, empirical_prior

__all__ = ["PREDICTORS", "Score", "WindowFits", "fit_window", "complete_fits", "cross_validated_forecasts", "backtest"]

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
    ``X`` (the correction's features ``[beta, n_star, G1, n_obs]``, shape (k, 4)),
    ``G1``, ``n_star``, ``hawkes`` (uncorrected forecasts) and the seconds the fits took.
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
    cascades: Sequence[Cascade], t_obs: float, settings: Settings, *, tick: Callable[[], None] | None = None,
    prior: LogNormalPrior | None = None, only: np.ndarray | None = None,
) -> WindowFits:
    """Fit every cascade with at least ``settings.min_cascade_size`` events before ``t_obs`` (seconds).

    ``prior`` replaces the settings' prior of the exponential kernel; ``only`` restricts
    the fits to these positions of ``cascades``.
    """
    kw = settings.fit_kwargs()
    if prior is not None and settings.kernel == "exp":
        kw["prior"] = prior
    index, rows = [], []
    start = time.perf_counter()
    positions = range(len(cascades)) if only is None else only.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in positions:
            c = cascades[i]
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
        t_obs=float(t_obs), index=np.array(index, dtype=np.int64), n_obs=r[:, 0], n_true=r[:, 1],
        X=np.column_stack([r[:, 2:5], r[:, 0]]), G1=r[:, 5], n_star=r[:, 6], hawkes=r[:, 7], seconds=seconds,
    )


def complete_fits(cascades: Sequence[Cascade], settings: Settings) -> np.ndarray:
    """Maximum-likelihood ``(p, beta)`` of each complete cascade, shape (n, 2); NaN for those too small to fit.

    Each cascade is fitted whole, as the pipeline's estimator fits the collector's final
    series: observed until ``terminated`` seconds after its last event (exponential kernel).
    """
    out = np.full((len(cascades), 2), np.nan)
    kw = complete_fit_kwargs(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, c in enumerate(cascades):
            if c.size >= max(settings.min_cascade_size, 2):
                f = fit_cascade(c.times, c.marks, final_T_obs(float(c.times[-1]), settings.terminated), **kw)
                out[i] = f.p, f.beta
    return out


def cross_validated_forecasts(
    fits: WindowFits, settings: Settings, cascades: Sequence[Cascade] | None = None, full: np.ndarray | None = None,
) -> np.ndarray:
    """Forecasts of ``hawkes+rf``, each from a model that never saw its cascade (K-fold). Shape (k,).

    With ``cascades`` and their :func:`complete_fits` ``full`` (exponential kernel), each
    fold first learns the empirical prior of its training cascades and refits every
    cascade of the window under it; without them, the fits in ``fits`` are used as they are.
    """
    k = fits.index.size
    folds = min(settings.cv_folds, k)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 cascades at T_obs={fits.t_obs:g}, got {k}")
    out = np.empty(k)
    kfold = KFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    refit = cascades is not None and full is not None and settings.kernel == "exp" and settings.empirical_prior
    for train, test in kfold.split(fits.X):
        f = fits
        if refit:
            pos = fits.index[train]
            prior = empirical_prior(full[pos, 0], full[pos, 1], fits.n_true[train], settings)
            f = fit_window(cascades, fits.t_obs, settings, prior=prior, only=fits.index)
        model = fit_forest(f.X[train], f.n_true[train], n_estimators=settings.forest_trees,
                           random_state=settings.seed, alpha=settings.alpha, mu=settings.mu)
        omega = predict_omega(model, f.X[test])
        out[test] = corrected_size(f.n_obs[test], f.G1[test], f.n_star[test], omega)
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
    full = complete_fits(cascades, settings) if settings.kernel == "exp" and settings.empirical_prior else None
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
                rf = cross_validated_forecasts(fits, settings, cascades, full)
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
