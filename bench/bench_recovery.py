"""Recovery bounded by the checkpoint interval: commit lag, restore time, duplicates after kill -9.

Three measurements on a real broker (``$KAFKA_BOOTSTRAP`` or one started by scripts/kafka.sh):

1. **Commit lag.** A ``tweetoscope collector`` process reads a paced stream of short cascades
   plus ONE long cascade that gets a retweet every 3,000 s of event time (the case that used to
   hold every commit back for the whole run). Every 0.25 s the bench samples the topic's end
   offset and the collector group's committed offset; the lag of a sample is the wall time since
   the end offset first reached the committed offset. Printed: the lag's median and maximum, and
   their ratio to the checkpoint interval (target: <= 2).
2. **Restore.** 100,000 open cascades (10 events each) are checkpointed to a changelog topic
   with the collector's own code, then restored as a collector does on assignment (read the
   changelog partition to its end, rebuild the state). Printed: seconds (target <= 10), and the
   ratio to a bare read of the same changelog in the same run.
3. **Duplicates after kill -9.** The collector is killed with SIGKILL mid-stream and restarted;
   printed: outputs written twice, against the outputs written in the last checkpoint interval
   (plus the slack of one commit) before the kill (target: ratio <= 1).

Usage: python bench/bench_recovery.py [--interval 2] [--cascades 6000] [--speed 1000] [--json]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kafka_bench_util import ROOT, broker  # noqa: E402


def long_cascade_data(path: Path, n: int, seed: int = 0) -> float:
    """``n`` short cascades (20 retweets within 600 s), one every 5 s, and one cascade with a retweet
    every 3,000 s over the whole span; returns the span in event seconds."""
    from streams.datasets import Cascade, write_jsonl

    rng = np.random.default_rng(seed)
    span = 5.0 * n + 600
    cascades = [Cascade(cid="long", times=np.arange(0.0, span, 3000.0), marks=np.full(int(np.ceil(span / 3000)), 50.0),
                        start=1.0, msg="long")]
    for i in range(n):
        t = np.concatenate([[0.0], np.sort(rng.uniform(0, 600, 20))])
        cascades.append(Cascade(cid=f"c{i}", times=t, marks=rng.pareto(1.4, t.size) * 10 + 10, start=5.0 * i + 2,
                                msg=f"c{i}"))
    write_jsonl(path, cascades)
    return span


def stage(name: str, bootstrap: str, prefix: str, interval: float, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TWEETOSCOPE_CHECKPOINT_INTERVAL": str(interval), "TWEETOSCOPE_TERMINATED": "3600",
           "TWEETOSCOPE_PARTITIONS": "1"}
    cmd = [sys.executable, "-m", "tweetoscope", name, "--kafka", bootstrap, "--topic-prefix", prefix, *extra]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def commit_lag(bootstrap: str, data: Path, speed: float, interval: float, kill_at: float | None = None) -> dict:
    """Run a collector on a paced replay of ``data``; sample the commit lag (and kill -9 it at ``kill_at`` s)."""
    import confluent_kafka as ck

    from streams.kafka import committed_offsets
    from tweetoscope.config import Settings
    from tweetoscope.kafka_mode import KafkaBus, group_id

    prefix = f"r{uuid.uuid4().hex[:6]}-"
    s = Settings(kafka=bootstrap, topic_prefix=prefix, partitions=1)
    KafkaBus(s, None).create_topics()
    collector = stage("collector", bootstrap, prefix, interval, "--instance-id", "c1")
    gen = stage("generate", bootstrap, prefix, interval, str(data), "--speed", str(speed))
    probe = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    tp = ck.TopicPartition(prefix + "tweets", 0)
    reached: list[tuple[float, int]] = []  # (wall time, end offset), increasing
    lags, killed = [], None
    start = time.time()
    while gen.poll() is None or (reached and committed_offsets(bootstrap, group_id(s, "collector"),
                                                               prefix + "tweets").get(0, -1) < reached[-1][1]):
        now = time.time()
        end = probe.get_watermark_offsets(tp, timeout=5)[1]
        if not reached or end > reached[-1][1]:
            reached.append((now, end))
        committed = committed_offsets(bootstrap, group_id(s, "collector"), prefix + "tweets").get(0, -1)
        if committed > 0:
            first = next((t for t, e in reached if e >= committed), now)
            lags.append(now - first)
        if kill_at is not None and killed is None and now - start > kill_at:
            collector.send_signal(signal.SIGKILL)
            collector.wait()
            killed = time.time()
            collector = stage("collector", bootstrap, prefix, interval, "--instance-id", "c1")
        if now - start > 600:
            raise TimeoutError("the collector did not catch up within 600 s")
        time.sleep(0.25)
    collector.send_signal(signal.SIGTERM)
    collector.wait(60)
    probe.close()
    out = {"samples": len(lags), "lag_p50_s": float(np.median(lags)) if lags else None,
           "lag_max_s": float(np.max(lags)) if lags else None, "committed_before_end": bool(lags),
           "events": reached[-1][1] if reached else 0, "prefix": prefix}
    if killed is not None:
        out.update(duplicates(bootstrap, prefix, killed, interval))
    return out


def duplicates(bootstrap: str, prefix: str, killed: float, interval: float) -> dict:
    """Outputs written twice, and the outputs first written within the last checkpoint interval before the kill."""
    from streams.kafka import read_topic

    counts, first = Counter(), {}
    for topic in ("cascade_series", "cascade_properties"):
        for m in read_topic(bootstrap, prefix + topic):
            v = orjson.loads(m.value())
            key = (topic, v["type"], v["cid"], v.get("T_obs"), v.get("final", False))
            counts[key] += 1
            first.setdefault(key, m.timestamp()[1] / 1000)
    dups = sum(n - 1 for n in counts.values())
    window = sum(1 for k, t in first.items() if killed - (interval + 1.0) <= t <= killed)
    return {"duplicates": dups, "outputs_in_last_interval": window, "outputs": sum(counts.values()),
            "duplicate_ratio_to_last_interval": dups / window if window else 0.0}


def restore(bootstrap: str, n: int) -> dict:
    """Checkpoint ``n`` open cascades with the collector's windows node, restore them as on assignment."""
    from streamz import Stream

    import streams.window  # noqa: F401
    from streams.kafka import TopicReader, create_topics
    from streams.window import Events
    from kafka_bench_util import produce_all
    from streams.records import Record

    node = Stream().cascade_windows((600, 1200, 3600), 7200.0)
    k = 10
    keys = [f"c{i}" for i in range(n)]
    for lo in range(0, n, 10_000):
        rows = range(lo, min(lo + 10_000, n))
        t = [i * 1e-3 + j * 1e-5 for i in rows for j in range(k)]
        node.update(Events(source=["s0"] * len(t), key=[keys[i] for i in rows for _ in range(k)], t=t,
                           m=[10.0] * len(t), root=[j == 0 for _ in rows for j in range(k)],
                           info=["msg"] * len(t), origin=[None] * len(t), partition=[0] * len(t),
                           offset=list(range(lo * k, lo * k + len(t)))))
    assert node.open_cascades == n
    changes = node.snapshot()
    topic = f"restore-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, {topic: 1}, topic_config={"cleanup.policy": "compact"})
    produce_all(bootstrap, [Record(topic, v, key) for _, key, v in changes])
    size = sum(len(v) for _, _, v in changes)

    t0 = time.perf_counter()
    with TopicReader(bootstrap, topic, [0]) as reader:
        bare = len(reader.read_to_end(timeout=300))
    bare_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with TopicReader(bootstrap, topic, [0]) as reader:
        records = [(m.key(), m.value()) for m in reader.read_to_end(timeout=300)]
    fresh = Stream().cascade_windows((600, 1200, 3600), 7200.0)
    live = fresh.restore(0, records)
    seconds = time.perf_counter() - t0
    assert live == n and bare == len(changes)
    return {"open_cascades": n, "changelog_records": len(changes), "changelog_mib": size / 2**20,
            "restore_s": seconds, "bare_read_s": bare_s, "restore_over_bare_read": seconds / bare_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=2.0, help="checkpoint interval, s (the default setting)")
    ap.add_argument("--cascades", type=int, default=6000)
    ap.add_argument("--speed", type=float, default=1000.0)
    ap.add_argument("--restore", type=int, default=100_000, help="open cascades to restore")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = Path(scratch.name)
    span = long_cascade_data(tmp / "long.jsonl", args.cascades)
    res = {"interval_s": args.interval, "event_span_s": span}
    with broker() as bootstrap:
        res["restore"] = restore(bootstrap, args.restore)
        res["steady"] = commit_lag(bootstrap, tmp / "long.jsonl", args.speed, args.interval)
        res["kill9"] = commit_lag(bootstrap, tmp / "long.jsonl", args.speed, args.interval,
                                  kill_at=span / args.speed / 2)
    if args.json:
        print(orjson.dumps(res).decode())
        return
    st, k9, rs = res["steady"], res["kill9"], res["restore"]
    print(f"commit lag, {args.cascades:,} short cascades + one retweeted every 3,000 s, checkpoint every "
          f"{args.interval:g} s: p50 {st['lag_p50_s']:.2f} s, max {st['lag_max_s']:.2f} s = "
          f"{st['lag_max_s'] / args.interval:.2f} x the interval ({st['samples']} samples)")
    print(f"restore of {rs['open_cascades']:,} open cascades ({rs['changelog_mib']:.1f} MiB of changelog): "
          f"{rs['restore_s']:.2f} s = {rs['restore_over_bare_read']:.2f} x a bare read of it ({rs['bare_read_s']:.2f} s)")
    print(f"kill -9 mid-stream: {k9['duplicates']} outputs written twice of {k9['outputs']:,}; "
          f"{k9['outputs_in_last_interval']} written in the last interval before the kill: ratio "
          f"{k9['duplicate_ratio_to_last_interval']:.2f}; commit lag max {k9['lag_max_s']:.2f} s (restart included)")


if __name__ == "__main__":
    main()
