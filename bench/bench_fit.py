"""Speed of the exponential-kernel fit against the course estimator, and likelihood throughput.

Prints, from one run on the same machine:
- the total time of ``fit_cascade(kernel="exp")`` and of the course estimator (Python-loop
  likelihood, Powell from the prior mean) on the same 200 simulated cascades, each fitted at
  the windows 600, 1200 and 3600 s (where it has at least two events), their ratio, and the
  share of fits where our MAP objective is equal or better (the course's objective function
  evaluated at both solutions, tolerance 1e-9 relative), under the course's bounds;
- log-likelihood-with-gradient throughput in events/s on one core (1e6-event cascade).

Usage: python bench/bench_fit.py [--n 200] [--windows 600,1200,3600] [--json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from course_estimator import compute_MAP, map_objective  # noqa: E402

from estimators import fit_cascade, loglikelihood_grad, simulate_dataset  # noqa: E402
from estimators.hawkes import _loglik  # noqa: E402


def compare(data, T):
    """Fit the same cascades at T with both estimators; timings and objective comparison."""
    hist = [np.column_stack([c.times[c.times < T], c.marks[c.times < T]]) for c in data]
    hist = [h for h in hist if h.shape[0] >= 2]
    for h in hist:  # warm-up: load the compiled kernels for these array layouts
        fit_cascade(h[:, 0], h[:, 1], T, max_n_star=1.0)
    ours = []
    t0 = time.perf_counter()
    for h in hist:
        f = fit_cascade(h[:, 0], h[:, 1], T, max_n_star=1.0)
        ours.append((f.p, f.beta))
    t_ours = time.perf_counter() - t0
    course = []
    t0 = time.perf_counter()
    for h in hist:
        _, x = compute_MAP(h, T, 2.4, 10.0)
        course.append(tuple(x))
    t_course = time.perf_counter() - t0
    obj_ours = np.array([map_objective(np.array(o), h, T) for o, h in zip(ours, hist)])
    obj_course = np.array([map_objective(np.array(c), h, T) for c, h in zip(course, hist)])
    better = obj_ours <= obj_course + 1e-9 * np.abs(obj_course)
    sizes = np.array([h.shape[0] for h in hist])
    return {
        "t_obs": T, "cascades": len(hist), "events_median": float(np.median(sizes)), "events_max": int(sizes.max()),
        "seconds_ours": t_ours, "seconds_course": t_course, "speedup": t_course / t_ours,
        "equal_or_better": int(better.sum()), "worst_objective_gap": float(np.max(obj_ours - obj_course)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--windows", default="600,1200,3600")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    data = simulate_dataset(args.n, random_state=args.seed)
    fit_cascade(data[0].times, data[0].marks, data[0].times[-1] + 1)  # compile / load the numba cache
    rows = [compare(data, float(T)) for T in args.windows.split(",")]
    total_ours = sum(r["seconds_ours"] for r in rows)
    total_course = sum(r["seconds_course"] for r in rows)
    n_fits = sum(r["cascades"] for r in rows)
    n_better = sum(r["equal_or_better"] for r in rows)

    # likelihood + gradient throughput, one core, 1e6 events
    rng = np.random.default_rng(1)
    n = 1_000_000
    t = np.sort(rng.uniform(0, 1e5, n))
    t[0] = 0.0
    m = np.exp(rng.uniform(0, np.log(1e6), n))
    _loglik(t, m, 1e5 + 1, 1e-4, 1e-3, 1.0)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        _loglik(t, m, 1e5 + 1, 1e-4, 1e-3, 1.0)
    kernel_rate = reps * n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(reps):
        loglikelihood_grad(t, m, 1e5 + 1, 1e-4, 1e-3)
    public_rate = reps * n / (time.perf_counter() - t0)

    res = {
        "windows": rows,
        "fits": n_fits,
        "seconds_ours": total_ours,
        "seconds_course": total_course,
        "speedup": total_course / total_ours,
        "equal_or_better_share": n_better / n_fits,
        "loglik_grad_events_per_s_kernel": kernel_rate,
        "loglik_grad_events_per_s_public": public_rate,
    }
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{args.n} simulated cascades (seed {args.seed}), fitted at each window by both estimators")
    for r in rows:
        print(f"  T_obs={r['t_obs']:>6g} s: {r['cascades']} fits (events median {r['events_median']:.0f}, max "
              f"{r['events_max']}): ours {r['seconds_ours']:.4f} s, course {r['seconds_course']:.2f} s, "
              f"x{r['speedup']:,.0f}; equal or better {r['equal_or_better']}/{r['cascades']}")
    print(f"total: ours {total_ours:.4f} s, course {total_course:.2f} s, speed-up x{res['speedup']:,.0f}; "
          f"equal or better MAP objective on {res['equal_or_better_share']:.1%} of {n_fits} fits")
    print(f"log-likelihood + gradient: {kernel_rate / 1e6:.1f} M events/s (kernel), "
          f"{public_rate / 1e6:.1f} M events/s (public function with input checks)")


if __name__ == "__main__":
    main()
