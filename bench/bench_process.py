"""The stages' process settings (``tweetoscope.tuning``) and the estimator workers' per-series path, each
against its baseline in one run.

- **Process settings.** The total-progeny laws of the model's forecast (``estimators.predictive``:
  ``--laws`` grid laws under the course's marks' law, the cache bypassed) computed in two child
  processes of this run, one as a stage process runs them (``tune_process``: glibc's malloc keeps
  large blocks, one BLAS thread) and one with the interpreter's defaults, both while a third process
  keeps one core busy, as the pipeline's other processes do. Alternated ``--repeat`` times.
- **A chunk of fits** (``tweetoscope.estimator.fit_chunk``, ``--series`` simulated series of the
  600 s window): as the workers run it now (a fit's final size from plain numbers, the chunk's series
  statistics in one compiled pass), against the array path of ``estimators.forecast.forecast_size``
  and :func:`estimators.forecast.series_features` series by series (the baseline, switched on here).
  Both must give the same fits.

Usage: python bench/bench_process.py [--laws 99] [--series 8192] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

LAWS = """
import sys, time
if sys.argv[1] == "tuned":
    from tweetoscope.tuning import tune_process
    tune_process()
from estimators.marks import COURSE_MARKS
from estimators.predictive import _progeny_on_grid
law = _progeny_on_grid.__wrapped__
law(50, COURSE_MARKS)
t = time.perf_counter()
for i in range(1, int(sys.argv[2]) + 1):
    law(i % 99 + 1, COURSE_MARKS)
print(time.perf_counter() - t)
"""

SPIN = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def law_seconds(mode: str, laws: int) -> float:
    """Seconds for ``laws`` grid laws in a child process (``mode`` "tuned" or "default"), one core kept busy."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}  # as a shell starts it
    spinner = subprocess.Popen([sys.executable, "-c", SPIN, "60"])
    try:
        out = subprocess.run([sys.executable, "-c", LAWS, mode, str(laws)], capture_output=True, text=True,
                             check=True, env=env, timeout=300)
    finally:
        spinner.kill()
        spinner.wait()
    return float(out.stdout.split()[-1])


def chunk(series: int):
    """A packed chunk of ``series`` simulated series cut at 600 s (at least two events each)."""
    from estimators import simulate_dataset
    from tweetoscope.estimator import pack_series
    from tweetoscope.schemas import SerieArrays

    tasks = []
    for i, c in enumerate(simulate_dataset(series * 2, random_state=11)):
        n = int(np.searchsorted(c.times, 600.0))
        if n >= 2:
            tasks.append(SerieArrays(str(i), 600, c.times[:n], c.marks[:n], source="s0"))
        if len(tasks) == series:
            break
    return pack_series(tasks)


def baseline_fit_chunk(packed, fit_kwargs):
    """``fit_chunk`` as it ran before: ``forecast_size`` through arrays, series statistics one by one."""
    import estimators.forecast as forecast
    from tweetoscope.estimator import fit_chunk

    numbers = forecast._NUMBERS
    forecast._NUMBERS = frozenset()  # every call takes the array path
    try:
        fits = fit_chunk(packed, fit_kwargs)
    finally:
        forecast._NUMBERS = numbers
    o = packed.offsets
    fits.series = np.array([forecast.series_features(packed.times[o[i]:o[i + 1]], packed.marks[o[i]:o[i + 1]],
                                                     packed.T_obs[i]) for i in range(packed.T_obs.size)])
    return fits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--laws", type=int, default=99)
    ap.add_argument("--series", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    tuned, default = [], []
    for _ in range(args.repeat):
        tuned.append(law_seconds("tuned", args.laws))
        default.append(law_seconds("default", args.laws))
    t, d = min(tuned), min(default)
    print(f"{args.laws} predictive laws, one core kept busy (min of {args.repeat}, alternated): "
          f"{t / args.laws * 1e3:.2f} ms a law with the stages' settings, {d / args.laws * 1e3:.2f} ms with the "
          f"defaults (ratio {t / d:.2f})")

    from tweetoscope.config import Settings
    from tweetoscope.estimator import fit_chunk

    packed = chunk(args.series)
    kw = Settings().fit_kwargs()
    fit_chunk(packed, kw)  # compiled code loaded
    now, before = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        new = fit_chunk(packed, kw)
        now.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        old = baseline_fit_chunk(packed, kw)
        before.append(time.perf_counter() - t0)
    same = all(np.array_equal(getattr(new, f), getattr(old, f)) for f in ("params", "n_obs", "n_supp", "converged"))
    close = np.allclose(new.series, old.series, rtol=1e-12, atol=0)
    k = packed.T_obs.size
    print(f"fit_chunk, {k:,} series of {packed.times.size / k:.1f} events (min of {args.repeat}, alternated): "
          f"{min(now) / k * 1e6:.1f} us a series, baseline {min(before) / k * 1e6:.1f} us (ratio "
          f"{min(now) / min(before):.2f}); the same fits: {same}; series statistics equal to rounding: {close}")


if __name__ == "__main__":
    main()
