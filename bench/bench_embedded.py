"""End-to-end throughput and memory of the embedded pipeline on >= 1M simulated events.

Simulates a dataset (``tweetoscope simulate``), replays it through every stage
wired in memory on an adaptive local Dask cluster (as ``tweetoscope run`` does),
and prints:

- events per second, from the replay's start to the moment everything is processed
  (every window fitted, every join done, every refit published), and its ratio to two
  baselines measured in the same run on one core: the bare cost of encoding and decoding
  the same tweets (the generator's records, :func:`tweetoscope.generator.tweet_record_list`, and
  the collector's decoding, nothing else), and that plus a minimal
  event-time collector in plain Python (:func:`bare_collector`: the same windows cut and
  cascades ended, no checks, no state checkpoints, no outputs encoded). Both decode every
  record, as a consumer of Kafka must; the embedded pipeline itself takes the events the
  generator made in the same process (:class:`tweetoscope.batches.DecodedTweets`), and makes a
  record only for a tweet it dead-letters;
- the resident memory of the process sampled along the replay (flat = bounded state);
- the mean ARE of the forecasts by window (``stats``), to check that a faster pipeline forecasts as well.

``--repeat N`` runs N rounds, each in a fresh process on the same simulated data (baselines, then the
pipeline), and prints each round's ratios and their medians: on a shared machine one run's time varies
by 20-30 %, the pipeline's and the baselines' alike. (Rounds within one process would not do: after a
pipeline run, the baselines of the same process ran up to 40 % slower.)

Usage: python bench/bench_embedded.py [--cascades 16500] [--seed 7] [--learner-every 100] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import numpy as np
import orjson
import psutil


def bare_collector(batches, windows: tuple[int, ...], terminated: float) -> tuple[int, int]:
    """The least a collector must do, in plain Python: per source an event-time clock; per cascade
    its events; a window closes (its events before ``start + T_obs`` copied out) when the source's
    clock passes ``start + T_obs``, a cascade ends when it passes ``max(last + terminated, start +
    max(windows))``; events of unknown or ended cascades are dropped. ``batches``: iterable of
    :class:`streams.window.Events`. Returns (windows closed, cascades ended)."""
    import heapq

    cascades: dict[tuple[str, str], list] = {}   # -> [start, last, times, marks, next window]
    due: list[tuple[float, int, str, str]] = []  # (when, seq, source, key): a window or an end to check
    clock: dict[str, float] = {}
    seq = closed = ended = 0
    last_window = windows[-1]
    for ev in batches:
        for src, key, t, m, root in zip(ev.source, ev.key, ev.t, ev.m, ev.root):
            c = cascades.get((src, key))
            if c is None:
                if not root:
                    continue
                c = cascades[(src, key)] = [t, t, [t], [m], 0]
                seq += 1
                heapq.heappush(due, (t + windows[0], seq, src, key))
            else:
                c[1] = max(c[1], t)
                c[2].append(t)
                c[3].append(m)
            now = clock[src] = max(clock.get(src, t), t)
            while due and due[0][0] <= now:
                _, _, s, k = heapq.heappop(due)
                c = cascades.get((s, k))
                if c is None:
                    continue
                start, last, times, marks, w = c
                while w < len(windows) and start + windows[w] <= clock[s]:
                    end = start + windows[w]
                    closed += 1
                    _ = [(x - start, y) for x, y in zip(times, marks) if x < end]
                    w += 1
                c[4] = w
                finish = max(last + terminated, start + last_window)
                if w == len(windows) and finish <= clock[s]:
                    del cascades[(s, k)]
                    ended += 1
                    continue
                seq += 1
                heapq.heappush(due, (start + windows[w] if w < len(windows) else finish, seq, s, k))
    return closed, ended


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=16500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--learner-every", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="rounds, each in a fresh process (medians printed)")
    ap.add_argument("--data", help="a simulated dataset to use instead of simulating one (the rounds' own)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.repeat > 1:
        return repeat(args)

    from streams.datasets import load_dataset
    from streams.replay import ReplaySchedule
    from tweetoscope.tuning import tune_process
    from tweetoscope.collector import decode_tweets
    from tweetoscope.config import Settings
    from tweetoscope.generator import tweet_record_list
    from tweetoscope.pipeline import run_embedded

    tune_process()  # as `tweetoscope run` does
    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = scratch.name
    dataset = load_dataset(dataset_dir(args, tmp))
    settings = Settings(learner_every=args.learner_every)

    # baseline: encode + decode the same tweets, nothing else
    schedule = ReplaySchedule(dataset, sources=settings.sources, stagger=settings.stagger)
    n = len(schedule)
    t0 = time.perf_counter()
    for lo in range(0, n, settings.batch_size):
        hi = min(lo + settings.batch_size, n)
        decode_tweets(tweet_record_list(dataset, schedule.batch(lo, hi, last=hi == n)))
    baseline = n / (time.perf_counter() - t0)

    # baseline: decode + a minimal event-time collector over the same tweets
    t0 = time.perf_counter()
    bare_closed, bare_ended = bare_collector(
        (decode_tweets(tweet_record_list(dataset, schedule.batch(lo, min(lo + settings.batch_size, n),
                                                                 last=min(lo + settings.batch_size, n) == n)))[0]
         for lo in range(0, n, settings.batch_size)), settings.windows, settings.terminated)
    bare = n / (time.perf_counter() - t0)

    proc = psutil.Process(os.getpid())
    rss: list[tuple[float, float]] = []

    def on_start(stages, bus):
        async def sample():
            while True:
                rss.append((bus.counts.get("tweets", 0) / n, proc.memory_info().rss / 2**20))
                await asyncio.sleep(0.25)

        asyncio.ensure_future(sample())

    summary = asyncio.run(run_embedded(dataset, settings, f"{tmp}/out", on_start=on_start))
    rate = summary.events / summary.seconds
    are: dict[int, list[float]] = {}
    with open(f"{tmp}/out/stats.jsonl", "rb") as fh:
        for line in fh:
            v = orjson.loads(line)["value"]
            are.setdefault(int(v["T_obs"]), []).append(float(v["ARE"]))
    mean_are = {str(T): float(np.mean(v)) for T, v in sorted(are.items())}
    marks = [0.25, 0.5, 0.75, 1.0]
    prog = np.array([p for p, _ in rss])
    mem = np.array([m for _, m in rss])
    along = {f"{int(q * 100)}%": float(mem[min(np.searchsorted(prog, q), len(mem) - 1)]) for q in marks}
    res = {
        "events": summary.events, "cascades": args.cascades, "seconds": summary.seconds, "events_per_s": rate,
        "baseline_events_per_s": baseline, "ratio_to_baseline": rate / baseline,
        "bare_collector_events_per_s": bare, "ratio_to_bare_collector": rate / bare,
        "bare_collector_windows": bare_closed, "bare_collector_ended": bare_ended, "rss_mib_along_replay": along,
        "rss_mib_peak": float(mem.max()), "counts": summary.counts, "mean_are": mean_are,
    }
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{summary.events:,} events ({args.cascades:,} cascades) end to end in {summary.seconds:.1f} s: "
          f"{rate:,.0f} events/s")
    print(f"baseline (encode + decode only, same run): {baseline:,.0f} events/s; pipeline / baseline = "
          f"{rate / baseline:.2f}")
    print(f"baseline (decode + bare event-time collector, same run: {bare_closed:,} windows cut, {bare_ended:,} "
          f"cascades ended): {bare:,.0f} events/s; pipeline / baseline = {rate / bare:.2f}")
    print("RSS along the replay (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in along.items())
          + f"; peak {mem.max():.0f}")
    print("mean ARE of the forecasts by window: " + ", ".join(f"{T} s {a:.3f}" for T, a in mean_are.items()))
    print("records: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.counts.items())))


def dataset_dir(args: argparse.Namespace, tmp: str) -> str:
    """``--data``, else a set simulated into ``tmp`` (``--cascades``, ``--seed``)."""
    if args.data is not None:
        return args.data
    from tweetoscope.cli import main as cli

    cli(["simulate", f"{tmp}/data", "--n", str(args.cascades), "--seed", str(args.seed)])
    return f"{tmp}/data"


def repeat(args: argparse.Namespace) -> None:
    """``--repeat``: simulate once, run the rounds in fresh processes, print each and the medians."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="tweetoscope-bench-") as tmp:
        data = dataset_dir(args, tmp)
        rounds = []
        for k in range(args.repeat):
            out = subprocess.run([sys.executable, __file__, "--data", data, "--learner-every", str(args.learner_every),
                                  "--json"], capture_output=True, text=True, check=True)
            r = orjson.loads(out.stdout.strip().splitlines()[-1])
            rounds.append(r)
            if not args.json:
                print(f"round {k + 1}: {r['events_per_s']:,.0f} events/s ({r['seconds']:.2f} s); encode + decode "
                      f"{r['baseline_events_per_s']:,.0f} (ratio {r['ratio_to_baseline']:.2f}); decode + bare "
                      f"collector {r['bare_collector_events_per_s']:,.0f} (ratio {r['ratio_to_bare_collector']:.2f}); "
                      f"mean ARE " + ", ".join(f"{T} s {a:.3f}" for T, a in r["mean_are"].items()), flush=True)
    med = {key: float(np.median([r[key] for r in rounds])) for key in
           ("events_per_s", "baseline_events_per_s", "ratio_to_baseline", "bare_collector_events_per_s",
            "ratio_to_bare_collector", "rss_mib_peak")}
    if args.json:
        print(orjson.dumps({"median": med, "rounds": rounds}).decode())
        return
    print(f"medians of {args.repeat} rounds: {med['events_per_s']:,.0f} events/s; pipeline / (encode + decode) = "
          f"{med['ratio_to_baseline']:.2f}; pipeline / (decode + bare collector) = {med['ratio_to_bare_collector']:.2f}; "
          f"peak RSS {med['rss_mib_peak']:.0f} MiB")


if __name__ == "__main__":
    main()
