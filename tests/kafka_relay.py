"""A relay stage for the Kafka node tests: topic SOURCE -> slow map -> topic SINK, at-least-once.

    python tests/kafka_relay.py BOOTSTRAP SOURCE SINK GROUP [--instance-id ID]
        [--batch-size N] [--delay SECONDS] [--commit-interval SECONDS] [-X KEY=VALUE ...]

Each output record keeps the input's key, value and headers and adds the header
``src`` = ``"<partition>:<offset>"`` of the input record. ``--delay`` seconds of
blocking work per batch stand for real processing. On SIGTERM: stop the source,
drain (wait until every batch is delivered), flush the sink, commit, exit 0. The last
stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tornado.ioloop import IOLoop  # noqa: E402

from streams.kafka import KafkaSource  # noqa: E402
from streams.records import Record  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bootstrap")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("group")
    parser.add_argument("--instance-id", default=None, help="group.instance.id (static membership)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of blocking work per batch")
    parser.add_argument("--commit-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--drain-timeout", type=float, default=20.0, help="seconds")
    parser.add_argument("-X", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra consumer setting (repeatable)")
    return parser.parse_args(argv)


async def relay(args: argparse.Namespace) -> int:
    consumer_config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    consumer_config.update(item.split("=", 1) for item in args.extra)
    if args.instance_id:
        consumer_config["group.instance.id"] = args.instance_id
    source = KafkaSource(args.source, consumer_config, batch_size=args.batch_size,
                         commit_interval=args.commit_interval, loop=IOLoop.current())

    def forward(batch: list[Record]) -> list[Record]:
        time.sleep(args.delay)  # stands for CPU-bound work on the loop
        return [Record(args.sink, r.value, r.key, {**r.headers, "src": f"{r.partition}:{r.offset}"})
                for r in batch]

    sink = source.map(forward).to_kafka_group({"bootstrap.servers": args.bootstrap})

    stop_requested = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_requested.set)
    source.start()
    stop = asyncio.ensure_future(stop_requested.wait())
    failed = asyncio.ensure_future(source.join())
    await asyncio.wait([stop, failed], return_when=asyncio.FIRST_COMPLETED)
    drained = False
    if failed.done():
        failed.exception()  # retrieved; reported through source.error below
    else:
        logging.info("SIGTERM: stop, drain, flush, commit")
        drained = await source.drain(args.drain_timeout, sinks=[sink])
    summary = {
        "drained": drained,
        "error": repr(source.error) if source.error else None,
        "consumed": source.n_consumed,
        "delivered": sink.n_delivered,
        "committed": {f"{t}:{p}": o for (t, p), o in sorted(source.committed_offsets().items())},
    }
    print(json.dumps(summary), flush=True)
    return 0 if drained else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(relay(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
