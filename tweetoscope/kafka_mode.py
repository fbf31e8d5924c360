"""The stages wired through Apache Kafka topics.

Each stage reads its input topic as a member of the consumer group
``<group_prefix>-<topic_prefix><stage>`` (several instances of a stage share the work;
two pipelines with different topic prefixes never share a group) and writes its
outputs with an idempotent ``acks=all`` producer. A stateful stage (collector,
estimator, predictor, learner) checkpoints its state to its compacted changelog topic
``<topic_prefix><stage>.changelog`` every ``checkpoint_interval`` seconds and commits
its input offsets once the checkpoint is acknowledged (:mod:`streams.kafka`); on
assignment it restores its partitions' state before it consumes them. The ``models``
topic (compacted: the latest model per window) is read in full by every predictor.

A stage exits non-zero when it cannot go on: a source or sink failed, its Dask cluster
was lost for longer than ``dask_timeout``, or it made no progress for ``stall_timeout``
with work in flight, or its consumer was left outside its group (no assignment since a
revocation or a lost session) for ``stall_timeout``. SIGTERM or SIGINT only request a
stop: sources stop, in-flight batches drain (Dask work included), sinks flush, state is checkpointed, offsets are
committed, the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streamz import Stream
from tornado.ioloop import IOLoop

from streams.datasets import Dataset
from streams.kafka import CHANGELOG_MAX_BYTES, KafkaSink, KafkaSource, create_topics, end_offsets, wait_for_broker
from streams.replay import ReplaySchedule

from .config import Settings
from .generator import generator
from .metrics import OutputCounter
from .models import MAX_MODEL_BYTES
from .pipeline import ALL_TOPICS, Stages, build_stages, start_dask
from .schemas import MARKS, MODELS

if TYPE_CHECKING:
    import distributed
    from tornado.httpserver import HTTPServer

__all__ = ["CONSUMERS", "KafkaBus", "run_kafka", "group_id", "changelog_topic", "TOPIC_CONFIG"]

logger = logging.getLogger(__name__)

#: The stage that consumes each topic, and whether it does so in a consumer group
#: (``False``: every instance reads the whole topic from the beginning).
CONSUMERS: dict[str, tuple[str, bool]] = {
    "tweets": ("collector", True),
    "cascade_series": ("estimator", True),
    "cascade_properties": ("predictor", True),
    "models": ("predictor", False),
    "samples": ("learner", True),
    "marks": ("learner", False),
}

#: Topic settings beyond the broker's defaults (time retention, ``retention.ms``, for the others;
#: see docs/reliability.md). ``models`` keeps the latest file per window, ``marks`` the latest law;
#: changelogs the latest state per key.
TOPIC_CONFIG: dict[str, dict[str, str]] = {
    "models": {"cleanup.policy": "compact", "max.message.bytes": str(MAX_MODEL_BYTES + 2**20)},
    "marks": {"cleanup.policy": "compact"},
    "changelog": {"cleanup.policy": "compact", "max.message.bytes": str(CHANGELOG_MAX_BYTES + 2**20),
                  "min.compaction.lag.ms": "60000"},
}


def group_id(settings: Settings, stage: str) -> str:
    """The consumer group of ``stage``: ``<group_prefix>-<topic_prefix><stage>``."""
    return f"{settings.group_prefix}-{settings.topic_prefix}{stage}"


def changelog_topic(settings: Settings, stage: str) -> str:
    """The changelog topic of ``stage``'s state (full name, prefix included)."""
    return f"{settings.topic_prefix}{stage}.changelog"


