"""Scale-out of the Dask pool: the pipeline's adaptive local cluster grows under a backlog and shrinks
idle. (Scale-out of the stages, two instances of each on four partitions compared by value with one
instance: tests/test_faults.py::test_two_instances_of_each_stage_on_four_partitions_give_the_outputs_of_one.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tweetoscope.config import Settings
from tweetoscope.pipeline import start_dask

ROOT = Path(__file__).resolve().parent.parent


def test_adaptive_local_cluster_grows_under_a_backlog_and_shrinks_idle():
    """The pipeline's own cluster (start_dask), allowed 1 to 3 workers."""

    def busy(n: int) -> float:  # pure-Python work: 6M steps take about a quarter of a second here
        x = 0.0
        for i in range(n):
            x += i ** 0.5
        return x

    async def main() -> list[int]:
        client, cluster = await start_dask(Settings(dask_min_workers=1, dask_workers=3))
        counts = [len(cluster.scheduler.workers)]
        try:
            futures = client.map(busy, [6_000_000 + i for i in range(60)], pure=False)  # ~15 s on one worker
            deadline = time.monotonic() + 120
            while len(cluster.scheduler.workers) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                counts.append(len(cluster.scheduler.workers))
            await client.gather(futures)
            del futures
            # every worker, those added by the scale-up too, warmed its fits when it started
            warmed = await client.run(lambda dask_worker: "tweetoscope-warm-fits" in dask_worker.plugins)
            assert len(warmed) == 3 and all(warmed.values()), warmed
            # and each forked from the server that imported the tasks' modules and compiled the fit once
            preload = await client.run(_preload_of_this_process)
            assert all(complete and at_once and pid != worker_pid
                       for complete, at_once, pid, worker_pid in preload.values()), preload
            # with one BLAS thread, as Dask means its workers to have (they fork from a server that
            # loaded OpenBLAS before Dask's OPENBLAS_NUM_THREADS=1 could reach them)
            blas = await client.run(_blas_threads)
            assert all(threads == [1, 1] for threads in blas.values()), blas
            # at a lower priority than this process (the stages'), every thread of theirs
            nice = await client.run(_niceness_of_every_thread)
            assert all(set(n) == {os.nice(0) + Settings().worker_nice} for n in nice.values()), nice
            while len(cluster.scheduler.workers) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                counts.append(len(cluster.scheduler.workers))
            return counts
        finally:
            await client.close()
            await cluster.close()

    counts = asyncio.run(main())
    assert counts[0] == 1 and max(counts) == 3 and counts[-1] == 1, counts


def _niceness_of_every_thread() -> list[int]:
    """The niceness of each thread of this process (Linux: each thread has its own)."""
    import psutil

    return [psutil.Process(t.id).nice() for t in psutil.Process().threads()]


def _blas_threads() -> list[int]:
    """The threads of each BLAS library loaded in this process (numpy's and scipy's OpenBLAS here)."""
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_a_stage_process_runs_one_blas_thread_and_keeps_large_blocks_in_its_heap():
    """tune_process (every command that runs stages calls it): BLAS libraries loaded before and after
    it have one thread, and glibc takes the malloc settings (a subprocess: it changes its process)."""
    code = ("import numpy, json, sys\n"
            "from tweetoscope.tuning import tune_process, tune_malloc\n"
            "tune_process()\n"
            "import scipy.linalg\n"  # a library loaded after the call
            "from threadpoolctl import threadpool_info\n"
            "print(json.dumps([[i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'], tune_malloc()]))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}  # as a shell starts it (not Dask)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=env)
    threads, malloc = json.loads(out.stdout)
    assert threads and set(threads) == {1} and malloc is True, out.stdout


def _preload_of_this_process() -> tuple[bool, bool, int, int]:
    """(whether the workers' preload ran completely, whether it ran in a forkserver that exits at once,
    the pid that ran it, this pid)."""
    import os
    import sys

    mod = sys.modules.get("tweetoscope._worker_preload")
    return (mod is not None and mod.COMPLETE, mod is not None and mod.EXITS_AT_ONCE,
            mod.PRELOADED_IN if mod else os.getpid(), os.getpid())


_MARKER = """
import atexit, os
atexit.register(lambda: open(os.environ["MARKER_FILE"], "w").close())
"""

_SERVE_AND_EXIT = """
import multiprocessing.forkserver, sys
multiprocessing.forkserver.set_forkserver_preload(sys.argv[1:])
multiprocessing.forkserver.ensure_running()
ctx = multiprocessing.get_context("forkserver")
p = ctx.Process(target=print, args=("served",))  # a process forked once the preload is done
p.start(); p.join()
sys.exit(p.exitcode)
"""


@pytest.mark.parametrize("preload, teardown", [(["marker"], True), (["marker", "tweetoscope._worker_preload"], False)])
def test_the_workers_forkserver_exits_without_tearing_down_its_imports(tmp_path, preload, teardown):
    """The forkserver that imported the workers' preload exits at once with the process that started it:
    the exit handlers of the modules it imported before (here ``marker``'s, which writes a file) do not
    run. Without it (first case), they do: that teardown kept the command's stdout open 0.6-0.7 s."""
    (tmp_path / "marker.py").write_text(_MARKER)
    marker = tmp_path / "exited"
    env = {**os.environ, "MARKER_FILE": str(marker),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _SERVE_AND_EXIT, *preload], env=env, capture_output=True,
                          text=True, timeout=300)  # communicate(): returns once the forkserver, too, closed stdout
    assert proc.returncode == 0 and "served" in proc.stdout, proc.stderr
    assert marker.exists() == teardown


