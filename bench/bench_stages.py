"""Each stage on Kafka against a bare consume + decode loop of its own input, in one run; the
figures of the capacity plan (docs/scaling.md).

Simulates cascades, produces their tweets to a topic of a real broker (started by
``scripts/kafka.sh`` unless ``$KAFKA_BOOTSTRAP`` is set), then runs the stages one after the
other, each alone in this process as ``tweetoscope <stage>`` runs it, on the whole backlog of
its input topic: the collector on ``tweets``, the estimator on the series the collector wrote
(its fits on a local Dask cluster of ``--workers`` one-thread worker processes), the predictor
on the sizes and parameters, the learner on the samples. For each:

- the bare loop: a ``confluent_kafka.Consumer`` reading the same topic and decoding every
  message with the project's schema, nothing else (records/s);
- the stage: from its first record consumed until every input offset is committed (so every
  output acknowledged): records/s, events/s of the original stream, CPU seconds per 1,000
  events (this process and, for the Dask stages, the workers), and the growth of the
  resident size.

Then, without Kafka: the memory the collector's windows hold per 1,000 open cascades (tracemalloc),
and fits per worker-second by window and cascade size, on simulated and on the shipped real
cascades (``estimators.fit_cascade``, the work of one Dask task's inner loop).

Usage: python bench/bench_stages.py [--cascades 6000] [--workers 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_bench_util import ROOT, broker, produce_all  # noqa: E402

#: (stage, its input topic) in pipeline order: each runs on what the previous one wrote.
STAGES = (("collector", "tweets"), ("estimator", "cascade_series"), ("predictor", "cascade_properties"),
          ("learner", "samples"))


def bare_loop(config: dict, topic: str, n: int) -> float:
    """Records/s of a bare consumer reading ``n`` records of ``topic`` and decoding each with its schema."""
    import confluent_kafka as ck

    from tweetoscope.schemas import TOPICS

    decode = TOPICS[topic.split("-", 1)[1]].decode
    c = ck.Consumer({**config, "group.id": f"bare-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
    c.subscribe([topic])
    seen, t0 = 0, None
    while seen < n:
        msgs = c.consume(10_000, timeout=1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if not m.error():
                decode(m.value())
                seen += 1
    rate = n / (time.perf_counter() - t0)
    c.close()
    return rate


async def stage_run(s, stage: str, topic: str, n: int, workers: list[psutil.Process]) -> dict:
    """Run ``stage`` in this process on the backlog of ``topic`` (``n`` records) until all is committed."""
    from tornado.ioloop import IOLoop

    from tweetoscope.kafka_mode import KafkaBus
    from tweetoscope.pipeline import build_stages

    client = None
    if stage in ("estimator", "learner"):
        from distributed import Client

        client = await Client(s.scheduler, asynchronous=True)
    bus = KafkaBus(s, IOLoop.current())
    bus.use_stores(build_stages(bus.topic, bus.publish, s, client, stages=(stage,)))
    me = psutil.Process()
    rss0 = me.memory_info().rss
    bus.start()
    source = bus.by_topic[topic]
    t0 = cpu0 = None
    while True:
        await asyncio.sleep(0.05)
        if t0 is None and source.n_consumed:
            t0, cpu0 = time.perf_counter(), _cpu(me, workers)
        if t0 is not None and source.n_consumed >= n:
            source.request_checkpoint()  # the last one now rather than at the end of the interval
            if await bus.quiet():
                break
    seconds, cpu = time.perf_counter() - t0, _cpu(me, workers) - cpu0
    rss = me.memory_info().rss
    await bus.drain(30)
    for sink in bus.sinks:
        sink.destroy()
    if client is not None:
        await client.close()
    return {"records": n, "seconds": seconds, "records_per_s": n / seconds, "cpu_seconds": cpu,
            "rss_growth_mib": (rss - rss0) / 2**20}


def _cpu(me: psutil.Process, workers: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in (me, *workers))


def open_cascade_memory(n_cascades: int = 20_000, events_each: int = 20) -> dict:
    """Bytes the collector's windows hold per open cascade and per event held (tracemalloc)."""
    import tracemalloc

    from streamz import Stream

    from streams.window import Events
    from tweetoscope.config import Settings

    s = Settings()
    src = Stream()
    node = src.cascade_windows(s.windows, s.terminated)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for b, start in enumerate(range(0, n_cascades, 1000)):  # 1,000 cascades a batch, all in the first window
        ks = range(start, start + 1000)
        keys = [str(k) for _ in range(events_each) for k in ks]  # the roots first, then one retweet each, ...
        roots = [j == 0 for j in range(events_each) for _ in ks]
        t = [b * 10.0 + j * 0.4 + i * 3e-4 for j in range(events_each) for i in range(1000)]  # non-decreasing
        info = [f"post {k}" if r else None for k, r in zip(keys, roots)]
        src.emit(Events(["s0"] * len(keys), keys, t, rng.pareto(2.4, len(keys)).tolist(), roots, info,
                        [None] * len(keys), (), [0] * len(keys), list(range(len(keys)))))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert node.open_cascades == n_cascades, node.open_cascades
    return {"open_cascades": n_cascades, "events_held": node.events_held,
            "bytes_per_1000_cascades": held / n_cascades * 1000, "bytes_per_event": held / node.events_held}