class KafkaBus:
    """Topic streams and publishers on a Kafka cluster; topic names get ``settings.topic_prefix``."""

    def __init__(self, settings: Settings, loop: IOLoop):
        self.settings = settings
        self.config = settings.kafka_config()
        self.loop = loop
        self.prefix = settings.topic_prefix
        self.sources: list[KafkaSource] = []
        self.by_topic: dict[str, KafkaSource] = {}
        self.sinks: list[KafkaSink] = []
        self.outputs = OutputCounter()  # records emitted, by topic (for /metrics)

    def name(self, topic: str) -> str:
        return self.prefix + topic

    def create_topics(self) -> None:
        """Create every topic of the pipeline, the changelogs included (existing ones are kept)."""
        s = self.settings
        wait_for_broker(self.config, timeout=30)
        topics = {self.name(t): (s.partitions if "." not in t else 1) for t in ALL_TOPICS
                  if t not in (MODELS.name, MARKS.name)}
        create_topics(self.config, topics, replication=s.replication)
        create_topics(self.config, {self.name(MODELS.name): s.partitions}, replication=s.replication,
                      topic_config=TOPIC_CONFIG["models"])
        create_topics(self.config, {self.name(MARKS.name): 1}, replication=s.replication,
                      topic_config=TOPIC_CONFIG["marks"])
        changelogs = {changelog_topic(s, stage): s.partitions for stage, grouped in CONSUMERS.values() if grouped}
        create_topics(self.config, changelogs, replication=s.replication, topic_config=TOPIC_CONFIG["changelog"])

    def topic(self, topic: str) -> Stream:
        """The batches of ``topic`` for the stage that consumes it (see :data:`CONSUMERS`)."""
        stage, group = CONSUMERS[topic]
        s = self.settings
        config = {**self.config, "group.id": group_id(s, stage), "session.timeout.ms": int(s.session_timeout * 1000)}
        if group and s.instance_id:
            config["group.instance.id"] = f"{s.instance_id}-{stage}-{topic}"
        source = Stream.from_kafka_group(self.name(topic), config, batch_size=s.batch_size, group=group,
                                         poll_timeout=s.poll_timeout, checkpoint_interval=s.checkpoint_interval,
                                         strip_prefix=self.prefix, loop=self.loop, stream_name=f"kafka:{topic}")
        self.sources.append(source)
        self.by_topic[topic] = source
        return source

    def use_stores(self, stages: Stages) -> None:
        """Checkpoint each stateful stage's state through the source of its input topic."""
        for topic, (stage, store, barrier) in stages.stores().items():
            self.by_topic[topic].use_store(store, changelog_topic(self.settings, stage), barrier=barrier)

    def publish(self, stream: Stream) -> KafkaSink:
        """Produce the record batches of ``stream`` (each record to its own topic)."""
        stream = stream.map(self.outputs)
        sink = stream.to_kafka_group({**self.config, "message.max.bytes": MAX_MODEL_BYTES + 2**20},
                                     topic_prefix=self.prefix, loop=self.loop)
        self.sinks.append(sink)
        return sink

    def start(self) -> None:
        for source in self.sources:
            source.start()

    def failure(self, stages: Stages, client: distributed.Client | None = None) -> str | None:
        """Why this process cannot make progress any more, if it cannot (``client``: its Dask client)."""
        for source in self.sources:
            if source.error is not None:
                return f"the Kafka source on {source.topics} failed: {source.error!r}"
            if source.stalled(self.settings.stall_timeout):
                return (f"the Kafka source on {source.topics} has {source.n_inflight} batch(es) in flight and none "
                        f"done for {self.settings.stall_timeout:.0f} s")
            if source.rejoin_stalled(self.settings.stall_timeout):
                return (f"the Kafka source on {source.topics} lost or gave up its partitions and the group has not "
                        f"assigned it any for {self.settings.stall_timeout:.0f} s")
        for sink in self.sinks:
            if sink.error is not None:
                return f"a Kafka sink failed: {sink.error!r}"
        if stages.error is not None:
            return f"a stage stopped: {stages.error!r}"
        if client is not None and client.status in ("closing", "closed"):
            return "the Dask client gave up reconnecting to its scheduler"
        return None

    async def quiet(self) -> bool:
        """Every group source committed everything its topics hold; no batch is in flight anywhere."""
        if any(s.n_inflight for s in self.sources):
            return False
        topics = [t for source in self.sources for t in source.topics]
        ends = await asyncio.get_running_loop().run_in_executor(None, end_offsets, self.config, topics)
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
        """Flush the sinks, then checkpoint, commit what is done and close every source; True if all went through."""
        for sink in self.sinks:
            await sink.flush(timeout)
        ok = True
        for source in self.sources:
            ok &= await source.drain(min(timeout, 30.0), sinks=self.sinks, require_idle=False)
        return ok


