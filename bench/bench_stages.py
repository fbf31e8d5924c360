"""Per-stage capacity on Kafka: each stage alone against a bare consume + decode loop, in one run.

Simulates ``--cascades`` cascades (``tweetoscope simulate``), posts them as ``tweets`` on a
real broker (started by ``scripts/kafka.sh`` unless ``$KAFKA_BOOTSTRAP`` is set) and runs the
stages one after the other, each alone in this process on the topic the previous one wrote,
so that every stage reads real-looking input. Every rate is measured from the first record
consumed until every input offset is committed, i.e. every output acknowledged and the
stage's state checkpointed to its changelog (as ``bench_kafka_ingest.py`` runs the collector):

- **collector**: ``tweets`` -> ``cascade_series`` + ``cascade_properties`` (sizes): the real
  stage (Kafka source in its consumer group, decode, event-time windows, encoding, the producer
  of its outputs, changelog checkpoints), against a bare ``confluent_kafka.Consumer`` loop
  (``consume()`` and the schema decode of each message, nothing else) on the same topic, in
  ``--rounds`` alternated rounds on one partition (each round on a topic of its own; the median
  ratio is kept), then once on two partitions (the cascades spread over two sources, one per
  partition) read by one instance. Every bare loop has the fetch settings of the stages' sources
  (``kafka_bench_util.STAGE_FETCH``); each collector round also runs one with librdkafka's
  defaults, whose fetch back-off (1 s once 100,000 messages are queued) bounds a fast reader,
  for comparison with earlier figures. The bare loop never asks ``consume()`` for more than is left
  (the last call would wait out its timeout inside the measured time).
- **collector memory**: the same tweets without their end-of-stream messages and with
  ``terminated`` = 10^9 s, so that no cascade ends: (a) through the stage in this process, the
  Python heap it holds afterwards (``tracemalloc``) per 1,000 open cascades and per 1,000 events;
  and the part of it the open cascades hold (the heap freed when they are dropped);
  (b) a ``tweetoscope collector`` process, as deployed: its resident size once in its group,
  after half the tweets and after all of them, the open cascades and events held read from its
  ``/metrics`` (at this size the growth is mostly librdkafka's fetch and produce buffers, and the
  allocator reuses what the first half freed: the heap figures above are the per-event cost).
- **estimator**: ``cascade_series`` (the collector's output above) -> ``cascade_properties``
  (parameters), fits on a local Dask cluster of ``--workers`` workers x 1 thread (the scheduler
  runs in this process, where ``LocalCluster`` puts it), against a bare consume + decode loop.
- **Dask fits per worker-second**: the windows 600/1200/3600 s and the whole cascades (which
  the estimator fits to learn its prior) of the simulated cascades and of the 50 real cascades
  of ``data/seismic-tideh``, shipped to the same cluster in packed chunks as the estimator
  does (each group repeated to take >= ``--min-compute`` worker-seconds): fits / seconds the
  workers spent computing (Dask's task stream), and fits / wall second of the whole cluster.
  Then the fit cost by cascade size (events before ``T_obs``), one fit at a time in this
  process, in bins (at most 400 fits each), with the log-log slope of cost against size.
- **resting size**: a ``tweetoscope estimator`` and a ``tweetoscope predictor`` process, as
  deployed, in their groups with nothing to read: their resident size (each stage's fixed cost).
- **predictor**: ``cascade_properties`` (the collector's sizes and the estimator's
  parameters) -> forecasts, alerts (threshold 0: every forecast is one, the most output),
  stats, samples: records/s and joins/s (a join: a (cid, T_obs) whose size and parameters
  both came in, i.e. a ``stat``), against a bare consume + decode loop; then the Python heap
  per pending join (the parameters alone on a topic of their own, so that none completes), and
  the part of it the join state holds (freed when it is dropped).

CPU: user + system seconds of this process (``psutil``; librdkafka's threads included) over
the measured span, per 1,000 records in; for the estimator also the Dask workers' processes.
The broker's JVM is another process and is not counted. The shape of the datasets (events per
cascade, and how long an event is held by the collector in real time: to its cascade's last
event plus ``terminated``) is printed for sizing memory (docs/scaling.md).

Targets (issues 11, 12): collector >= 0.8 x the bare loop; estimator and predictor each
>= 2 x what they receive when 10,000 events/s enter the collector (from the records per event
measured here).

Usage: python bench/bench_stages.py [--cascades 3000] [--rounds 2] [--workers 2] [--no-two-partitions] [--json]
(about 2 minutes on 2 cores; progress on stderr)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_bench_util import (ROOT, STAGE_FETCH, bare_loop, broker, cpu_seconds, free_port,  # noqa: E402
                              produce_all, run_stage, wait_ready)

WINDOWS = (600, 1200, 3600)
SIZE_BINS = (2, 10, 32, 100, 316, 1000, 3162, 10**9)


_T0 = time.perf_counter()


def phase(what: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def end_count(bootstrap: str, topic: str) -> int:
    from streams.kafka import end_offsets

    return sum(end_offsets({"bootstrap.servers": bootstrap}, [topic]).values())


def collector_process_memory(bootstrap: str, dataset) -> dict:
    """A ``tweetoscope collector`` process (as deployed) with ``terminated`` = 10^9 s: its resident size
    once in its group, and after the dataset's tweets (no end-of-stream) are consumed and committed;
    the open cascades and events held, from its ``/metrics``."""
    import signal
    import subprocess
    import urllib.request

    from streams.kafka import committed_offsets
    from streams.replay import ReplaySchedule
    from tweetoscope.config import Settings
    from tweetoscope.generator import tweet_record_list
    from tweetoscope.kafka_mode import KafkaBus, group_id

    prefix = f"sm{uuid.uuid4().hex[:6]}-"
    s = Settings(kafka=bootstrap, topic_prefix=prefix, group_prefix=prefix + "g", partitions=1)
    KafkaBus(s, None).create_topics()
    port = free_port()
    env = {**os.environ, "TWEETOSCOPE_GROUP_PREFIX": s.group_prefix, "TWEETOSCOPE_PARTITIONS": "1",
           "TWEETOSCOPE_TERMINATED": "1e9"}
    child = subprocess.Popen([sys.executable, "-m", "tweetoscope", "collector", "--kafka", bootstrap, "--topic-prefix",
                              prefix, "--health-port", str(port)], env=env)
    proc = psutil.Process(child.pid)
    try:
        wait_ready(port, child, "collector")
        time.sleep(1.0)
        points = [(proc.memory_info().rss, 0, 0, cpu_seconds(proc))]
        schedule = ReplaySchedule(dataset, sources=1, stagger=s.stagger)
        group = group_id(s, "collector")
        n = 0
        half = len(schedule) // 2
        for lo, hi in ((0, half), (half, len(schedule))):  # two points: the slope leaves fixed buffers out
            records = tweet_record_list(dataset, schedule.batch(lo, hi, last=False))
            for r in records:
                r.topic = prefix + r.topic
            produce_all(bootstrap, records)
            n += len(records)
            while sum(max(v, 0) for v in committed_offsets({"bootstrap.servers": bootstrap}, group,
                                                           prefix + "tweets").values()) < n:
                time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                metrics = dict(line.split() for line in page.read().decode().splitlines()
                               if line.startswith(("tweetoscope_open_cascades ", "tweetoscope_events_held ")))
            points.append((proc.memory_info().rss, int(float(metrics["tweetoscope_open_cascades"])),
                           int(float(metrics["tweetoscope_events_held"])), cpu_seconds(proc)))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(120)
    (rss0, _, _, cpu0), (rss1, c1, e1, _), (rss2, c2, e2, cpu2) = points
    return {"events": n, "open_cascades": c2, "events_held": e2, "rss_ready_mib": rss0 / 2**20,
            "rss_half_mib": rss1 / 2**20, "rss_after_mib": rss2 / 2**20,
            "rss_kib_per_1000_cascades": (rss2 - rss0) / 1024 / c2 * 1000,
            "rss_slope_bytes_per_event": (rss2 - rss1) / (e2 - e1),
            "cpu_s_per_1000": 1000 * (cpu2 - cpu0) / n}


def resting_rss(bootstrap: str, scheduler: str) -> dict:
    """Resident size (MiB) of a ``tweetoscope estimator`` and a ``tweetoscope predictor`` process, as
    deployed, once each is in its group (``/readyz``) with nothing to read: each stage's fixed cost."""
    import signal
    import subprocess

    from tweetoscope.config import Settings
    from tweetoscope.kafka_mode import KafkaBus

    prefix = f"sr{uuid.uuid4().hex[:6]}-"
    KafkaBus(Settings(kafka=bootstrap, topic_prefix=prefix, partitions=1), None).create_topics()
    env = {**os.environ, "TWEETOSCOPE_GROUP_PREFIX": prefix + "g", "TWEETOSCOPE_PARTITIONS": "1"}
    out = {}
    for stage in ("estimator", "predictor"):
        port = free_port()
        child = subprocess.Popen([sys.executable, "-m", "tweetoscope", stage, "--kafka", bootstrap, "--topic-prefix",
                                  prefix, "--health-port", str(port), "--scheduler", scheduler], env=env)
        try:
            wait_ready(port, child, stage)
            time.sleep(2.0)
            out[stage] = psutil.Process(child.pid).memory_info().rss / 2**20
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(120)
    return out