def fit_costs(datasets: dict, settings, bins=(0, 30, 100, 300, 1000, 10**9)) -> list[dict]:
    """Fits per second of one worker thread, by dataset, window and observed size (n_obs) bin."""
    from estimators import fit_cascade

    out = []
    kw = settings.fit_kwargs()
    for name, ds in datasets.items():
        for T in settings.windows:
            cost = {b: [0, 0.0] for b in bins[:-1]}
            for c in ds.cascades:
                n = int(np.searchsorted(c.times, T))
                if n < 2:
                    continue
                b = bins[int(np.searchsorted(bins, n, side="right")) - 1]
                t0 = time.perf_counter()
                fit_cascade(c.times[:n], c.marks[:n], float(T), **kw)
                cost[b][0] += 1
                cost[b][1] += time.perf_counter() - t0
            for lo, (k, sec) in cost.items():
                if k:
                    hi = bins[bins.index(lo) + 1]
                    out.append({"data": name, "T_obs": T, "n_obs": f"{lo + 1 if lo else 2}-{hi if hi < 10**9 else ''}",
                                "fits": k, "fits_per_worker_s": k / sec, "ms_per_fit": sec / k * 1e3})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="Dask worker processes (one thread each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from streams.datasets import load_dataset
    from streams.kafka import end_offsets
    from streams.replay import ReplaySchedule
    from tweetoscope.cli import main as cli
    from tweetoscope.config import Settings
    from tweetoscope.generator import tweet_records
    from tweetoscope.kafka_mode import KafkaBus

    tmp = tempfile.mkdtemp(prefix="tweetoscope-bench-")
    cli(["simulate", f"{tmp}/data", "--n", str(args.cascades), "--seed", str(args.seed)])
    dataset = load_dataset(f"{tmp}/data")
    schedule = ReplaySchedule(dataset)
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    res: dict = {"cascades": args.cascades, "workers": args.workers, "stages": {}}
    with broker() as bootstrap, LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None) as cluster:
        with Client(cluster) as c:
            workers = [psutil.Process(pid) for pid in c.run(os.getpid).values()]
        s = Settings(kafka=bootstrap, topic_prefix=prefix, partitions=1, scheduler=cluster.scheduler_address,
                     group_prefix=f"{prefix}g")
        KafkaBus(s, None).create_topics()
        records = tweet_records(dataset, schedule.batch(0, len(schedule), last=True))
        for r in records:
            r.topic = prefix + r.topic
        produce_all(bootstrap, records)
        events = len(records)
        res["events"] = events
        for stage, topic in STAGES:
            n = sum(end_offsets(s.kafka_config(), [prefix + topic]).values())
            base = bare_loop(s.kafka_config(), prefix + topic, n)
            run = asyncio.run(stage_run(s, stage, topic, n, workers if stage in ("estimator", "learner") else []))
            run.update(bare_records_per_s=base, ratio=run["records_per_s"] / base, per_event=n / events,
                       events_per_s=run["records_per_s"] * events / n,
                       cpu_ms_per_1000_events=run["cpu_seconds"] / events * 1e6)
            res["stages"][stage] = run
            print(f"{stage:9s} {n:>9,} {topic} records: {run['records_per_s']:>9,.0f}/s = "
                  f"{run['events_per_s']:>9,.0f} events/s; bare loop {base:>9,.0f}/s (ratio {run['ratio']:.2f}); "
                  f"CPU {run['cpu_ms_per_1000_events']:.0f} ms per 1,000 events; RSS +{run['rss_growth_mib']:.0f} MiB",
                  file=sys.stderr, flush=True)
    res["open_cascades"] = open_cascade_memory()
    real = load_dataset(ROOT / "data" / "seismic-tideh")
    res["fits"] = fit_costs({"simulated": dataset, "real": real}, Settings())
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{events:,} events ({args.cascades:,} simulated cascades) on one partition, {args.workers} Dask worker(s)")
    print(f"{'stage':9s} {'input':>18s} {'per event':>9s} {'records/s':>10s} {'events/s':>10s} {'bare/s':>10s} "
          f"{'ratio':>5s} {'CPU ms/1k ev':>12s} {'RSS +MiB':>8s}")
    for stage, topic in STAGES:
        r = res["stages"][stage]
        print(f"{stage:9s} {topic:>18s} {r['per_event']:9.3f} {r['records_per_s']:10,.0f} {r['events_per_s']:10,.0f} "
              f"{r['bare_records_per_s']:10,.0f} {r['ratio']:5.2f} {r['cpu_ms_per_1000_events']:12.0f} "
              f"{r['rss_growth_mib']:8.0f}")
    m = res["open_cascades"]
    print(f"collector windows: {m['bytes_per_1000_cascades'] / 2**20:.2f} MiB per 1,000 open cascades "
          f"({m['bytes_per_event']:.0f} bytes per event held; {m['open_cascades']:,} cascades of "
          f"{m['events_held'] // m['open_cascades']} events)")
    print(f"{'data':9s} {'T_obs':>6s} {'n_obs':>9s} {'fits':>6s} {'fits/worker-s':>13s} {'ms/fit':>7s}")
    for f in res["fits"]:
        print(f"{f['data']:9s} {f['T_obs']:6d} {f['n_obs']:>9s} {f['fits']:6d} {f['fits_per_worker_s']:13,.0f} "
              f"{f['ms_per_fit']:7.2f}")


if __name__ == "__main__":
    main()
