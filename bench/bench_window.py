"""The collector's window node alone (``streams.window.cascade_windows``) against the bare collector.

Simulates ``--cascades`` cascades (``tweetoscope simulate``), encodes and decodes their tweets
once (as the collector's input, ``Events`` batches of ``batch_size``), then times, alternated
in ``--rounds`` rounds in one process with the GC thresholds of the stages (``tune_process``):

- **bare**: ``bench_embedded.bare_collector`` over the same batches (per source a clock, per
  cascade its events, windows cut and cascades ended; nothing checked or encoded);
- **embedded**: the node as the embedded pipeline runs it (no offsets: nothing to checkpoint);
- **kafka**: the node as a Kafka collector runs it (partition and offset per event), with a
  checkpoint (``snapshot()``) after every ``--checkpoint-every`` batches.

Prints events/s of each and the node's ratio to the bare collector.

Usage: python bench/bench_window.py [--cascades 16500] [--seed 7] [--rounds 2] [--checkpoint-every 1] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embedded import bare_collector  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=16500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--checkpoint-every", type=int, default=1, help="batches between two snapshots (kafka)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from streamz import Stream

    import streams.window  # noqa: F401  (registers cascade_windows)
    from streams.datasets import load_dataset
    from streams.replay import ReplaySchedule
    from tweetoscope.cli import main as cli
    from tweetoscope.tuning import tune_process
    from tweetoscope.collector import decode_tweets
    from tweetoscope.config import Settings
    from tweetoscope.generator import tweet_records

    tune_process()
    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = scratch.name
    cli(["simulate", f"{tmp}/data", "--n", str(args.cascades), "--seed", str(args.seed)])
    dataset = load_dataset(f"{tmp}/data")
    s = Settings()
    schedule = ReplaySchedule(dataset, sources=s.sources, stagger=s.stagger)
    n = len(schedule)
    bounds = [(lo, min(lo + s.batch_size, n)) for lo in range(0, n, s.batch_size)]
    batches = [decode_tweets(tweet_records(dataset, schedule.batch(lo, hi, last=hi == n)))[0] for lo, hi in bounds]
    with_offsets, offset = [], 0
    for b in batches:
        k = len(b)
        with_offsets.append(dataclasses.replace(b, partition=[0] * k, offset=list(range(offset, offset + k)),
                                                eos_partition=[0] * len(b.eos)))
        offset += k

    def node_run(kafka: bool) -> float:
        source = Stream()
        node = source.cascade_windows(s.windows, s.terminated, min_size=s.min_cascade_size,
                                      max_events=s.max_cascade_events, max_clock_jump=s.max_clock_jump)
        node.sink(lambda out: None)
        t0 = time.perf_counter()
        for i, b in enumerate(with_offsets if kafka else batches):
            source.emit(b)
            if kafka and (i + 1) % args.checkpoint_every == 0:
                node.snapshot()
        return n / (time.perf_counter() - t0)

    def bare_run() -> float:
        t0 = time.perf_counter()
        bare_collector(iter(batches), s.windows, s.terminated)
        return n / (time.perf_counter() - t0)

    rounds = []
    for _ in range(args.rounds):
        rounds.append({"bare": bare_run(), "embedded": node_run(False), "kafka": node_run(True)})
    res = {"events": n, "checkpoint_every": args.checkpoint_every, "rounds": rounds}
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{n:,} events, batches of {s.batch_size:,}; kafka: a checkpoint every {args.checkpoint_every} batch(es)")
    for k, r in enumerate(rounds):
        print(f"round {k + 1}: bare collector {r['bare']:,.0f} events/s; node, embedded {r['embedded']:,.0f} "
              f"({r['embedded'] / r['bare']:.2f}); node, kafka {r['kafka']:,.0f} ({r['kafka'] / r['bare']:.2f})")


if __name__ == "__main__":
    main()
