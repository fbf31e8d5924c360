"""Collector ingest on Kafka against a bare confluent-kafka consume-and-decode loop, in one run.

Loads simulated tweets into a topic of a real broker (started by ``scripts/kafka.sh``
unless ``$KAFKA_BOOTSTRAP`` is set), then measures on that same topic:

- the baseline: a bare ``confluent_kafka.Consumer`` loop (``kafka_bench_util.bare_loop``,
  the one ``bench_stages.py`` uses), ``consume(10_000)`` and the schema decode of every
  message, nothing else, with the fetch settings of the stages' sources
  (``kafka_bench_util.STAGE_FETCH``), run first and again last: the faster of the two is the
  baseline (this machine's noise only ever slows a loop down: one loop of a run can come out
  40 % slower than the other); and the same loop with librdkafka's defaults, whose
  fetch back-off (1 s once 100,000 messages are queued) bounds a fast reader;
- the collector's input path alone: the same loop, but each consumed list made into records as its
  source makes them (``streams.kafka.source._to_records``) and decoded as it decodes them
  (``decode_tweets``), no windows: the most the collector's ratio can be;
- the collector stage: our Kafka source (consumer group, ref-counted commits), decode,
  event-time windows, encoding, and the producer of its outputs, until every input
  offset is committed (i.e. every output acknowledged);
- the output floor: the bare loop again, producing as it reads the very messages the collector
  wrote in its run (read back from its output topics and its changelog, already encoded), with
  the stages' producer settings, all acknowledged before the clock stops; no record, window or
  encoding: the most any collector's ratio can be on this machine and broker.

Prints the rates in events/s and the ratios (target, issue 12: >= 0.8 of the bare loop with the
stages' fetch settings).

Usage: python bench/bench_kafka_ingest.py [--cascades 6000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_bench_util import STAGE_FETCH, bare_loop, broker, produce_all, run_stage  # noqa: E402


async def collector_run(bootstrap: str, prefix: str, n: int) -> dict:
    """The collector stage alone in this process, as ``tweetoscope collector`` runs it: events/s (``per_s``)
    from its first record until every input offset is committed, and the records it produced per topic
    (``outputs``) (``kafka_bench_util.run_stage``)."""
    from tweetoscope.config import Settings

    s = Settings(kafka=bootstrap, topic_prefix=prefix, group_prefix=f"{prefix}g{uuid.uuid4().hex[:6]}")
    return await run_stage(s, "collector", "tweets", n)


def written(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[bytes | None, bytes | None]]]:
    """The (key, value) of every message in each of ``topics`` (full names), in log order."""
    from streams.kafka.admin import read_topic

    return {t: [(m.key(), m.value()) for m in read_topic(bootstrap, t)] for t in topics}


def output_floor(bootstrap: str, topic: str, n: int, outputs: dict[str, list[tuple[bytes | None, bytes | None]]]
                 ) -> float:
    """Events/s of the least a collector does on Kafka: the bare loop over the ``n`` tweets of ``topic``
    (consume, decode each), producing as it reads the ``outputs`` (topic -> (key, value), already encoded),
    each topic's messages spread evenly over the input, with the stages' producer settings, and waiting
    for every one to be acknowledged before its clock stops (as a stage's offsets wait for its outputs)."""
    import confluent_kafka as ck

    from streams.kafka import PRODUCER_DEFAULTS
    from tweetoscope.schemas import TWEETS

    producer = ck.Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": bootstrap})
    done = dict.fromkeys(outputs, 0)

    def produce(_, seen: int) -> None:
        for t, messages in outputs.items():
            upto = len(messages) * seen // n
            for key, value in messages[done[t]:upto]:
                while True:
                    try:
                        producer.produce(t, value, key)
                        break
                    except BufferError:  # librdkafka's queue is full: let it send
                        producer.poll(0.01)
            done[t] = upto
        producer.poll(0)
        if seen >= n and producer.flush(60):
            raise SystemExit("output floor: outputs not acknowledged within 60 s")

    return bare_loop(bootstrap, topic, n, TWEETS.decode, STAGE_FETCH, batch=produce)["per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascades", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from streams.datasets import load_dataset
    from streams.replay import ReplaySchedule
    from tweetoscope.cli import main as cli
    from tweetoscope.tuning import tune_process
    from tweetoscope.config import Settings
    from tweetoscope.generator import tweet_record_list
    from tweetoscope.kafka_mode import KafkaBus, changelog_topic

    tune_process()  # the collector runs here as `tweetoscope collector` runs it
    scratch = tempfile.TemporaryDirectory(prefix="tweetoscope-bench-")  # removed when main() returns
    tmp = scratch.name
    cli(["simulate", f"{tmp}/data", "--n", str(args.cascades), "--seed", str(args.seed)])
    dataset = load_dataset(f"{tmp}/data")
    schedule = ReplaySchedule(dataset)
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    with broker() as bootstrap:
        settings = Settings(kafka=bootstrap, topic_prefix=prefix, partitions=1)
        KafkaBus(settings, None).create_topics()
        records = tweet_record_list(dataset, schedule.batch(0, len(schedule), last=True))
        for r in records:
            r.topic = prefix + r.topic
        produce_all(bootstrap, records)
        n = len(records)
        from tweetoscope.schemas import TWEETS

        from streams.kafka.source import _to_records
        from tweetoscope.collector import decode_tweets

        default = bare_loop(bootstrap, prefix + "tweets", n, TWEETS.decode)["per_s"]
        first = bare_loop(bootstrap, prefix + "tweets", n, TWEETS.decode, STAGE_FETCH)["per_s"]
        names = {prefix + "tweets": "tweets"}
        path = bare_loop(bootstrap, prefix + "tweets", n, None, STAGE_FETCH,
                         batch=lambda msgs, _: decode_tweets(_to_records(msgs, names)[0]))["per_s"]
        run = asyncio.run(collector_run(bootstrap, prefix, n))
        rate = run["per_s"]
        outputs = written(bootstrap, [prefix + t for t in run["outputs"]] + [changelog_topic(settings, "collector")])
        floor = output_floor(bootstrap, prefix + "tweets", n, outputs)
        last = bare_loop(bootstrap, prefix + "tweets", n, TWEETS.decode, STAGE_FETCH)["per_s"]
    baseline = max(first, last)
    res = {"events": n, "baseline_events_per_s": baseline, "bare_loops_events_per_s": [first, last],
           "collector_events_per_s": rate, "ratio": rate / baseline,
           "baseline_librdkafka_defaults_events_per_s": default, "ratio_to_librdkafka_defaults": rate / default,
           "input_path_events_per_s": path, "input_path_ratio": path / baseline,
           "output_floor_events_per_s": floor, "output_floor_ratio": floor / baseline,
           "outputs": {t.removeprefix(prefix): [len(m), sum(len(v or b"") for _, v in m)] for t, m in outputs.items()},
           "input_bytes": sum(len(r.value) for r in records)}
    if args.json:
        print(orjson.dumps(res).decode())
        return
    print(f"{n:,} tweets on one partition")
    print(f"bare consume + decode loop, librdkafka's defaults: {default:,.0f} events/s")
    print(f"bare consume + decode loop, the stages' fetch settings {STAGE_FETCH}: {baseline:,.0f} events/s "
          f"(the faster of {first:,.0f} first and {last:,.0f} last)")
    print(f"the collector's input path alone, as its source and decode make it (consume, a record per message, "
          f"decode_tweets' events), no windows: {path:,.0f} events/s = {path / baseline:.2f} x the bare loop, "
          f"the most the collector's ratio can be")
    print(f"collector (source, windows, outputs produced and acknowledged, offsets committed): {rate:,.0f} events/s")
    sizes = ", ".join(f"{t} {c:,} ({b / 1e6:.1f} MB)" for t, (c, b) in res["outputs"].items())
    print(f"the collector's outputs, read back: {sizes}; its input {res['input_bytes'] / 1e6:.1f} MB")
    print(f"output floor (the bare loop, producing those outputs as it reads, acknowledged; no record, window or "
          f"encoding): {floor:,.0f} events/s = {floor / baseline:.2f} x the bare loop, the most any collector's ratio "
          f"can be here")
    print(f"ratio collector / bare loop = {rate / baseline:.2f} (to the loop with librdkafka's defaults: "
          f"{rate / default:.2f})")


if __name__ == "__main__":
    main()
