"""``tweetoscope backtest``: per-window accuracy of every predictor on a dataset of complete cascades.

For each observation window ``T`` the cascades with at least
``settings.min_cascade_size`` events before ``T`` are scored (the same set for
every predictor). Each predictor forecasts the final size from the events
before ``T``; the report gives the median and mean ARE ``|N_hat - N| / N``, the
number of cascades and the seconds spent.

Besides the ARE, each predictor's forecasts are ranked against the true sizes
(Spearman rho, Kendall tau, top-decile share): on a set selected by size a constant
forecast has a small ARE, but it cannot rank. With several seeds every figure is the
mean over seeds, with its spread.

Predictors
    ``observed``   the size so far (no growth);
    ``constant``   one size for every cascade: the one with the least median ARE on the
                   training cascades (same folds as ``hawkes+rf``), the floor that a
                   forecast must beat to carry information on the cascade;
    ``hawkes``     MAP fit of the chosen kernel, ``omega = 1``;
    ``hawkes+rf``  the pipeline's default predictor, trained by K-fold cross-validation
                   across cascades (never on the cascade it predicts): MAP fit under
                   the empirical prior of the training cascades
                   (:func:`tweetoscope.estimator.empirical_prior`), then the learnt correction
                   (:func:`tweetoscope.models.fit_correction`, as the learner: the model's ARE-optimal
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
from dataclasses import dataclass, replace
from typing import IO

import numpy as np
import orjson
from sklearn.model_selection import KFold, TimeSeriesSplit

from estimators import ConvergenceWarning, LogNormalPrior, MarkLaw, fit_cascade, pareto_mean
from estimators.correction import predict_omega
from estimators.forecast import correction_features, forecast_size, message_params, series_features
from estimators.metrics import are, best_constant, kendall, msle_log2, spearman, top_share
from estimators.seismic import seismic_predict
from streams.datasets import Cascade, Dataset

from .collector import final_T_obs
from .config import Settings
from .estimator import complete_fit_kwargs, empirical_prior
from .models import fit_correction, learn_mark_law

__all__ = ["PREDICTORS", "Score", "WindowFits", "fit_window", "complete_fits", "splits", "cross_validated_forecasts",
           "constant_forecasts", "summarise", "backtest"]

PREDICTORS = ("observed", "hawkes", "constant", "hawkes+rf", "seismic", "oracle")


@dataclass(frozen=True, slots=True)
class Score:
    """Accuracy of one predictor at one window.

    ``mean_are`` and ``msle_log2`` are ``None`` when a forecast was infinite, ``median_are``
    when more than half were (JSON has no infinity); ``n_infinite`` counts them.
    ``spearman``, ``kendall``: rank correlations with the true sizes; ``top_decile``: of the
    10 % largest forecasts, the share among the 10 % largest true sizes
    (:mod:`estimators.metrics`); ``None`` for constant forecasts.
    """

    median_are: float | None
    mean_are: float | None
    n: int
    seconds: float
    n_infinite: int
    msle_log2: float | None
    spearman: float | None
    kendall: float | None
    top_decile: float | None

    @classmethod
    def of(cls, forecasts: np.ndarray, truth: np.ndarray, seconds: float, ranks: bool = True) -> Score:
        """Score forecasts against true sizes (shape (k,) each); ``ranks=False`` leaves the rank
        metrics undefined (a constant per fold ranks the folds, not the cascades)."""
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
            spearman=spearman(forecasts, truth) if ranks else None,
            kendall=kendall(forecasts, truth) if ranks else None,
            top_decile=top_share(forecasts, truth, 0.1) if ranks else None,
        )


def summarise(scores: Sequence[Score]) -> dict:
    """One predictor's scores under several seeds: each field's mean over the seeds where it is
    defined (``None`` if it is undefined under any), and in ``"sd"`` its standard deviation."""
    out: dict = {}
    sd: dict = {}
    for name in Score.__slots__:
        values = [getattr(sc, name) for sc in scores]
        if any(v is None for v in values):
            out[name], sd[name] = None, None
            continue
        arr = np.asarray(values, dtype=np.float64)
        out[name] = int(arr[0]) if name in ("n", "n_infinite") and np.all(arr == arr[0]) else float(arr.mean())
        sd[name] = float(arr.std())
    out["seeds"] = len(scores)
    out["sd"] = sd
    return out


@dataclass(frozen=True, slots=True)
class WindowFits:
    """Hawkes fits of the scored cascades at one window.

    ``index`` (positions in the dataset, shape (k,)), ``n_obs``, ``n_true``,
    ``X`` (the correction's features, :func:`estimators.forecast.correction_features`, shape (k, 7)),
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
    prior: LogNormalPrior | None = None, only: np.ndarray | None = None, mark_law: MarkLaw | None = None,
) -> WindowFits:
    """Fit every cascade with at least ``settings.min_cascade_size`` events before ``t_obs`` (seconds).

    ``prior`` replaces the settings' prior of the exponential kernel, ``mark_law`` the settings'
    law of the marks; ``only`` restricts the fits to these positions of ``cascades``.
    """
    kw = settings.fit_kwargs()
    if mark_law is not None:
        kw["mark_law"] = mark_law
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
            rows.append((f.n_obs, c.size, *message_params(f), f.final_size, *series_features(c.times, c.marks, t_obs)))
    seconds = time.perf_counter() - start
    r = np.array(rows, dtype=np.float64).reshape(-1, 10)
    return WindowFits(
        t_obs=float(t_obs), index=np.array(index, dtype=np.int64), n_obs=r[:, 0], n_true=r[:, 1],
        X=correction_features(r[:, 2:6], r[:, 0], r[:, 7:10]), G1=r[:, 5], n_star=r[:, 4], hawkes=r[:, 6],
        seconds=seconds,
    )