def dataset_shape(dataset, terminated: float) -> dict:
    """Events per cascade, a cascade's duration, and how long an event is held by the collector in real time:
    until its cascade's last event plus ``terminated`` (docs/pipeline.md)."""
    sizes = np.array([c.times.size for c in dataset.cascades])
    last = np.array([float(c.times[-1]) for c in dataset.cascades])
    held = np.concatenate([float(c.times[-1]) - np.asarray(c.times, dtype=np.float64) for c in dataset.cascades])
    return {"cascades": len(sizes), "mean_events": float(sizes.mean()), "median_events": float(np.median(sizes)),
            "mean_duration_s": float(last.mean()), "held_s_per_event": float(terminated + held.mean()),
            "held_s_per_cascade": float(terminated + last.mean())}


def collector_setup(bootstrap: str, dataset, partitions: int, eos: bool = True) -> tuple[object, int]:
    """A topic prefix holding the dataset's tweets on ``partitions`` partitions (cascades spread over as
    many sources, source k on partition k); returns (settings, records)."""
    from streams.replay import ReplaySchedule
    from tweetoscope.config import Settings
    from tweetoscope.generator import tweet_record_list
    from tweetoscope.kafka_mode import KafkaBus

    prefix = f"st{uuid.uuid4().hex[:6]}-"
    s = Settings(kafka=bootstrap, topic_prefix=prefix, group_prefix=prefix + "g", partitions=partitions,
                 sources=partitions, alert_threshold=0.0)
    KafkaBus(s, None).create_topics()
    schedule = ReplaySchedule(dataset, sources=partitions, stagger=s.stagger)
    records = tweet_record_list(dataset, schedule.batch(0, len(schedule), last=eos))
    for r in records:
        r.topic = prefix + r.topic
    produce_all(bootstrap, records, partition_of=lambda r: int(r.key[1:]) % partitions)
    return s, len(records)


