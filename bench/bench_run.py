"""``tweetoscope run`` on >= 1M simulated events: the command's wall time against the replay's own.

Simulates a dataset (``tweetoscope simulate``), then launches ``tweetoscope run --data ... --no-dashboard``
as a user would, ``--rounds`` times, and prints for each launch:

- the command's wall time, from launch to exit (start-up, the replay, the cluster's shutdown);
- the replay's own time, as the command prints it (from the replay's start to everything processed);
- their ratio (the issue 12 target is <= 1.3), and the fixed cost (wall - replay);
- the share of each window's forecasts made with a learnt model (``stats`` with ``model_version > 0``)
  and their median ARE: a faster run must still forecast with the models, not before they arrive.

``--tree DIR`` (repeatable) runs the command from another checkout of the project instead
(``PYTHONPATH=DIR``, with this interpreter), alternating the trees round by round: this machine's
speed drifts within minutes, so only launches alternated in one run compare.

Usage: python bench/bench_run.py [--cascades 16500] [--seed 7] [--rounds 3] [--tree DIR ...] [--json]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def launch(tree: Path, data: str, out: str) -> dict:
    """One ``tweetoscope run`` from ``tree``: wall and replay seconds, model shares and median ARE by window."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tweetoscope", "run", "--data", data, "--no-dashboard", "--out", out],
                          cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"tweetoscope run from {tree} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    m = re.search(r"events replayed in ([0-9.]+) s", proc.stdout + proc.stderr)
    if m is None:
        raise SystemExit(f"tweetoscope run from {tree} did not print its replay time")
    replay = float(m.group(1))
    are: dict[int, list[float]] = defaultdict(list)
    with_model: dict[int, int] = defaultdict(int)
    with open(f"{out}/stats.jsonl", "rb") as fh:
        for line in fh:
            v = orjson.loads(line)["value"]
            are[v["T_obs"]].append(v["ARE"])
            with_model[v["T_obs"]] += v["model_version"] > 0
    return {"tree": str(tree), "wall": wall, "replay": replay, "ratio": wall / replay, "fixed": wall - replay,
            "with_model": {T: with_model[T] / len(a) for T, a in sorted(are.items())},
            "median_are": {T: statistics.median(a) for T, a in sorted(are.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=16500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", action="append", type=Path, help="a checkout to run from (default: this one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.tree] if args.tree else [ROOT]
    with tempfile.TemporaryDirectory(prefix="tweetoscope-bench-") as tmp:
        subprocess.run([sys.executable, "-m", "tweetoscope", "simulate", f"{tmp}/data", "--n", str(args.cascades),
                        "--seed", str(args.seed)], cwd=ROOT, check=True, capture_output=True)
        results = []
        for r in range(args.rounds):
            for tree in trees:
                res = launch(tree, f"{tmp}/data", f"{tmp}/out")
                res["round"] = r + 1
                results.append(res)
                if not args.json:
                    share = " / ".join(f"{v:.2f}" for v in res["with_model"].values())
                    med = " / ".join(f"{v:.3f}" for v in res["median_are"].values())
                    print(f"round {r + 1}  {tree}: wall {res['wall']:.2f} s, replay {res['replay']:.1f} s, "
                          f"ratio {res['ratio']:.2f}, fixed {res['fixed']:.2f} s; with a model {share}; "
                          f"median ARE {med}", flush=True)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_NON_STR_KEYS).decode())


if __name__ == "__main__":
    main()
