"""Speed of the power-law-kernel fit on 5,000-event cascades, and accuracy of its fast likelihood.

Prints, from one run on this machine (after a warm-up fit that compiles or loads
the numba cache):
- the wall time of ``fit_powerlaw`` on ``--n-cascades`` simulated cascades cut at
  their 5,000th event: median, min and max, with the likelihood passes spent;
- the time of one likelihood-with-gradient pass (O(n K)) against one exact O(n^2)
  evaluation (numpy), and the absolute and relative gap between the two.

Usage: python bench/bench_powerlaw.py [--n-cascades 7] [--events 5000] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import orjson

from estimators.marks import COURSE_MARKS
from estimators.powerlaw import (
    _Cascade,
    _eval_quadrature,
    fit_powerlaw,
    simulate_powerlaw_cascade,
)


def exact_loglik(t, m, T, kappa, beta, c, theta):
    mb = np.maximum(m, 1.0) ** beta
    ll = 0.0
    for i in range(1, t.size):
        ll += math.log(kappa * np.dot(mb[:i], (t[i] - t[:i] + c) ** (-1.0 - theta)))
    return ll - kappa * np.sum(mb * (c**-theta - (T - t + c) ** -theta) / theta)


def cascades(n_cascades: int, n_events: int, seed: int):
    """Simulated cascades (n_star 0.85, beta 0.5, c 30 s, theta 0.5) with more than n_events events."""
    n_star, beta, c, theta = 0.85, 0.5, 30.0, 0.5
    kappa = n_star * theta * c**theta / COURSE_MARKS.moment(beta)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_cascades:
        s = simulate_powerlaw_cascade(kappa, beta, c, theta, m0=1e8, random_state=rng)
        if s.size > n_events:
            out.append((s.times, s.marks, float(s.times[n_events])))  # exactly n_events before t_obs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cascades", type=int, default=7)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    data = cascades(args.n_cascades, args.events, args.seed)
    t0 = time.perf_counter()
    fit_powerlaw(*data[0])  # warm-up: compile or load the numba cache
    warm = time.perf_counter() - t0

    times, passes, fits = [], [], []
    for t, m, T in data:
        t0 = time.perf_counter()
        f = fit_powerlaw(t, m, T)
        times.append(time.perf_counter() - t0)
        passes.append(f.n_iter)
        fits.append(f)
    times = np.array(times)

    # one likelihood pass vs the exact O(n^2) sum, at the first fit
    t, m, T = data[0]
    t, m = t[t < T], m[t < T]
    f = fits[0]
    casc = _Cascade(t, np.maximum(m, 1.0), T, _eval_quadrature(t, f.c, f.theta, 1e-9))
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        ll_fast, _ = casc.loglik_grad(f.kappa, f.beta, f.c, f.theta)
    t_pass = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    ll_exact = exact_loglik(t, m, T, f.kappa, f.beta, f.c, f.theta)
    t_exact = time.perf_counter() - t0

    res = {
        "events": args.events,
        "cascades": args.n_cascades,
        "warmup_s": warm,
        "fit_s_median": float(np.median(times)),
        "fit_s_min": float(times.min()),
        "fit_s_max": float(times.max()),
        "passes_median": float(np.median(passes)),
        "nodes_K": casc.quad.size,
        "pass_with_grad_ms": 1e3 * t_pass,
        "exact_loglik_ms": 1e3 * t_exact,
        "loglik_abs_gap": abs(ll_fast - ll_exact),
        "loglik_rel_gap": abs(ll_fast - ll_exact) / abs(ll_exact),
        "all_converged": all(x.converged for x in fits),
    }
    if args.json:
        print(orjson.dumps({k: (v if isinstance(v, (bool, int, str)) else float(v)) for k, v in res.items()}).decode())
        return
    print(f"power-law fit, {args.events} events, {args.n_cascades} cascades (warm-up {warm:.2f} s)")
    print(f"  fit time   median {res['fit_s_median'] * 1e3:.1f} ms  min {res['fit_s_min'] * 1e3:.1f} ms  "
          f"max {res['fit_s_max'] * 1e3:.1f} ms  ({res['passes_median']:.0f} passes, all converged: "
          f"{res['all_converged']})")
    print(f"  one O(nK) pass with gradient: {res['pass_with_grad_ms']:.2f} ms (K = {res['nodes_K']} nodes); "
          f"exact O(n^2) log-likelihood: {res['exact_loglik_ms']:.0f} ms")
    print(f"  |LL_fast - LL_exact| = {res['loglik_abs_gap']:.2e} (relative {res['loglik_rel_gap']:.1e})")
    for x in fits[:3]:
        print(f"  fit: n*={x.n_star:.3f} beta={x.beta:.3f} c={x.c:.1f} s theta={x.theta:.3f} "
              f"forecast={x.final_size:.0f}")


if __name__ == "__main__":
    main()