def _import_in_background(imports: Callable[[], None]) -> None:
    """Run ``imports`` in a daemon thread: the stage gets ready meanwhile, and a thread that needs the
    modules first (a model's check, in the loop's executor) waits for them (``imports`` holds the lock
    that thread takes), not the loop."""
    def run() -> None:
        try:
            imports()
        except Exception:  # noqa: BLE001 - the first use raises it again where it is handled
            logger.exception("background import (%s) failed", imports.__name__)

    threading.Thread(target=run, name=f"import ({imports.__name__})", daemon=True).start()


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
    processed (every topic consumed, every batch done), or until the process cannot go on
    (:meth:`KafkaBus.failure`). Returns the exit code: 0 when everything consumed was
    delivered and committed, 1 after a failure or an incomplete drain.
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
    bus.use_stores(staged)
    replay = None
    gen_sink = None
    if dataset is not None:
        schedule = ReplaySchedule(dataset, sources=settings.sources, stagger=settings.stagger)
        replay = Stream.from_replay(schedule, batch_size=settings.batch_size, speed=speed, loop=loop,
                                    stream_name="replay")
        gen_sink = bus.publish(generator(replay, dataset))
    bus.start()
    health = _serve_health(settings.health_port, bus, staged, client) if settings.health_port else None
    if "predictor" in stages:  # models read from Kafka are skops files: import it (1-2 s) while the group is joined
        from .models import import_model_loaders

        _import_in_background(import_model_loaders)  # after the stage's own imports
    if replay is not None:
        replay.start()
    failed: list[str] = []
    watch = asyncio.ensure_future(_watch(bus, staged, client, stop, failed))
    ok = False
    try:
        if until_done:
            await _until_done(bus, staged, replay, gen_sink, stop)
        else:
            await stop.wait()
        if failed:
            logger.error("stopping: %s", failed[0])
        logger.info("stopping: draining in-flight work, flushing, committing")
        if replay is not None:
            replay.stop()
        for source in bus.sources:
            source.stop_polling()  # drained (checkpointed, committed, closed) below
        if not failed:
            await staged.drain()  # Dask work in flight: its results reach the sinks
        ok = await bus.drain(drain_timeout if not failed else 10.0)
    except Exception:
        logger.exception("stopping after an error")
        ok = False
    finally:
        watch.cancel()
        if health is not None:
            health.stop()
        for sink in bus.sinks:
            sink.destroy()
        if client is not None:
            await client.close()
        if cluster is not None:
            await cluster.close()
    return 0 if ok and not failed else 1


async def _watch(bus: KafkaBus, stages: Stages, client, stop: asyncio.Event, failed: list[str]) -> None:
    """Request a stop (with a failure) as soon as the process cannot make progress."""
    while not stop.is_set():
        why = bus.failure(stages, client)
        if why is not None:
            failed.append(why)
            stop.set()
            return
        await asyncio.sleep(0.5)


def _serve_health(port: int, bus: KafkaBus, stages: Stages, client: distributed.Client | None) -> HTTPServer:
    """``GET /healthz`` (live): 200 while the stage can make progress, 503 with the reason once it cannot
    (it then exits non-zero); ``GET /readyz``: 200 while every source consumes (in its group, its state
    restored, no error) and the Dask cluster, if any, is connected, else 503 with the reason;
    ``GET /metrics``: the Prometheus metrics (:mod:`tweetoscope.metrics`). Returns the HTTP server."""
    from tornado.httpserver import HTTPServer
    from tornado.web import Application, RequestHandler

    from .metrics import CONTENT_TYPE, StageMetrics

    cut = len(bus.prefix)
    metrics = StageMetrics(bus, stages, bus.outputs, strip=lambda t: t[cut:] if t.startswith(bus.prefix) else t)

    class Metrics(RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", CONTENT_TYPE)
            self.write(metrics.exposition())

    class Alive(RequestHandler):
        def get(self) -> None:
            why = bus.failure(stages, client)
            if why is not None:
                self.set_status(503)
                self.write(f"stuck: {why}\n")
            else:
                self.write("ok\n")

    class Ready(RequestHandler):
        def get(self) -> None:
            reasons = [f"{s.topics} {'restoring state' if s.restoring else 'not consuming'}"
                       for s in bus.sources if not s.ready]
            if client is not None and client.status != "running":
                reasons.append(f"Dask client {client.status}")
            if (why := bus.failure(stages, client)) is not None:
                reasons.append(why)
            if reasons:
                self.set_status(503)
                self.write("not ready: " + "; ".join(reasons) + "\n")
            else:
                self.write("ready\n")

    def log(handler) -> None:  # probes every few seconds: not worth a log line each
        if handler.get_status() >= 500 and handler.request.path != "/readyz":
            logger.warning("%s %s: %d", handler.request.method, handler.request.path, handler.get_status())

    server = HTTPServer(Application([("/healthz", Alive), ("/readyz", Ready), ("/metrics", Metrics)],
                                    log_function=log))
    server.listen(port)
    return server


async def _until_done(bus: KafkaBus, stages: Stages, replay, gen_sink: KafkaSink | None, stop: asyncio.Event) -> None:
    """Wait for the replay, then for every topic to be consumed and committed and every batch done (two
    checks in a row). While the stages are idle, checkpoints are asked for at once rather than in an
    interval: a source with a store commits only at a checkpoint."""
    if replay is not None:
        while not replay.done.is_set() and not stop.is_set():
            await asyncio.sleep(0.1)
        if replay.error is not None:  # the generator raised: the run stops with its error
            raise replay.error
        if gen_sink is not None:
            await gen_sink.flush(60)
    quiet = 0
    while quiet < 2 and not stop.is_set():
        await asyncio.sleep(0.3)
        if not stages.idle:
            quiet = 0
            continue
        for source in bus.sources:
            if source.store is not None and source.n_inflight == 0:
                source.request_checkpoint()
        quiet = quiet + 1 if await bus.quiet() else 0
