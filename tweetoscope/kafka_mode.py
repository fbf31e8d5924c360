"""The stages wired through Apache Kafka topics.

Each stage reads its input topics as a member of the consumer group
``<group_prefix>-<stage>`` (several instances of a stage share the work) and
writes its outputs with an idempotent ``acks=all`` producer; offsets are
committed only after the outputs derived from them are acknowledged
(:mod:`streams.kafka`). The ``models`` topic is read in full by every predictor
and the ``samples`` topic by the learner (state rebuilt on restart).

SIGTERM or SIGINT only request a stop: sources stop, in-flight batches drain
(Dask work included), sinks flush, offsets are committed, the process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Sequence

from streamz import Stream
from tornado.ioloop import IOLoop

from streams.datasets import Dataset
from streams.kafka import KafkaSink, KafkaSource, create_topics, wait_for_broker
from streams.replay import ReplaySchedule

from .config import Settings
from .generator import generator
from .models import MAX_MODEL_BYTES
from .pipeline import ALL_TOPICS, Stages, build_stages, start_dask
from .schemas import MODELS

__all__ = ["CONSUMERS", "KafkaBus", "run_kafka"]

logger = logging.getLogger(__name__)

#: The stage that consumes each topic, and whether it does so in a consumer group
#: (``False``: every instance reads the whole topic from the beginning).
CONSUMERS: dict[str, tuple[str, bool]] = {
    "tweets": ("collector", True),
    "cascade_series": ("estimator", True),
    "cascade_properties": ("predictor", True),
    "models": ("predictor", False),
    "samples": ("learner", False),
}


class KafkaBus:
    """Topic streams and publishers on a Kafka cluster; topic names get ``settings.topic_prefix``."""

    def __init__(self, settings: Settings, loop: IOLoop):
        if not settings.kafka:
            raise ValueError("a Kafka bootstrap address is needed (--kafka HOST:PORT)")
        self.settings = settings
        self.loop = loop
        self.prefix = settings.topic_prefix
        self.sources: list[KafkaSource] = []
        self.sinks: list[KafkaSink] = []

    def name(self, topic: str) -> str:
        return self.prefix + topic

    def create_topics(self) -> None:
        """Create every topic of the pipeline (existing ones are kept)."""
        s = self.settings
        wait_for_broker(s.kafka, timeout=30)
        topics = {self.name(t): (s.partitions if "." not in t else 1) for t in ALL_TOPICS if t != MODELS.name}
        create_topics(s.kafka, topics, replication=s.replication)
        create_topics(s.kafka, {self.name(MODELS.name): s.partitions}, replication=s.replication,
                      config={"max.message.bytes": str(MAX_MODEL_BYTES + 2**20)})

    def topic(self, topic: str) -> Stream:
        """The batches of ``topic`` for the stage that consumes it (see :data:`CONSUMERS`)."""
        stage, group = CONSUMERS[topic]
        s = self.settings
        config = {"bootstrap.servers": s.kafka, "group.id": f"{s.group_prefix}-{stage}",
                  "session.timeout.ms": int(s.session_timeout * 1000)}
        if group and s.instance_id:
            config["group.instance.id"] = f"{s.instance_id}-{stage}-{topic}"
        source = Stream.from_kafka_group(self.name(topic), config, batch_size=s.batch_size, group=group,
                                         poll_timeout=s.poll_timeout, loop=self.loop, stream_name=f"kafka:{topic}")
        self.sources.append(source)
        if not self.prefix:
            return source
        cut = len(self.prefix)
        return source.map(lambda batch: [dataclasses.replace(r, topic=r.topic[cut:]) for r in batch])

    def publish(self, stream: Stream) -> KafkaSink:
        """Produce the record batches of ``stream`` (each record to its own topic)."""
        if self.prefix:
            prefix = self.prefix
            stream = stream.map(lambda batch: [dataclasses.replace(r, topic=prefix + r.topic) for r in batch])
        sink = stream.to_kafka_group({"bootstrap.servers": self.settings.kafka,
                                      "message.max.bytes": MAX_MODEL_BYTES + 2**20}, loop=self.loop)
        self.sinks.append(sink)
        return sink

    def start(self) -> None:
        for source in self.sources:
            source.start()

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """High watermark of every partition of the consumed topics (a broker call: run in an executor)."""
        import confluent_kafka as ck

        consumer = ck.Consumer({"bootstrap.servers": self.settings.kafka, "group.id": "tweetoscope-probe"})
        try:
            out = {}
            for source in self.sources:
                for topic in source.topics:
                    meta = consumer.list_topics(topic, timeout=10).topics[topic]
                    for p in meta.partitions:
                        out[(topic, p)] = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1]
            return out
        finally:
            consumer.close()

    async def quiet(self) -> bool:
        """Every group source committed everything its topics hold; no batch is in flight anywhere."""
        if any(s.n_inflight for s in self.sources):
            return False
        ends = await asyncio.get_running_loop().run_in_executor(None, self.end_offsets)
        for source in self.sources:
            for topic in source.topics:
                parts = {k: v for k, v in ends.items() if k[0] == topic}
                if source.group:
                    done = source.committed_offsets()
                    if any(done.get(k, 0) < end for k, end in parts.items() if end > 0):
                        return False
                elif any(source.lag().get(k, end) > 0 for k, end in parts.items() if end > 0):
                    return False
        return True

    async def drain(self, timeout: float) -> bool:
        """Flush the sinks, then commit what is done and close every source; True if all went through.

        Batches still held by stage state (open cascades, pending joins) stay uncommitted
        and are consumed again by the next instance: at-least-once, nothing lost.
        """
        for sink in self.sinks:
            await sink.flush(timeout)
        ok = True
        for source in self.sources:
            ok &= await source.drain(min(timeout, 5.0), sinks=self.sinks, require_idle=False)
        return ok


async def run_kafka(
    settings: Settings,
    stages: Sequence[str] = ("collector", "estimator", "predictor", "learner"),
    *,
    dataset: Dataset | None = None,
    speed: float | None = None,
    until_done: bool = False,
    drain_timeout: float = 60.0,
) -> int:
    """Run ``stages`` (and a generator replaying ``dataset``) on the Kafka cluster ``settings.kafka``.

    Runs until SIGTERM/SIGINT, or, with ``until_done``, until the replay has been fully
    processed (every topic consumed, every batch done). Returns the exit code: 0 when
    everything consumed was delivered and committed.
    """
    loop = IOLoop.current()
    bus = KafkaBus(settings, loop)
    await asyncio.get_running_loop().run_in_executor(None, bus.create_topics)
    client = cluster = None
    if {"estimator", "learner"} & set(stages):
        client, cluster = await start_dask(settings)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    staged: Stages = build_stages(bus.topic, bus.publish, settings, client, stages=tuple(stages))
    replay = None
    gen_sink = None
    if dataset is not None:
        schedule = ReplaySchedule(dataset, sources=settings.sources, stagger=settings.stagger)
        replay = Stream.from_replay(schedule, batch_size=settings.batch_size, speed=speed, loop=loop,
                                    stream_name="replay")
        gen_sink = bus.publish(generator(replay, dataset))
    bus.start()
    health = _serve_health(settings.health_port, bus) if settings.health_port else None
    if replay is not None:
        replay.start()
    try:
        if until_done:
            await _until_done(bus, staged, replay, gen_sink, stop)
        else:
            await stop.wait()
        logger.info("stopping: draining in-flight work, flushing, committing")
        if replay is not None:
            replay.stop()
        for source in bus.sources:
            source.stop_polling()  # drained (committed, closed) below
        await staged.drain()  # Dask work in flight: its results reach the sinks
        ok = await bus.drain(drain_timeout)
    finally:
        if health is not None:
            health.stop()
        for sink in bus.sinks:
            sink.destroy()
        if client is not None:
            await client.close()
        if cluster is not None:
            await cluster.close()
    return 0 if ok else 1


def _serve_health(port: int, bus: KafkaBus):
    """``GET /healthz``: 200 while the event loop answers; ``GET /readyz``: 200 while every source
    is consuming (joined its group, not failed), else 503 with the reason. Returns the HTTP server."""
    from tornado.httpserver import HTTPServer
    from tornado.web import Application, RequestHandler

    class Alive(RequestHandler):
        def get(self) -> None:
            self.write("ok\n")

    class Ready(RequestHandler):
        def get(self) -> None:
            failed = [s.topics for s in bus.sources if s.error is not None]
            idle = [s.topics for s in bus.sources if s.consumer is None or not s.joined]
            if failed or idle:
                self.set_status(503)
                self.write(f"failed: {failed}; not consuming: {idle}\n")
            else:
                self.write("ready\n")

    server = HTTPServer(Application([("/healthz", Alive), ("/readyz", Ready)]))
    server.listen(port)
    return server


async def _until_done(bus: KafkaBus, stages: Stages, replay, gen_sink: KafkaSink | None, stop: asyncio.Event) -> None:
    """Wait for the replay, then for every topic to be consumed and every batch done (three checks in a row)."""
    if replay is not None:
        while not replay.done.is_set() and not stop.is_set():
            await asyncio.sleep(0.1)
        if gen_sink is not None:
            await gen_sink.flush(60)
    quiet = 0
    while quiet < 2 and not stop.is_set():
        await asyncio.sleep(0.3)
        quiet = quiet + 1 if stages.idle and await bus.quiet() else 0