def window_tasks(cascades, windows=WINDOWS, finals: bool = True, terminated: float = 7200.0, min_size: int = 2):
    """The series of each cascade's windows (the events before T_obs, if >= min_size) and, with ``finals``,
    of the whole cascade (maximum likelihood, as the estimator learns its prior)."""
    from tweetoscope.collector import final_T_obs
    from tweetoscope.schemas import SerieArrays

    by = defaultdict(list)
    for c in cascades:
        times = np.asarray(c.times, dtype=np.float64)
        marks = np.asarray(c.marks, dtype=np.float64)
        for T in windows:
            k = int(np.searchsorted(times, T))
            if k >= min_size:
                by[T].append(SerieArrays(c.cid, T, times[:k].copy(), marks[:k].copy(), source="s0"))
        if finals and times.size >= min_size:
            by["whole"].append(SerieArrays(c.cid, final_T_obs(float(times[-1]), terminated), times, marks, source="s0",
                                           final=True))
    return by


async def dask_rates(client, n_workers: int, tasks_by_window: dict, fit_kwargs: dict, min_compute: float = 1.5) -> dict:
    """Fits per worker-second (Dask task-stream compute time) for each group of series; each group is
    shipped ``repeat`` times so that it takes >= ``min_compute`` worker-seconds (estimated locally)."""
    from distributed import get_task_stream

    from tweetoscope.estimator import _Fit, fit_chunk, pack_series

    fit = _Fit(fit_kwargs)
    out = {}
    first = next(iter(tasks_by_window.values()))
    fit_chunk(pack_series(first[:20]), fit_kwargs)  # load the compiled likelihood here first
    for name, tasks in tasks_by_window.items():
        t = time.perf_counter()
        fit_chunk(pack_series(tasks[:200]), fit_kwargs)
        est = (time.perf_counter() - t) / min(len(tasks), 200) * len(tasks)
        repeat = max(1, int(np.ceil(min_compute / max(est, 1e-6))))
        series = tasks * repeat
        chunk = max(64, min(8192, int(np.ceil(len(series) / (4 * n_workers)))))
        chunks = [pack_series(series[i:i + chunk]) for i in range(0, len(series), chunk)]
        async with get_task_stream(client) as ts:
            t0 = time.perf_counter()
            futures = [client.submit(fit, c, pure=False) for c in chunks]
            results = await client.gather(futures)
            wall = time.perf_counter() - t0
        compute = sum(ss["stop"] - ss["start"] for task in ts.data for ss in task["startstops"]
                      if ss["action"] == "compute")
        errors = sum(len(r.errors) for r in results)
        n_obs = np.array([s.times.size for s in tasks])
        out[str(name)] = {"series": len(tasks), "repeat": repeat, "tasks": len(chunks),
                          "median_events": float(np.median(n_obs)), "mean_events": float(n_obs.mean()),
                          "fits_per_worker_s": len(series) / compute,
                          "fits_per_s_wall": len(series) / wall, "workers": n_workers, "errors": errors}
    return out


