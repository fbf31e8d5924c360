"""The predictive law's and the constant baseline's cost against the methods they replaced, in one run.

- total-progeny grid law (``estimators.predictive._progeny_on_grid``): one FFT and one matrix
  product of the pgf's powers, against the previous (TOTAL_TERMS, 2 TOTAL_TERMS) cumprod and
  row-wise inverse FFT (kept here as the baseline), for the course's law and a learnt law;
  the largest difference between the two laws is printed too;
- ``estimators.correction.count_trend`` on ``n`` samples, against the previous search over every
  size and a 256-point grid per exponent (the baseline here); the median ARE both reach;
- the ARE-optimal sizes of a batch of cascades (``estimators.predictive._are_optimal_sizes``, the
  predictor's cost when a model's trend is the model's own forecast): the compiled interpolation,
  exponential and weighted median, against the same steps in numpy array operations (the previous
  code, the baseline here), per cascade; the forecasts that differ are counted.

Usage: python bench/bench_predictive.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from estimators.correction import COUNT_EXPONENTS, count_trend
from estimators.marks import COURSE_MARKS, MarkLaw
from estimators.predictive import (_BLOCK, TOTAL_TERMS, _are_optimal_sizes, _grid_position, _grid_spectrum, _law_length,
                                   _progeny_on_grid)


def progeny_baseline(i: int, law: MarkLaw) -> np.ndarray:
    """The grid law as computed before (cumprod of the pgf, then an inverse FFT of every row)."""
    M, L = TOTAL_TERMS, 2 * TOTAL_TERMS
    out = np.zeros(M + 1)
    phi = np.fft.fft(law.offspring_pmf(i * 0.01 / law.mean, L))
    S = np.fft.ifft(np.cumprod(np.broadcast_to(phi, (M, L)), axis=0), axis=1).real
    n = np.arange(1, M + 1)
    out[1:] = np.clip(S[n - 1, n - 1], 0.0, None) / n
    out[M] += max(1.0 - out.sum(), 0.0)
    return out


def trend_baseline(n_obs: np.ndarray, n_true: np.ndarray) -> tuple[float, float]:
    """count_trend as before: each exponent's constant among the sizes and a 256-point grid."""
    best, best_err = (1.0, 0.0), np.inf
    for b in COUNT_EXPONENTS:
        r = n_true / n_obs ** b
        cands = np.unique(np.concatenate([r, np.geomspace(r.min(), r.max(), 256)]))
        err = np.median(np.abs(cands[:, None] - r[None, :]) / r[None, :], axis=1)
        a = float(cands[int(np.argmin(err))])
        e = float(np.median(np.abs(a / r - 1.0)))
        if e < best_err:
            best, best_err = (a, float(b)), e
    return best


def are_optimal_baseline(n_obs, n_star, G1, mark_law, min_size):
    """_are_optimal_sizes as before stop 23: the same steps in numpy array operations."""
    out = np.empty(n_obs.size)
    length = _law_length(n_star, G1)
    lo, w = _grid_position(n_star)
    for size in np.unique(length):
        size = int(size)
        rows = np.flatnonzero(length == size)
        spectra = {int(i): _grid_spectrum(int(i), size, mark_law) for i in np.unique(np.concatenate(
            [lo[rows], lo[rows][w[rows] > 0] + 1]))}
        k = np.arange(size, dtype=np.float64)
        step = max(1, _BLOCK // size)
        for b in range(0, rows.size, step):
            r = rows[b:b + step]
            F = np.stack([spectra[int(i)] for i in lo[r]])
            up = np.flatnonzero(w[r] > 0)
            if up.size:
                F[up] = (1.0 - w[r][up, None]) * F[up] + w[r][up, None] * np.stack(
                    [spectra[int(i) + 1] for i in lo[r][up]])
            pR = np.fft.irfft(np.exp(G1[r, None] * (F - 1.0)), n=2 * size, axis=1)[:, :size]
            np.clip(pR, 0.0, None, out=pR)
            tail = np.maximum(1.0 - pR.sum(axis=1), 0.0)
            N = n_obs[r, None] + k
            wt = np.where(N >= min_size, pR / N, 0.0)
            total = wt.sum(axis=1) + tail / (n_obs[r] + size)
            hit = np.cumsum(wt, axis=1) >= 0.5 * total[:, None]
            j = np.where(hit.any(axis=1), hit.argmax(axis=1), size)
            out[r] = np.where(total > 0, n_obs[r] + j, np.maximum(n_obs[r], min_size))
    return out


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    learnt = MarkLaw.fit(10.0 * (1.0 + rng.pareto(1.3, 5000)))
    for name, law in (("course Pareto law", COURSE_MARKS), ("learnt law", learnt)):
        for i in (20, 90):
            new = timed(lambda: _progeny_on_grid.__wrapped__(i, law), args.repeat)
            old = timed(lambda: progeny_baseline(i, law), args.repeat)
            diff = np.abs(_progeny_on_grid.__wrapped__(i, law) - progeny_baseline(i, law)).max()
            print(f"progeny law, {name}, n* = {i / 100:.2f}: {new * 1e3:6.1f} ms, baseline {old * 1e3:6.1f} ms "
                  f"(ratio {new / old:.3f}); largest difference {diff:.1e}")
    for n in (500, 2000):
        n_obs = rng.lognormal(2, 1, n)
        n_true = n_obs * rng.lognormal(1, 1, n)
        new = timed(lambda: count_trend(n_obs, n_true, COUNT_EXPONENTS), args.repeat)
        old = timed(lambda: trend_baseline(n_obs, n_true), args.repeat)
        (a, b), (a0, b0) = count_trend(n_obs, n_true, COUNT_EXPONENTS), trend_baseline(n_obs, n_true)
        med = lambda a, b: float(np.median(np.abs(a * n_obs ** b / n_true - 1.0)))  # noqa: E731
        print(f"count_trend, {n:,} samples: {new * 1e3:7.1f} ms, baseline {old * 1e3:7.1f} ms "
              f"(ratio {new / old:.3f}); median ARE {med(a, b):.5f} (baseline {med(a0, b0):.5f})")

    # cascades as the estimator sends them: a few events so far, n* spread below 1, G1 over 3 decades
    n = 2000
    n_obs = np.ceil(rng.lognormal(1.5, 1.0, n))
    n_star = rng.uniform(0.05, 0.95, n)
    G1 = rng.lognormal(1.0, 1.5, n)
    for batch in (200, 2000):
        def run(fn):
            return np.concatenate([fn(n_obs[i:i + batch], n_star[i:i + batch], G1[i:i + batch], COURSE_MARKS, 10.0)
                                   for i in range(0, n, batch)])
        new = timed(lambda: run(_are_optimal_sizes), args.repeat) / n
        old = timed(lambda: run(are_optimal_baseline), args.repeat) / n
        diff = int((run(_are_optimal_sizes) != run(are_optimal_baseline)).sum())
        print(f"ARE-optimal sizes, batches of {batch:,}: {new * 1e6:6.1f} us a cascade, baseline {old * 1e6:6.1f} us "
              f"(ratio {new / old:.3f}); forecasts that differ {diff} of {n:,}")


if __name__ == "__main__":
    main()
