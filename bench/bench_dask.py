"""Dask scheduling overhead of the estimator's fits, and how batching brings it down.

Takes the ``cascade_series`` of an embedded run over simulated cascades and fits
them all (a) in one local loop, the pure compute time, and (b) through the
estimator's Dask node (:mod:`streams.dask`) on a one-worker, one-thread local
cluster, with several chunk sizes (series per task). The overhead is
``(wall time through Dask - local compute time) / local compute time``, both
measured in the same run on the same single core.

Usage: python bench/bench_dask.py [--cascades 3000] [--chunks 1,16,64,256,1024] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--chunks", default="1,16,64,256,1024")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import dask
    from distributed import Client, LocalCluster
    from streamz import Stream

    from streams.datasets import load_dataset
    from streams.memory import read_jsonl_topic
    from streams.records import Record
    from tweetoscope.cli import main as cli
    from tweetoscope.config import Settings
    from tweetoscope.estimator import _Fit, decode_series, fit_chunk, pack_series
    from tweetoscope.pipeline import run_embedded

    dask.config.set({"distributed.admin.low-level-log-length": 10})
    tmp = tempfile.mkdtemp(prefix="tweetoscope-bench-")
    cli(["simulate", f"{tmp}/data", "--n", str(args.cascades), "--seed", str(args.seed)])
    settings = Settings(learner_every=10**9)
    asyncio.run(run_embedded(load_dataset(f"{tmp}/data"), settings, f"{tmp}/out"))
    raw = [Record("cascade_series", orjson.dumps(r["value"])) for r in read_jsonl_topic(f"{tmp}/out/cascade_series.jsonl")]
    series, _ = decode_series(raw)
    kw = settings.fit_kwargs()
    fit_chunk(pack_series(series[:50]), kw)  # compile / load the numba cache
    t0 = time.perf_counter()
    fit_chunk(pack_series(series), kw)
    local = time.perf_counter() - t0

    async def through_dask(chunk: int) -> float:
        cluster = await LocalCluster(n_workers=1, threads_per_worker=1, processes=True, asynchronous=True,
                                     dashboard_address=None)
        client = await Client(cluster, asynchronous=True)
        await client.submit(fit_chunk, pack_series(series[:50]), kw, pure=False)  # warm the worker
        src = Stream()
        node = src.submit_batches(client, _Fit(kw), pack=pack_series, chunk_size=chunk,
                                  max_in_flight=settings.max_in_flight)
        done = node.sink_to_list()
        t0 = time.perf_counter()
        for i in range(0, len(series), settings.batch_size):
            futures = src._emit(series[i: i + settings.batch_size])
            if futures:
                await asyncio.gather(*futures)
        await node.drain()
        wall = time.perf_counter() - t0
        assert sum(len(chunk) for chunk, _ in done) == len(series)
        await client.close()
        await cluster.close()
        return wall

    rows = []
    for chunk in (int(c) for c in args.chunks.split(",")):
        wall = asyncio.run(through_dask(chunk))
        rows.append({"chunk": chunk, "tasks": -(-len(series) // chunk), "seconds": wall,
                     "overhead": (wall - local) / local})
    res = {"series": len(series), "local_seconds": local, "per_fit_us": local / len(series) * 1e6, "dask": rows}
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{len(series):,} series; local loop {local:.2f} s ({res['per_fit_us']:.0f} us per fit)")
    for r in rows:
        print(f"  chunk {r['chunk']:>5}: {r['tasks']:>6} tasks, {r['seconds']:.2f} s through Dask, "
              f"overhead {r['overhead']:+.0%} of fit time")


if __name__ == "__main__":
    main()