def size_growth(tasks: list, fit_kwargs: dict, per_bin: int = 400, seed: int = 0) -> list[dict]:
    """Seconds per fit by events before T_obs, one fit at a time in this process (at most ``per_bin`` per bin)."""
    import warnings

    from estimators import ConvergenceWarning, fit_cascade

    rng = np.random.default_rng(seed)
    n = np.array([s.times.size for s in tasks])
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for lo, hi in zip(SIZE_BINS, SIZE_BINS[1:]):
            idx = np.flatnonzero((n >= lo) & (n < hi))
            if idx.size == 0:
                continue
            idx = rng.choice(idx, size=min(per_bin, idx.size), replace=False)
            spent, events = 0.0, 0
            for i in idx:
                s = tasks[i]
                kw = {**fit_kwargs, "kernel": "exp", "prior": None} if s.final else fit_kwargs
                t0 = time.perf_counter()
                try:
                    fit_cascade(s.times, s.marks, s.T_obs, **kw)
                except ValueError:
                    pass
                spent += time.perf_counter() - t0
                events += s.times.size
            rows.append({"events_lo": int(lo), "events_hi": int(hi) if hi < 10**9 else None, "fits": int(idx.size),
                         "mean_events": events / idx.size, "us_per_fit": 1e6 * spent / idx.size,
                         "us_per_event": 1e6 * spent / events})
    x = np.log([r["mean_events"] for r in rows])
    y = np.log([r["us_per_fit"] for r in rows])
    slope = float(np.polyfit(x, y, 1)[0]) if len(rows) >= 2 else float("nan")
    return rows, slope