def test_a_local_cluster_without_the_dashboard_serves_no_dask_dashboard():
    """``tweetoscope run --no-dashboard`` starts its cluster with ``dashboard=False``: nothing would link
    to the Dask dashboard, so its scheduler serves none (its HTTP endpoints stay, on a free port)."""
    import urllib.error
    import urllib.request

    def status(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    async def main(dashboard: bool) -> tuple[int, int]:
        client, cluster = await start_dask(Settings(dask_min_workers=1, dask_workers=1), dashboard=dashboard)
        try:
            base = client.dashboard_link.rsplit("/", 1)[0]
            loop = asyncio.get_running_loop()
            return (await loop.run_in_executor(None, status, f"{base}/status"),
                    await loop.run_in_executor(None, status, f"{base}/health"))
        finally:
            await client.close()
            await cluster.close()

    assert asyncio.run(main(False)) == (404, 200)
    assert asyncio.run(main(True)) == (200, 200)


_START_AND_CLOSE = """
import asyncio, sys
from tweetoscope.config import Settings
from tweetoscope.pipeline import close_dask, start_dask

async def main():
    client, cluster = await start_dask(Settings(dask_min_workers=1, dask_workers=1), dashboard=False)
    n = len(await client.run(lambda: 1))
    await close_dask(client, cluster)
    return n

if __name__ == "__main__":
    print(asyncio.run(main()), "pandas" in sys.modules)
"""


def test_a_local_cluster_does_not_import_what_its_workers_do_not_need_here(tmp_path):
    """distributed, setting up its workers' forkserver, would import its optional packages in this process
    to see which import (pandas: 0.2 s of the start); the pipeline's forkserver runs already with its own
    preload, so nothing is imported for that."""
    (tmp_path / "start.py").write_text(_START_AND_CLOSE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(tmp_path / "start.py")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "False"], proc.stdout


def test_a_run_whose_workers_cannot_start_ends_with_why_instead_of_waiting(tmp_path):
    """``tweetoscope run`` starts replaying before the local cluster's workers are up (open_dask). If they
    cannot start (here a worker preload that raises), the run must end with that error, not wait for ever
    for fits that no worker would run."""
    import dask

    from streams.datasets import load_dataset
    from tweetoscope.pipeline import close_dask, open_dask, run_embedded

    (tmp_path / "boom.py").write_text('raise RuntimeError("boom at the worker\'s start")\n')
    dataset = load_dataset(ROOT / "data" / "sample")
    settings = Settings(dask_min_workers=1, dask_workers=1)

    async def main() -> None:
        client, cluster, workers = await open_dask(settings, dashboard=False)
        try:
            await run_embedded(dataset, settings, tmp_path / "out", client=client, workers=workers)
        finally:
            await close_dask(client, cluster)

    with dask.config.set({"distributed.worker.preload": [str(tmp_path / "boom.py")]}):
        with pytest.raises(RuntimeError, match="workers could not start.*boom at the worker's start"):
            asyncio.run(main())
