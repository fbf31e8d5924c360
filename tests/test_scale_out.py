"""Scale-out of the Dask pool: the pipeline's adaptive local cluster grows under a backlog and shrinks
idle. (Scale-out of the stages, two instances of each on four partitions compared by value with one
instance: tests/test_faults.py::test_two_instances_of_each_stage_on_four_partitions_give_the_outputs_of_one.)"""

from __future__ import annotations

import asyncio
import time

from tweetoscope.config import Settings
from tweetoscope.pipeline import start_dask


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
            assert all(complete and pid != worker_pid for complete, pid, worker_pid in preload.values()), preload
            while len(cluster.scheduler.workers) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                counts.append(len(cluster.scheduler.workers))
            return counts
        finally:
            await client.close()
            await cluster.close()

    counts = asyncio.run(main())
    assert counts[0] == 1 and max(counts) == 3 and counts[-1] == 1, counts


def _preload_of_this_process() -> tuple[bool, int, int]:
    """(whether the workers' preload ran completely, the pid that ran it, this pid)."""
    import os
    import sys

    mod = sys.modules.get("tweetoscope._worker_preload")
    return (mod is not None and mod.COMPLETE, mod.PRELOADED_IN if mod else os.getpid(), os.getpid())


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