async def main_async(args) -> dict:
    import dask

    from streams.datasets import load_dataset
    from tweetoscope.cli import main as cli
    from tweetoscope.tuning import tune_process
    from tweetoscope.estimator import decode_series
    from tweetoscope.pipeline import start_dask
    from tweetoscope.schemas import CASCADE_PROPERTIES, CASCADE_SERIES, TWEETS
    from streams.records import Record

    tune_process()  # each stage runs here as its `tweetoscope STAGE` command runs it
    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = scratch.name
    cli(["simulate", f"{tmp}/data", "--n", str(args.cascades), "--seed", str(args.seed)])
    dataset = load_dataset(f"{tmp}/data")
    real = load_dataset(str(ROOT / "data" / "seismic-tideh"))
    res: dict = {"cascades": len(dataset.cascades), "loadavg_start": os.getloadavg()[0]}
    import tweetoscope.predictor  # noqa: F401  (scikit-learn, skops: 3 s of imports, not the predictor's rate)

    phase("simulated; starting the broker")
    with broker() as bootstrap:
        phase("broker up")
        # ---------------------------------------------------------------- collector
        col: dict = {"rounds_1p": []}
        for k in range(args.rounds):  # alternated: bare loop, stage, each round on a topic of its own
            s1, n1 = collector_setup(bootstrap, dataset, 1)
            phase(f"tweets loaded (1 partition), round {k + 1}")
            defaults = bare_loop(bootstrap, s1.topic_prefix + "tweets", n1, TWEETS.decode)
            bare = bare_loop(bootstrap, s1.topic_prefix + "tweets", n1, TWEETS.decode, STAGE_FETCH)
            stage = await run_stage(s1, "collector", "tweets", n1)
            col["rounds_1p"].append({"bare": bare, "stage": stage, "ratio": stage["per_s"] / bare["per_s"],
                                     "bare_librdkafka_defaults": defaults})
            phase(f"collector, 1 partition, round {k + 1}")
        res["events"] = n1
        mid = sorted(col["rounds_1p"], key=lambda r: r["ratio"])[(len(col["rounds_1p"]) - 1) // 2]
        col["bare_1p"], col["stage_1p"], col["ratio_1p"] = mid["bare"], mid["stage"], mid["ratio"]
        if not args.no_two_partitions:
            s2, n2 = collector_setup(bootstrap, dataset, 2)
            col["bare_2p"] = bare_loop(bootstrap, s2.topic_prefix + "tweets", n2, TWEETS.decode, STAGE_FETCH)
            col["stage_2p"] = await run_stage(s2, "collector", "tweets", n2)
            col["ratio_2p"] = col["stage_2p"]["per_s"] / col["bare_2p"]["per_s"]
            phase("collector, 2 partitions")
        sm, nm = collector_setup(bootstrap, dataset, 1, eos=False)
        col["memory"] = await run_stage(sm.replace(terminated=1e9), "collector", "tweets", nm, memory=True)
        phase("collector, memory (heap)")
        col["process_memory"] = collector_process_memory(bootstrap, dataset)
        phase("collector, memory (a collector process)")
        n_series = end_count(bootstrap, s1.topic_prefix + "cascade_series")
        n_sizes = end_count(bootstrap, s1.topic_prefix + "cascade_properties")
        col["series_per_event"] = n_series / n1
        col["sizes_per_event"] = n_sizes / n1
        res["collector"] = col
        res["datasets"] = {"simulated": dataset_shape(dataset, s1.terminated), "real": dataset_shape(real, s1.terminated)}

        # ---------------------------------------------------------------- estimator
        dask.config.set({"distributed.admin.low-level-log-length": 10})
        est_settings = s1.replace(dask_workers=args.workers, dask_min_workers=args.workers)
        client, cluster = await start_dask(est_settings)
        try:
            workers = [psutil.Process(p.process.pid) for p in cluster.workers.values()]
            est = {"workers": args.workers,
                   "bare": bare_loop(bootstrap, s1.topic_prefix + "cascade_series", n_series, CASCADE_SERIES.decode,
                                     STAGE_FETCH)}
            est["stage"] = await run_stage(est_settings, "estimator", "cascade_series", n_series, client=client,
                                           workers=workers)
            est["ratio"] = est["stage"]["per_s"] / est["bare"]["per_s"]
            res["estimator"] = est
            phase("estimator")
            # in a thread: the scheduler runs on this event loop, which must go on serving it
            res["resting_rss_mib"] = await asyncio.get_running_loop().run_in_executor(
                None, resting_rss, bootstrap, cluster.scheduler_address)
            phase("estimator and predictor processes at rest")

            # ------------------------------------------------ Dask fits per worker-second, growth with size
            fit_kwargs = est_settings.fit_kwargs()
            from streams.kafka import read_topic

            raw = [Record("cascade_series", m.value()) for m in
                   read_topic({"bootstrap.servers": bootstrap}, s1.topic_prefix + "cascade_series")]
            sim_series, _ = decode_series(raw)
            est["events_per_series"] = float(np.mean([x.times.size for x in sim_series]))
            sim_by = defaultdict(list)
            for s in sim_series:
                sim_by["whole" if s.final else s.T_obs].append(s)
            sim_by = {k: sim_by[k] for k in (*WINDOWS, "whole") if sim_by.get(k)}
            real_by = window_tasks(real.cascades)
            res["dask_fits"] = {"simulated": await dask_rates(client, args.workers, sim_by, fit_kwargs, args.min_compute),
                                "real": await dask_rates(client, args.workers, real_by, fit_kwargs, args.min_compute)}
        finally:
            await client.close()
            await cluster.close()
        phase("Dask fits per worker-second")
        everything = [s for v in sim_by.values() for s in v] + [s for v in real_by.values() for s in v]
        rows, slope = size_growth(everything, fit_kwargs)
        res["fit_cost_by_size"] = {"bins": rows, "loglog_slope": slope}

        phase("fit cost by size")
        # ---------------------------------------------------------------- predictor
        n_props = end_count(bootstrap, s1.topic_prefix + "cascade_properties")
        pred = {"bare": bare_loop(bootstrap, s1.topic_prefix + "cascade_properties", n_props,
                                  CASCADE_PROPERTIES.decode, STAGE_FETCH)}
        pred["stage"] = await run_stage(s1, "predictor", "cascade_properties", n_props)
        joins = pred["stage"]["outputs"].get("stats", 0)
        pred["joins"] = joins
        pred["joins_per_s"] = joins / pred["stage"]["seconds"]
        pred["ratio"] = pred["stage"]["per_s"] / pred["bare"]["per_s"]
        pred["props_per_event"] = n_props / n1
        pred["joins_per_event"] = joins / n1
        # pending joins: the parameters alone (their sizes never come), on a topic of their own
        from streams.kafka import read_topic
        from tweetoscope.schemas import Parameters

        sp = s1.replace(topic_prefix=f"sp{uuid.uuid4().hex[:6]}-")
        sp = sp.replace(group_prefix=sp.topic_prefix + "g")
        from tweetoscope.kafka_mode import KafkaBus

        KafkaBus(sp, None).create_topics()
        params = [Record(sp.topic_prefix + "cascade_properties", m.value(), m.key()) for m in
                  read_topic({"bootstrap.servers": bootstrap}, s1.topic_prefix + "cascade_properties")
                  if isinstance(CASCADE_PROPERTIES.decode(m.value()), Parameters)]
        produce_all(bootstrap, params)
        pred["memory"] = await run_stage(sp, "predictor", "cascade_properties", len(params), memory=True)
        res["predictor"] = pred
        phase("predictor")

    # ---------------------------------------------------------------- targets
    rate = 10_000
    need_series = rate * col["series_per_event"]
    need_props = rate * pred["props_per_event"]
    need_joins = rate * pred["joins_per_event"]
    res["targets"] = {
        "collector_ratio_ge_0.8": col["ratio_1p"] >= 0.8,
        "series_per_s_at_10k": need_series, "estimator_headroom": est["stage"]["per_s"] / need_series,
        "estimator_ge_2x": est["stage"]["per_s"] >= 2 * need_series,
        "properties_per_s_at_10k": need_props, "joins_per_s_at_10k": need_joins,
        "predictor_headroom": pred["stage"]["per_s"] / need_props,
        "predictor_ge_2x": pred["stage"]["per_s"] >= 2 * need_props,
    }
    res["loadavg_end"] = os.getloadavg()[0]
    return res


def report(res: dict) -> None:
    col, est, pred, t = res["collector"], res["estimator"], res["predictor"], res["targets"]
    print(f"{res['cascades']:,} simulated cascades, {res['events']:,} tweets; load average {res['loadavg_start']:.2f} "
          f"at start, {res['loadavg_end']:.2f} at end")
    print("\ncollector (tweets -> cascade_series, cascade_properties sizes), one instance:")
    for k, r in enumerate(col["rounds_1p"]):
        print(f"  1 partition, round {k + 1}: bare {r['bare']['per_s']:,.0f} events/s, collector {r['stage']['per_s']:,.0f} "
              f"events/s, ratio {r['ratio']:.2f} (bare loop with librdkafka's defaults "
              f"{r['bare_librdkafka_defaults']['per_s']:,.0f} events/s, ratio "
              f"{r['stage']['per_s'] / r['bare_librdkafka_defaults']['per_s']:.2f})")
    for p in ("1p", "2p"):
        if f"stage_{p}" not in col:
            continue
        b, s = col[f"bare_{p}"], col[f"stage_{p}"]
        print(f"  {p[0]} partition(s): bare consume + decode {b['per_s']:,.0f} events/s ({b['cpu_s_per_1000']:.4f} CPU s "
              f"/ 1,000), collector {s['per_s']:,.0f} events/s ({s['cpu_s_per_1000']:.4f} CPU s / 1,000): "
              f"ratio {col[f'ratio_{p}']:.2f}")
    m = col["memory"]
    print(f"  memory, {m['open_cascades']:,} cascades held open ({m['events_held']:,} events): Python heap "
          f"{m['heap_bytes'] / 2**20:.1f} MiB = {m['heap_kib_per_1000_cascades']:,.0f} KiB per 1,000 cascades "
          f"({m['heap_kib_per_1000_events']:.1f} KiB per 1,000 events), of which the cascades themselves "
          f"{m['state_kib_per_1000_cascades']:,.0f} KiB per 1,000 = {m['state_bytes_per_event']:.0f} bytes per event")
    pm = col["process_memory"]
    print(f"  a `tweetoscope collector` process, {pm['open_cascades']:,} cascades held open ({pm['events_held']:,} "
          f"events): RSS {pm['rss_ready_mib']:.0f} MiB in its group, {pm['rss_half_mib']:.0f} MiB at half, "
          f"{pm['rss_after_mib']:.0f} MiB at the end (librdkafka's buffers included): {pm['rss_kib_per_1000_cascades']:,.0f} KiB "
          f"per 1,000 cascades; "
          f"{pm['cpu_s_per_1000']:.4f} CPU s / 1,000 events (no cascade ends: no sizes, no final series)")
    print(f"  outputs per event: {col['series_per_event']:.4f} series, {col['sizes_per_event']:.4f} sizes")
    for kind, d in res["datasets"].items():
        print(f"  {kind} cascades: {d['mean_events']:,.0f} events on average (median {d['median_events']:,.0f}), "
              f"{d['mean_duration_s']:,.0f} s long; in real time an event is held {d['held_s_per_event']:,.0f} s on "
              f"average (to its cascade's last event + terminated), a cascade {d['held_s_per_cascade']:,.0f} s")
    print(f"\nestimator (cascade_series -> parameters), fits on {est['workers']} Dask workers x 1 thread:")
    print(f"  bare consume + decode {est['bare']['per_s']:,.0f} series/s; estimator {est['stage']['per_s']:,.0f} series/s "
          f"(ratio {est['ratio']:.2f}; {est['events_per_series']:.0f} events per series); CPU per 1,000 series: stage process {est['stage']['cpu_s_per_1000']:.3f} s "
          f"(Dask scheduler included), workers {est['stage']['worker_cpu_s_per_1000']:.3f} s")
    print("  Dask fits per worker-second (task-stream compute time; wall-clock rate of the whole cluster):")
    for kind, rows in res["dask_fits"].items():
        for name, r in rows.items():
            print(f"    {kind:9} {name:>5}: {r['series']:>5} series x{r['repeat']:<3} median {r['median_events']:>6,.0f} "
                  f"events: {r['fits_per_worker_s']:>9,.0f} fits/worker-s ({r['fits_per_s_wall']:,.0f} fits/s wall)")
    g = res["fit_cost_by_size"]
    print(f"  fit cost by events before T_obs (one process; log-log slope {g['loglog_slope']:.2f}):")
    for r in g["bins"]:
        hi = f"{r['events_hi'] - 1:,}" if r["events_hi"] else "+"
        print(f"    {r['events_lo']:>5,}-{hi:<6} {r['fits']:>4} fits, mean {r['mean_events']:>7,.0f} events: "
              f"{r['us_per_fit']:>9,.0f} us/fit, {r['us_per_event']:.2f} us/event")
    rr = res["resting_rss_mib"]
    print(f"\nresident size at rest (in its group, nothing to read): estimator process {rr['estimator']:.0f} MiB, "
          f"predictor process {rr['predictor']:.0f} MiB")
    print("\npredictor (cascade_properties -> forecasts, alerts, stats, samples):")
    print(f"  bare consume + decode {pred['bare']['per_s']:,.0f} records/s; predictor {pred['stage']['per_s']:,.0f} "
          f"records/s = {pred['joins_per_s']:,.0f} joins/s (ratio {pred['ratio']:.2f}); CPU "
          f"{pred['stage']['cpu_s_per_1000']:.3f} s per 1,000 records")
    pm = pred["memory"]
    print(f"  {pm['pending_joins']:,} joins pending (parameters without their sizes): Python heap "
          f"{pm['heap_bytes'] / 2**20:.1f} MiB = {pm['heap_kib_per_1000_joins']:,.0f} KiB per 1,000 pending joins, of which "
          f"the join state itself {pm['state_bytes_per_join']:,.0f} bytes per join")
    print("\ntargets at 10,000 events/s into the collector:")
    print(f"  collector >= 0.8 x bare loop: {col['ratio_1p']:.2f} -> {'met' if t['collector_ratio_ge_0.8'] else 'NOT met'}")
    print(f"  estimator: needs {t['series_per_s_at_10k']:,.0f} series/s, has {est['stage']['per_s']:,.0f}: headroom "
          f"{t['estimator_headroom']:.1f}x -> {'met' if t['estimator_ge_2x'] else 'NOT met'} (>= 2x)")
    print(f"  predictor: needs {t['properties_per_s_at_10k']:,.0f} records/s ({t['joins_per_s_at_10k']:,.0f} joins/s), "
          f"has {pred['stage']['per_s']:,.0f}: headroom {t['predictor_headroom']:.1f}x -> "
          f"{'met' if t['predictor_ge_2x'] else 'NOT met'} (>= 2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (1 thread each) of the estimator")
    ap.add_argument("--min-compute", type=float, default=1.5,
                    help="worker-seconds of fits per group in the fits-per-worker-second measure")
    ap.add_argument("--rounds", type=int, default=2, help="alternated bare-loop / collector rounds on one partition")
    ap.add_argument("--no-two-partitions", action="store_true", help="skip the collector on two partitions")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import logging

    import distributed  # noqa: F401  (sets its loggers' levels: ours go after)

    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message="Sending large graph")  # packed chunks travel as task arguments
    for name in ("distributed", "tweetoscope", "streams"):
        logging.getLogger(name).setLevel(logging.WARNING)
    res = asyncio.run(main_async(args))
    if args.json:
        print(orjson.dumps(res, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        report(res)


if __name__ == "__main__":
    main()
