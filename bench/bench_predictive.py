"""The predictive law's and the constant baseline's cost against the methods they replaced, in one run.

- total-progeny grid law (``estimators.predictive._progeny_on_grid``): one FFT and one matrix
  product of the pgf's powers, against the previous (TOTAL_TERMS, 2 TOTAL_TERMS) cumprod and
  row-wise inverse FFT (kept here as the baseline), for the course's law and a learnt law;
  the largest difference between the two laws is printed too;
- ``estimators.correction.count_trend`` on ``n`` samples, against the previous search over every
  size and a 256-point grid per exponent (the baseline here); the median ARE both reach.

Usage: python bench/bench_predictive.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from estimators.correction import COUNT_EXPONENTS, count_trend
from estimators.marks import COURSE_MARKS, MarkLaw
from estimators.predictive import TOTAL_TERMS, _progeny_on_grid


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


if __name__ == "__main__":
    main()
