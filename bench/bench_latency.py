"""Alert latency on Kafka at 10,000 events/s: from the event that closes a window to the alert.

Replays simulated cascades as tweets at a paced rate of about 10,000 events/s into a
real broker (started by ``scripts/kafka.sh`` unless ``$KAFKA_BOOTSTRAP`` is set). The
stages run as deployed: one process each (``tweetoscope collector|estimator|predictor|
learner``, alert threshold 0 so that every window raises one), sharing a two-worker local
Dask cluster, and the generator starts once every stage has joined its consumer group
(``/readyz``). ``--one-process`` runs everything in this process instead (``tweetoscope
run --kafka``, with its own Dask cluster). A warm-up replay of ``--warmup`` seconds at the
same rate, on the same broker and cluster, comes first (``--no-warmup``: measure a cold
start).

The window of a cascade closes at the first event of its source with
``t >= start + T_obs``; the latency of that window's alert is the alert's Kafka
timestamp minus that event's Kafka timestamp (both stamped by their producers on this
machine). Prints the measured rate, p50, p99 and max, and the same per hop.

Usage: python bench/bench_latency.py [--rate 10000] [--seconds 30] [--warmup 15 | --no-warmup] [--one-process] [--no-learner] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import tempfile
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_bench_util import broker, free_port  # noqa: E402


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes, float]]:
    """(key, value, timestamp in s) of every message of ``topic``, partition by partition, in offset order."""
    import confluent_kafka as ck

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    out = []
    for p in parts:
        end = c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1]
        if end == 0:
            continue
        c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)])
        got = 0
        while got < end:
            for m in c.consume(10_000, timeout=1.0):
                if not m.error():
                    out.append((m.key(), m.value(), m.timestamp()[1] / 1000.0))
                    got = m.offset() + 1
    c.close()
    return out


def run_processes(s, data: str, speed: float, scheduler: str) -> None:
    """The stages as separate processes on the Dask cluster ``scheduler``, and the generator; returns once
    the replay is done and the alerts topic has stopped growing, after a SIGTERM to every stage."""
    import os
    import signal
    import subprocess
    import time

    import confluent_kafka as ck

    env = {**os.environ, "TWEETOSCOPE_GROUP_PREFIX": s.group_prefix, "TWEETOSCOPE_ALERT_THRESHOLD": "0",
           "TWEETOSCOPE_PARTITIONS": str(s.partitions), "TWEETOSCOPE_LEARNER_EVERY": str(s.learner_every)}
    base = [sys.executable, "-m", "tweetoscope"]
    common = ["--kafka", s.kafka, "--topic-prefix", s.topic_prefix]
    ports = [free_port() for _ in range(4)]
    stages = [subprocess.Popen(base + [name, *common, "--scheduler", scheduler, "--health-port", str(port)], env=env)
              for name, port in zip(("collector", "estimator", "predictor", "learner"), ports)]
    try:
        for port in ports:  # every stage in its group before the first tweet
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)
        if subprocess.run(base + ["generate", data, *common, "--speed", str(speed)], env=env).returncode:
            raise SystemExit("the generator failed")
        consumer = ck.Consumer({"bootstrap.servers": s.kafka, "group.id": "latency-bench"})
        alerts = ck.TopicPartition(s.topic_prefix + "alerts", 0)
        last, still = -1, 0
        while still < 10:  # the alerts topic unchanged for 5 s: every window done
            end = consumer.get_watermark_offsets(alerts, timeout=10)[1]
            still = still + 1 if end == last else 0
            last = end
            time.sleep(0.5)
        consumer.close()
    finally:
        for p in stages:
            p.send_signal(signal.SIGTERM)
        for p in stages:
            p.wait(120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="events/s to replay at")
    ap.add_argument("--seconds", type=float, default=30, help="about how long the replay lasts")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--no-learner", action="store_true", help="no refits (to isolate their effect)")
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="seconds of warm-up replay at the same rate on the same broker before measuring (default 15)")
    ap.add_argument("--no-warmup", action="store_true", help="measure from a cold start")
    ap.add_argument("--one-process", action="store_true",
                    help="every stage and the generator in this process (tweetoscope run --kafka) instead of one "
                    "process per stage sharing a local Dask cluster (as deployed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from streams.datasets import load_dataset, write_jsonl
    from streams.replay import ReplaySchedule
    from tweetoscope.cli import main as cli
    from tweetoscope.config import Settings
    from tweetoscope.kafka_mode import run_kafka
    from tweetoscope.schemas import ALERTS, CASCADE_PROPERTIES, CASCADE_SERIES, TWEETS, Parameters, Tweet

    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = scratch.name
    n_cascades = int(args.rate * args.seconds / 75)  # about 75 events per simulated cascade
    cli(["simulate", f"{tmp}/data", "--n", str(n_cascades), "--seed", str(args.seed)])
    dataset = load_dataset(f"{tmp}/data")
    schedule = ReplaySchedule(dataset)
    span = float(schedule.t[-1] - schedule.t[0])
    speed = args.rate * span / len(schedule)
    prefix = f"l{uuid.uuid4().hex[:6]}-"
    import contextlib

    import dask
    from distributed import LocalCluster

    dask.config.set({"distributed.scheduler.worker-saturation": 1.0, "distributed.admin.low-level-log-length": 10})
    with broker() as bootstrap, (LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
                                 if (not args.one_process) else contextlib.nullcontext()) as cluster:
        s = Settings(kafka=bootstrap, topic_prefix=prefix, group_prefix=prefix + "g", alert_threshold=0.0,
                     partitions=1, **({"learner_every": 10**9} if args.no_learner else {}))
        if not args.no_warmup:
            # a steady state: the broker's JVM compiled, its group coordinator and producer ids
            # loaded, as on a broker that has been running for a while
            from streams.datasets import Dataset

            warm = s.replace(topic_prefix="w" + prefix, group_prefix="w" + prefix + "g")
            n_warm = int(len(dataset.cascades) * min(1.0, args.warmup / args.seconds))
            warm_data = Dataset(dataset.path, dataset.cascades[:n_warm])
            if (not args.one_process):
                write_jsonl(f"{tmp}/warm.jsonl", warm_data.cascades)
                run_processes(warm, f"{tmp}/warm.jsonl", speed, cluster.scheduler_address)
            else:
                asyncio.run(run_kafka(warm, dataset=warm_data, speed=speed, until_done=True))
        if (not args.one_process):
            run_processes(s, f"{tmp}/data", speed, cluster.scheduler_address)
        else:
            asyncio.run(run_kafka(s, dataset=dataset, speed=speed, until_done=True))
        tweets = read_all(bootstrap, prefix + "tweets")
        alerts = read_all(bootstrap, prefix + "alerts")
        series = read_all(bootstrap, prefix + "cascade_series")
        props = read_all(bootstrap, prefix + "cascade_properties")
    # per source: event times in arrival order, their timestamps, and each cascade's start
    times, stamps, start = defaultdict(list), defaultdict(list), {}
    for key, value, ts in tweets:
        d = TWEETS.decode(value)
        if not hasattr(d, "tweet_id"):
            continue
        src = key.decode()
        times[src].append(d.t)
        stamps[src].append(ts)
        if isinstance(d, Tweet):
            start[str(d.tweet_id)] = (src, d.t)
    running = {src: np.maximum.accumulate(np.array(t)) for src, t in times.items()}  # the source's clock
    serie_ts = {}
    for _, value, ts in series:
        d = CASCADE_SERIES.decode(value)
        serie_ts.setdefault((d.cid, d.T_obs), ts)
    param_ts = {}
    for _, value, ts in props:
        d = CASCADE_PROPERTIES.decode(value)
        if isinstance(d, Parameters):
            param_ts.setdefault((d.cid, d.T_obs), ts)
    lat, hops = [], []
    for _, value, ts in alerts:
        a = ALERTS.decode(value)
        src, t0 = start[a.cid]
        clock = running[src]
        i = bisect.bisect_left(clock, t0 + a.T_obs)
        if i < len(clock):  # windows closed by the end of stream have no closing event
            closing = stamps[src][i]
            lat.append(ts - closing)
            key = (a.cid, a.T_obs)
            hops.append((serie_ts[key] - closing, param_ts[key] - serie_ts[key], ts - param_ts[key]))
    lat = np.array(lat)
    hops = np.array(hops)
    first, last = tweets[0][2], tweets[-1][2]
    res = {"events": len(tweets), "events_per_s": len(tweets) / (last - first), "alerts": len(alerts),
           "measured": int(lat.size), "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
           "max_s": float(lat.max()),
           "hops_p50_s": dict(zip(("collector", "estimator", "predictor"), np.percentile(hops, 50, axis=0).tolist())),
           "hops_p99_s": dict(zip(("collector", "estimator", "predictor"), np.percentile(hops, 99, axis=0).tolist()))}
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{res['events']:,} events at {res['events_per_s']:,.0f} events/s; {res['alerts']:,} alerts, "
          f"{res['measured']:,} closed by an event")
    print(f"latency from the closing event to the alert: p50 {res['p50_s'] * 1000:.0f} ms, "
          f"p99 {res['p99_s'] * 1000:.0f} ms, max {res['max_s'] * 1000:.0f} ms")
    for q in ("p50", "p99"):
        h = res[f"hops_{q}_s"]
        print(f"  {q} by hop: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in h.items()))


if __name__ == "__main__":
    main()
