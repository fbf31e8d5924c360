"""Start-up times: ``tweetoscope --help``, and each stage process from its launch to ``/healthz`` (its
process is up, settings read, modules imported) and to ``/readyz`` (its consumer group joined), on a
real broker with a running Dask scheduler, as an operator starts them.

Each figure is the median of ``--repeat`` launches, wall seconds. Beside them, in the same run, the
bare cost of starting Python with the same interpreter (``python -c pass``) and of importing the
stage's module, so that the stage's own share stands out.

Usage: python bench/bench_startup.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kafka_bench_util import ROOT, broker, free_port  # noqa: E402

STAGES = ("collector", "estimator", "predictor", "learner")
#: The module each stage's process imports to build it (tweetoscope.pipeline.build_stages).
MODULES = {"collector": "tweetoscope.collector", "estimator": "tweetoscope.estimator",
           "predictor": "tweetoscope.predictor", "learner": "tweetoscope.learner"}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return r.status
    except Exception:  # noqa: BLE001  (not listening yet, or 503)
        return 0


def stage_startup(stage: str, bootstrap: str, scheduler: str, port: int, timeout: float = 120.0) -> tuple[float, float]:
    """Seconds from launching ``tweetoscope STAGE`` to its ``/healthz`` answering 200, and to ``/readyz``."""
    prefix = f"b{uuid.uuid4().hex[:8]}-"
    env = {**os.environ, "TWEETOSCOPE_TOPIC_PREFIX": prefix, "TWEETOSCOPE_GROUP_PREFIX": prefix + "g"}
    cmd = [sys.executable, "-m", "tweetoscope", stage, "--kafka", bootstrap, "--scheduler", scheduler,
           "--health-port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    healthy = ready = None
    try:
        while ready is None:
            if proc.poll() is not None:
                raise RuntimeError(f"{stage} exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{stage} not ready after {timeout:.0f} s")
            if healthy is None and get(port, "/healthz") == 200:
                healthy = time.perf_counter() - t0
            if healthy is not None and get(port, "/readyz") == 200:
                ready = time.perf_counter() - t0
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)
    return healthy, ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    res: dict[str, dict[str, float]] = {}

    def median(f) -> float:
        return statistics.median(f() for _ in range(args.repeat))

    res["python -c pass"] = {"seconds": median(lambda: timed([py, "-c", "pass"]))}
    res["tweetoscope --help"] = {"seconds": median(lambda: timed([py, "-m", "tweetoscope", "--help"]))}
    for stage in STAGES:
        res[f"import {MODULES[stage]}"] = {"seconds": median(lambda: timed([py, "-c", f"import {MODULES[stage]}"]))}

    from distributed import LocalCluster

    with broker() as bootstrap, LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                             dashboard_address=None) as cluster:
        for stage in STAGES:
            runs = [stage_startup(stage, bootstrap, cluster.scheduler_address, free_port()) for _ in range(args.repeat)]
            res[f"tweetoscope {stage}"] = {"healthz_seconds": statistics.median(h for h, _ in runs),
                                           "readyz_seconds": statistics.median(r for _, r in runs)}
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"medians of {args.repeat} launches (wall seconds)")
    for name, v in res.items():
        if "seconds" in v:
            print(f"  {name:<36} {v['seconds']:6.2f}")
        else:
            print(f"  {name:<36} /healthz {v['healthz_seconds']:6.2f}   /readyz {v['readyz_seconds']:6.2f}")


if __name__ == "__main__":
    main()
