"""Dask scheduling overhead of the estimator's fits, and how batching brings it down.

Takes the ``cascade_series`` of an embedded run over simulated cascades and fits
them all (a) in one local loop, the pure compute time, and (b) through the
estimator's Dask node (:mod:`streams.dask`) on a one-worker, one-thread local
cluster, with several chunk sizes (series per task). The overhead is
``(wall time through Dask - local compute time) / local compute time``, both
measured in the same run on the same single core. ``--repeat R`` feeds the
series R times (each fit recomputed: ``pure=False``), so that the start and the
end of the stream (the first chunk's transfer, the last result's return) weigh
as little as they do in a long-running pipeline. It also measures Dask's own
cost per task on this machine (an empty task, one at a time and 8 in flight),
which says how many series a task needs for the overhead to fall under 10 %.

Two overheads are printed per chunk size: against the time the worker spent
computing the fits (Dask's task stream: the wall time during which the single
worker thread was not fitting is what scheduling costs), and against the local
loop (which also counts the fits running slower beside the client, scheduler
and stream on two cores).

Usage: python bench/bench_dask.py [--cascades 3000 | --data PATH] [--repeat 1] [--chunks 1,16,64,256,1024] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import os
import time

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--data", help="replay this dataset instead of simulated cascades (e.g. data/seismic-tideh)")
    ap.add_argument("--repeat", type=int, default=1, help="feed the series this many times")
    ap.add_argument("--chunks", default="1,16,64,256,1024")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import dask
    from distributed import Client, LocalCluster, get_task_stream
    from streamz import Stream

    from streams.datasets import load_dataset
    from streams.memory import read_jsonl_topic
    from streams.records import Record
    from tweetoscope.cli import main as cli
    from tweetoscope.config import Settings
    from tweetoscope.estimator import _Fit, decode_series, fit_chunk, pack_series
    from tweetoscope.pipeline import run_embedded

    dask.config.set({"distributed.admin.low-level-log-length": 10})
    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = scratch.name
    data = args.data
    if data is None:
        data = f"{tmp}/data"
        cli(["simulate", data, "--n", str(args.cascades), "--seed", str(args.seed)])
    settings = Settings(learner_every=10**9)
    asyncio.run(run_embedded(load_dataset(data), settings, f"{tmp}/out"))
    raw = [Record("cascade_series", orjson.dumps(r["value"])) for r in read_jsonl_topic(f"{tmp}/out/cascade_series.jsonl")]
    series, _ = decode_series(raw)
    kw = settings.fit_kwargs()
    fit_chunk(pack_series(series[:50]), kw)  # compile / load the numba cache
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        fit_chunk(pack_series(series), kw)
    local = time.perf_counter() - t0
    n_series = len(series) * args.repeat

    async def through_dask(chunk: int) -> float:
        cluster = await LocalCluster(n_workers=1, threads_per_worker=int(os.environ.get("BENCH_THREADS", 1)), processes=True, asynchronous=True,
                                     dashboard_address=None)
        client = await Client(cluster, asynchronous=True)
        await client.submit(fit_chunk, pack_series(series[:50]), kw, pure=False)  # warm the worker
        src = Stream()
        node = src.submit_batches(client, _Fit(kw), pack=pack_series, chunk_size=chunk,
                                  max_in_flight=settings.max_in_flight)
        done = node.sink_to_list()
        async with get_task_stream(client) as stream:
            t_start = time.time()
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                for i in range(0, len(series), settings.batch_size):
                    futures = src._emit(series[i: i + settings.batch_size])
                    if futures:
                        await asyncio.gather(*futures)
            await node.drain()
            wall = time.perf_counter() - t0
            t_end = time.time()
        assert sum(len(chunk) for chunk, _ in done) == n_series
        spans = sorted((ss["start"], ss["stop"]) for task in stream.data for ss in task["startstops"]
                       if ss["action"] == "compute")
        compute = sum(stop - start for start, stop in spans)
        gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        if os.environ.get("BENCH_DEBUG"):
            print(f"chunk {chunk}: tasks {node.n_tasks}, first start {spans[0][0] - t_start:.3f}, "
                  f"end {t_end - spans[-1][1]:.3f}, gaps sum {sum(gaps):.3f} max {max(gaps, default=0):.3f}")
        await client.close()
        await cluster.close()
        return wall, compute, node.n_tasks

    async def per_task_cost() -> dict[str, float]:
        """Seconds per empty task: one at a time (round trip) and 8 in flight (throughput)."""
        cluster = await LocalCluster(n_workers=1, threads_per_worker=1, processes=True, asynchronous=True,
                                     dashboard_address=None)
        client = await Client(cluster, asynchronous=True)
        await client.submit(len, [], pure=False)
        out = {}
        for in_flight, n in ((1, 100), (8, 400)):
            slots = asyncio.Semaphore(in_flight)

            async def one():
                async with slots:
                    await client.submit(len, [], pure=False)

            t0 = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(n)])
            out[f"in_flight_{in_flight}"] = (time.perf_counter() - t0) / n
        await client.close()
        await cluster.close()
        return out

    task_cost = asyncio.run(per_task_cost())
    per_fit = local / n_series
    rows = []
    for chunk in (int(c) for c in args.chunks.split(",")):
        wall, compute, tasks = asyncio.run(through_dask(chunk))
        rows.append({"chunk": chunk, "tasks": tasks, "seconds": wall,
                     "compute_seconds": compute, "overhead": (wall - local) / local,
                     "scheduling_overhead": (wall - compute) / compute})
    res = {"series": n_series, "local_seconds": local, "per_fit_us": per_fit * 1e6,
           "task_ms": {k: v * 1e3 for k, v in task_cost.items()},
           "series_per_task_for_10pc": task_cost["in_flight_8"] / (0.1 * per_fit), "dask": rows}
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{n_series:,} series; local loop {local:.2f} s ({res['per_fit_us']:.0f} us per fit)")
    print(f"an empty Dask task: {res['task_ms']['in_flight_1']:.1f} ms round trip, "
          f"{res['task_ms']['in_flight_8']:.1f} ms each with 8 in flight -> overhead under 10 % needs "
          f">= {res['series_per_task_for_10pc']:,.0f} series per task at this fit cost")
    for r in rows:
        print(f"  chunk {r['chunk']:>5}: {r['tasks']:>6} tasks, {r['seconds']:.2f} s through Dask, of which the "
              f"worker computed {r['compute_seconds']:.2f} s: scheduling overhead {r['scheduling_overhead']:+.0%} "
              f"of fit time on the worker, {r['overhead']:+.0%} of the local loop's")


if __name__ == "__main__":
    main()
