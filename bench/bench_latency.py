"""Alert latency on Kafka at 10,000 events/s: from the event that closes a window to the alert.

Replays simulated cascades as tweets at a paced rate of about 10,000 events/s into a
real broker (started by ``scripts/kafka.sh`` unless ``$KAFKA_BOOTSTRAP`` is set), with
every stage running on it (``tweetoscope run --kafka``: its own local Dask cluster), after
a short warm-up replay on the same broker (``--no-warmup`` to measure a cold broker) (``tweetoscope run --kafka``, alert threshold 0 so that every
window raises one). The window of a cascade closes at the first event of its source
with ``t >= start + T_obs``; the latency of that window's alert is the alert's Kafka
timestamp minus that event's Kafka timestamp (both stamped by their producers on this
machine). Prints the measured rate, p50, p99 and max.

Usage: python bench/bench_latency.py [--rate 10000] [--seconds 30] [--no-warmup] [--no-learner] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_bench_util import broker  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="events/s to replay at")
    ap.add_argument("--seconds", type=float, default=30, help="about how long the replay lasts")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--no-learner", action="store_true", help="no refits (to isolate their effect)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="measure from a cold start (no warm-up replay on the same broker and Dask cluster first)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from streams.datasets import load_dataset
    from streams.replay import ReplaySchedule
    from tweetoscope.cli import main as cli
    from tweetoscope.config import Settings
    from tweetoscope.kafka_mode import run_kafka
    from tweetoscope.schemas import ALERTS, CASCADE_PROPERTIES, CASCADE_SERIES, TWEETS, Parameters, Tweet

    tmp = tempfile.mkdtemp(prefix="tweetoscope-bench-")
    n_cascades = int(args.rate * args.seconds / 75)  # about 75 events per simulated cascade
    cli(["simulate", f"{tmp}/data", "--n", str(n_cascades), "--seed", str(args.seed)])
    dataset = load_dataset(f"{tmp}/data")
    schedule = ReplaySchedule(dataset)
    span = float(schedule.t[-1] - schedule.t[0])
    speed = args.rate * span / len(schedule)
    prefix = f"l{uuid.uuid4().hex[:6]}-"
    with broker() as bootstrap:
        s = Settings(kafka=bootstrap, topic_prefix=prefix, group_prefix=prefix + "g", alert_threshold=0.0,
                     partitions=1, **({"learner_every": 10**9} if args.no_learner else {}))
        if not args.no_warmup:
            # a steady state: the broker's group coordinator and producer ids loaded, as on a
            # broker that has been running for a while
            from streams.datasets import Dataset

            warm = s.replace(topic_prefix="w" + prefix, group_prefix="w" + prefix + "g")
            asyncio.run(run_kafka(warm, dataset=Dataset(dataset.path, dataset.cascades[:300]), until_done=True))
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
