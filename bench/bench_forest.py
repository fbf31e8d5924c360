"""The correction's ARE forests (``estimators.correction.are_forest``) against the absolute-error forests they
replaced, in one run.

On the Hawkes fits of simulated cascades at each window (``tweetoscope.backtest.fit_window``, at most
``--samples`` of them), with the count's trend (the ``are/10/count`` candidate that the 1M run chooses):

- the time to fit the ``are`` correction with ``--trees`` trees (the trend included): squared-error splits
  on the log of the ratio and each leaf's median of its draws (now), against scikit-learn's
  ``absolute_error`` criterion (the baseline, kept here);
- the out-of-sample weighted ARE of omega of both, ``--folds``-fold, at leaf sizes 3 and 10 (the
  candidates' sizes): the new forests must forecast as well;
- one model selection and final fit as the learner runs it (``tweetoscope.learner.train_model``), with
  each kind of forest (the baseline put in place of ``are_forest`` for the run), and the candidate
  each chose.

Usage: python bench/bench_forest.py [--cascades 3000] [--samples 2000] [--trees 50] [--folds 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from contextlib import contextmanager

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import KFold

import estimators.correction as correction
from estimators import simulate_dataset
from estimators.correction import OmegaForest, are_forest
from estimators.forecast import are_weights, omega_target
from tweetoscope.backtest import fit_window
from tweetoscope.config import Settings
from tweetoscope.learner import train_model


def absolute_error_forest(X: np.ndarray, r: np.ndarray, w: np.ndarray, *, n_estimators: int, min_samples_leaf: int,
                          random_state: int | None, n_jobs: int | None = None) -> RandomForestRegressor:
    """The baseline: the forest that :func:`estimators.correction.are_forest` replaced (its signature)."""
    return RandomForestRegressor(n_estimators=n_estimators, criterion="absolute_error",
                                 min_samples_leaf=min_samples_leaf, random_state=random_state,
                                 n_jobs=n_jobs).fit(X, r, sample_weight=w)


@contextmanager
def grown_by(forest):
    """``forest`` (:func:`estimators.correction.are_forest`'s signature) is what :class:`OmegaForest` grows
    for the loss ``"are"`` within the block."""
    correction.are_forest = forest
    try:
        yield
    finally:
        correction.are_forest = are_forest


def best_of(repeat: int, forest, run):
    """The least seconds of ``repeat`` calls of ``run()`` with ``forest`` grown (:func:`grown_by`), and what
    the last call returned."""
    times = []
    with grown_by(forest):
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = Settings()
    cascades = simulate_dataset(args.cascades, random_state=args.seed)
    kinds = {"now": are_forest, "absolute_error": absolute_error_forest}
    for t_obs in settings.windows:
        fits = fit_window(cascades, t_obs, settings)
        keep = np.flatnonzero((fits.X[:, 2] > 0) & (fits.X[:, 1] < 1))[: args.samples]
        X, n_true = fits.X[keep], fits.n_true[keep]
        y = omega_target(n_true, X[:, 3], X[:, 1], X[:, 2])
        w = are_weights(n_true, X[:, 3], X[:, 1], X[:, 2])
        correction_fit = lambda: OmegaForest("are", 10, args.trees, trend="count").fit(X, y, w)  # noqa: E731
        grow = {name: best_of(args.repeat, forest, correction_fit)[0] for name, forest in kinds.items()}
        print(f"T_obs {t_obs:>4} s, {len(y)} samples: are/10/count with {args.trees} trees fitted in "
              f"{grow['now']:.3f} s, "
              f"baseline {grow['absolute_error']:.3f} s (ratio {grow['now'] / grow['absolute_error']:.2f})")
        for leaf in (3, 10):
            err = {name: np.empty(len(y)) for name in kinds}
            for train, test in KFold(args.folds, shuffle=True, random_state=args.seed).split(X):
                for name, forest in kinds.items():
                    with grown_by(forest):
                        model = OmegaForest("are", leaf, args.trees, trend="count").fit(X[train], y[train], w[train])
                    err[name][test] = np.abs(model.predict(X[test]) - y[test]) * w[test]
            print(f"    leaf {leaf:>2}: out-of-sample weighted ARE {err['now'].mean():.4f}, "
                  f"baseline {err['absolute_error'].mean():.4f}")
        selection = {}
        for name, forest in kinds.items():
            seconds, (_, choice, _) = best_of(args.repeat, forest, lambda: train_model(X, n_true, args.trees, 0))
            selection[name] = (seconds, "/".join(map(str, choice)))
        print(f"    selection and final fit (train_model): {selection['now'][0]:.2f} s, chose {selection['now'][1]}; "
              f"baseline {selection['absolute_error'][0]:.2f} s, chose {selection['absolute_error'][1]} "
              f"(ratio {selection['now'][0] / selection['absolute_error'][0]:.2f})", flush=True)

if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        main()