def complete_fits(cascades: Sequence[Cascade], settings: Settings, mark_law: MarkLaw | None = None) -> np.ndarray:
    """Maximum-likelihood ``(p, beta)`` of each complete cascade, shape (n, 2); NaN for those too small to fit.

    Each cascade is fitted whole, as the pipeline's estimator fits the collector's final
    series: observed until ``terminated`` seconds after its last event (exponential kernel),
    under ``mark_law`` (default the settings').
    """
    out = np.full((len(cascades), 2), np.nan)
    kw = complete_fit_kwargs(settings)
    if mark_law is not None:
        kw["mark_law"] = mark_law
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, c in enumerate(cascades):
            if c.size >= max(settings.min_cascade_size, 2):
                f = fit_cascade(c.times, c.marks, final_T_obs(float(c.times[-1]), settings.terminated), **kw)
                out[i] = f.p, f.beta
    return out


def splits(fits: WindowFits, settings: Settings, split: str = "kfold",
           starts: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train and test positions (into the window's fits) of the cross-validation.

    ``"kfold"``: ``settings.cv_folds`` shuffled folds under ``settings.seed``; every cascade
    is tested once. ``"time"``: the cascades in order of ``starts`` (absolute start times,
    seconds, one per fit), cut in ``cv_folds + 1`` consecutive blocks; each block after the
    first is tested by a model trained on all the earlier ones (rolling origin), so the
    first block is never tested.
    """
    k = fits.index.size
    folds = min(settings.cv_folds, k)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 cascades at T_obs={fits.t_obs:g}, got {k}")
    if split == "kfold":
        return list(KFold(n_splits=folds, shuffle=True, random_state=settings.seed).split(fits.X))
    if split != "time":
        raise ValueError(f"split must be 'kfold' or 'time', got {split!r}")
    if starts is None or np.unique(starts).size < 2:
        raise ValueError("--split time needs the cascades' start times (RT*.txt headers or JSONL 'start')")
    order = np.argsort(starts, kind="stable")
    folds = min(folds, k - 1)
    return [(order[train], order[test]) for train, test in TimeSeriesSplit(n_splits=folds).split(order)]


def cross_validated_forecasts(
    fits: WindowFits, settings: Settings, cascades: Sequence[Cascade] | None = None, full: np.ndarray | None = None,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Forecasts of ``hawkes+rf``, each from a model that never saw its cascade. Shape (k,).

    ``folds`` (default: :func:`splits` K-fold) give the train and test positions; positions
    never tested are NaN. With ``cascades`` and their :func:`complete_fits` ``full``
    (exponential kernel), each fold first learns the empirical prior of its training
    cascades and refits the window's cascades under it; without them, the fits in ``fits``
    are used as they are. With ``settings.marks == "learnt"`` (and ``cascades``), each fold
    first learns the marks' law from its training cascades' marks
    (:func:`tweetoscope.models.learn_mark_law`) and fits, learns the prior and corrects under it.
    """
    out = np.full(fits.index.size, np.nan)
    learnt = cascades is not None and settings.marks == "learnt"
    refit = cascades is not None and full is not None and settings.kernel == "exp" and settings.empirical_prior
    for train, test in splits(fits, settings) if folds is None else folds:
        f, law, pos = fits, settings.mark_law, fits.index[train]
        if learnt:
            law = learn_mark_law(np.concatenate([cascades[i].marks for i in pos]), settings.mark_law)
        if refit or learnt:
            prior = None
            if refit:
                p_beta = complete_fits([cascades[i] for i in pos], settings, law) if learnt else full[pos]
                prior = empirical_prior(p_beta[:, 0], p_beta[:, 1], fits.n_true[train], settings, law)
            f = fit_window(cascades, fits.t_obs, settings, prior=prior, only=fits.index, mark_law=law)
        model = fit_correction(f.X[train], f.n_true[train], n_estimators=settings.forest_trees, seed=settings.seed,
                               mark_law=law)  # as the pipeline's learner does
        omega = predict_omega(model, f.X[test])
        out[test] = forecast_size(f.n_obs[test], f.G1[test], f.n_star[test], omega)
    return out


def constant_forecasts(fits: WindowFits, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Forecasts of ``constant``: per fold, the size with the least median ARE on the training
    cascades (:func:`estimators.metrics.best_constant`). Shape (k,); NaN where never tested."""
    out = np.full(fits.index.size, np.nan)
    for train, test in folds:
        out[test] = best_constant(fits.n_true[train])
    return out


def _oracle(c: Cascade, truth: dict, t_obs: float) -> float:
    n = _n_obs(c, t_obs)
    p, beta = float(truth["p"]), float(truth["beta"])
    n_star = p * pareto_mean(float(truth["alpha"]), float(truth["mu"]))
    G1 = p * float(np.sum(c.marks[:n] * np.exp(-beta * (t_obs - c.times[:n]))))
    return float(forecast_size(n, G1, n_star))


#: Predictors whose forecasts depend on the seed (folds and forests).
SEEDED = ("hawkes+rf", "constant")


def backtest(dataset: Dataset, settings: Settings, *, progress: bool = False, seeds: Sequence[int] | None = None,
             split: str = "kfold", per_cascade: IO[bytes] | None = None) -> dict:
    """Score every predictor at every window of ``settings.windows`` on ``dataset``.

    ``seeds`` (default ``[settings.seed]``): the cross-validation and the forests are run
    under each; every figure is reported as its mean over the seeds, with its standard
    deviation in ``"sd"`` (:func:`summarise`). ``split``: ``"kfold"`` or ``"time"``
    (:func:`splits`); with ``"time"`` every predictor is scored on the tested cascades only.
    ``per_cascade``: a binary file that receives one JSON line per window, seed and scored
    cascade: ``{"T_obs", "seed", "cid", "n_obs", "n_true", "forecasts": {predictor: size or
    null (infinite)}}``.

    Returns ``{"data", "cascades", "kernel", "split", "seeds", "windows": {"600": {predictor:
    summary}}}`` with non-finite means reported as ``None``.
    """
    seeds = [settings.seed] if seeds is None else [int(x) for x in seeds]
    if not seeds:
        raise ValueError("at least one seed is needed")
    cascades = dataset.cascades
    starts = np.array([c.start for c in cascades], dtype=np.float64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(settings.windows) * len(cascades) * (1 + len(seeds)), desc="backtest", unit="fit",
                   leave=False)
    tick = bar.update if bar is not None else None
    report: dict = {"data": dataset.path, "cascades": len(cascades), "kernel": settings.kernel, "split": split,
                    "seeds": seeds, "windows": {}}
    full = complete_fits(cascades, settings) if settings.kernel == "exp" and settings.empirical_prior else None
    try:
        for t_obs in settings.windows:
            fits = fit_window(cascades, t_obs, settings, tick=tick)
            if fits.index.size < 2:
                report["windows"][str(t_obs)] = {}
                if bar is not None:
                    bar.update(len(cascades) * len(seeds))
                continue
            scores: dict[str, list[Score]] = {}
            for seed in seeds:
                s = replace(settings, seed=seed)
                folds = splits(fits, s, split, starts[fits.index])
                tested = np.sort(np.concatenate([test for _, test in folds]))
                forecasts, seconds = _forecasts(fits, s, cascades, full, folds, dataset.truth, tick)
                for name, values in forecasts.items():
                    scores.setdefault(name, []).append(
                        Score.of(values[tested], fits.n_true[tested], seconds[name], ranks=name != "constant"))
                if per_cascade is not None:
                    _write_per_cascade(per_cascade, fits, cascades, seed, tested, forecasts)
            report["windows"][str(t_obs)] = {name: summarise(sc) for name, sc in scores.items()}
    finally:
        if bar is not None:
            bar.close()
    return report


def _forecasts(fits: WindowFits, settings: Settings, cascades: Sequence[Cascade], full: np.ndarray | None,
               folds: list[tuple[np.ndarray, np.ndarray]], truth: list[dict] | None,
               tick: Callable[[int], object] | None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every predictor's forecasts of the window's cascades (shape (k,) each) and the seconds each took."""
    forecasts: dict[str, np.ndarray] = {"observed": fits.n_obs, "hawkes": fits.hawkes}
    seconds = {"observed": 0.0, "hawkes": fits.seconds}
    start = time.perf_counter()
    forecasts["constant"] = constant_forecasts(fits, folds)
    seconds["constant"] = time.perf_counter() - start
    start = time.perf_counter()
    forecasts["hawkes+rf"] = cross_validated_forecasts(fits, settings, cascades, full, folds)
    seconds["hawkes+rf"] = fits.seconds + time.perf_counter() - start
    start = time.perf_counter()
    seismic = np.empty(fits.index.size)
    for j, i in enumerate(fits.index):
        c = cascades[i]
        seismic[j] = seismic_predict(c.times, c.marks, fits.t_obs, n_star=settings.seismic_n_star).final_size
    forecasts["seismic"], seconds["seismic"] = seismic, time.perf_counter() - start
    if truth is not None:
        start = time.perf_counter()
        forecasts["oracle"] = np.array([_oracle(cascades[i], truth[i], fits.t_obs) for i in fits.index])
        seconds["oracle"] = time.perf_counter() - start
    if tick is not None:
        tick(len(cascades))
    return forecasts, seconds


def _write_per_cascade(out: IO[bytes], fits: WindowFits, cascades: Sequence[Cascade], seed: int,
                       tested: np.ndarray, forecasts: dict[str, np.ndarray]) -> None:
    for j in tested.tolist():
        row = {"T_obs": fits.t_obs, "seed": seed, "cid": cascades[int(fits.index[j])].cid,
               "n_obs": int(fits.n_obs[j]), "n_true": int(fits.n_true[j]),
               "forecasts": {name: (float(v[j]) if math.isfinite(v[j]) else None) for name, v in forecasts.items()}}
        out.write(orjson.dumps(row) + b"\n")
