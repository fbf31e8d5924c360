"""Kafka client settings and admin helpers: safe defaults, topics, and reading a topic without a group.

Every client the project builds (producers, consumers, admin clients) gets the same
connection settings, security included: pass them in ``config`` (see
``tweetoscope.config.Settings.kafka_config``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["PRODUCER_DEFAULTS", "CONSUMER_DEFAULTS", "merged", "connection", "wait_for_broker", "create_topics", "TopicReader",
           "read_topic", "committed_offsets", "end_offsets", "retriable"]

logger = logging.getLogger(__name__)

#: Producer settings merged beneath the caller's config: no loss, no duplicates from
#: retries, per-partition order kept.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
}

#: Consumer settings merged beneath the caller's config. ``enable.auto.commit`` is
#: forced off by :class:`streams.kafka.KafkaSource` whatever the caller says. The
#: cooperative assignor moves only the partitions that change owner in a rebalance
#: (a member keeps the state of the others). ``fetch.queue.backoff.ms``: once a partition's
#: local queue holds ``queued.min.messages`` (100,000), librdkafka waits this long before
#: fetching it again (default 1,000 ms): a consumer that empties its queue faster than that
#: reads nothing for the rest of the second (librdkafka issue #2879). With 20 ms the collector
#: read 1.9x faster on a backlog (BENCHMARKS.md, "The consumer's fetch back-off").
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "fetch.queue.backoff.ms": 20,
}

#: Settings of a client config that say how to reach and authenticate to the cluster.
_CONNECTION_KEYS = ("bootstrap.servers", "security.protocol", "client.id", "enable.ssl.certificate.verification")


def merged(defaults: Mapping[str, Any], config: Mapping[str, Any],
           forced: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new dict: ``defaults``, overridden by ``config``, overridden by ``forced``."""
    return {**defaults, **config, **(forced or {})}


def connection(config: Mapping[str, Any]) -> dict[str, Any]:
    """The connection part of a client config (bootstrap servers, security), for admin clients and readers."""
    return {k: v for k, v in config.items() if k in _CONNECTION_KEYS or k.startswith(("sasl.", "ssl."))}


_NOT_READY = (ck.KafkaError.NOT_LEADER_FOR_PARTITION, ck.KafkaError.LEADER_NOT_AVAILABLE,
              ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError.NOT_COORDINATOR,
              ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS, ck.KafkaError.COORDINATOR_NOT_AVAILABLE,
              ck.KafkaError._TRANSPORT, ck.KafkaError._TIMED_OUT, ck.KafkaError._ALL_BROKERS_DOWN,
              # the client's metadata does not list the partition yet (a topic just created or grown)
              ck.KafkaError._UNKNOWN_PARTITION)


def _client_config(config: Mapping[str, Any] | str) -> dict[str, Any]:
    return {"bootstrap.servers": config} if isinstance(config, str) else connection(config)


def retriable(exc: BaseException) -> bool:
    """Whether a Kafka error may go away by itself (a broker or coordinator not ready, a timeout)."""
    error = exc.args[0] if isinstance(exc, ck.KafkaException) and exc.args else None
    return isinstance(error, ck.KafkaError) and (error.retriable() or error.code() in _NOT_READY)


def _retry(call, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(max(0.1, min(deadline - time.monotonic(), 5.0)))
        except ck.KafkaException as exc:
            if not retriable(exc) or time.monotonic() >= deadline:
                raise
            logger.debug("%s: %s; retrying", what, exc)
            time.sleep(0.1)


def wait_for_broker(config: Mapping[str, Any] | str, timeout: float = 30.0) -> None:
    """Block until a broker answers a metadata request, for up to ``timeout`` seconds.

    ``config``: a client config (or a bootstrap address). Raises ``PermissionError`` at once if
    the broker refuses the credentials, ``TimeoutError`` if no broker answers in time.
    """
    config = _client_config(config)
    refused: list[ck.KafkaError] = []

    def on_error(err: ck.KafkaError) -> None:
        if err.code() in (ck.KafkaError._AUTHENTICATION, ck.KafkaError.SASL_AUTHENTICATION_FAILED):
            refused.append(err)

    deadline = time.monotonic() + timeout
    admin = AdminClient({**config, "error_cb": on_error})
    while True:
        left = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.1, min(left, 1.0)))
            return
        except ck.KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if refused:
                raise PermissionError(f"the Kafka cluster at {config.get('bootstrap.servers')} refused the "
                                      f"credentials of user {config.get('sasl.username')!r}: {refused[0].str()}") from exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Kafka broker answered at {config.get('bootstrap.servers')} within "
                                   f"{timeout} s: {exc}") from exc
            time.sleep(0.1)


def create_topics(
    config: Mapping[str, Any] | str,
    topics: Mapping[str, int],
    replication: int = 1,
    topic_config: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> None:
    """Create ``{name: partitions}`` topics (existing ones are fine) and wait until they have leaders.

    ``topic_config`` holds topic settings (e.g. ``{"cleanup.policy": "compact"}``); ``timeout``
    is in seconds. Raises ``confluent_kafka.KafkaException`` if a creation fails for
    another reason than "already exists", ``TimeoutError`` if the topics do not become
    ready in time.
    """
    config = _client_config(config)
    deadline = time.monotonic() + timeout
    admin = AdminClient(config)
    new = [NewTopic(name, num_partitions=n, replication_factor=replication, config=dict(topic_config or {}))
           for name, n in topics.items()]
    if not new:
        return
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    while True:
        metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        missing = [name for name in topics
                   if (info := metadata.topics.get(name)) is None or info.error is not None or not info.partitions
                   or any(p.leader < 0 for p in info.partitions.values())]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics {missing} not ready after {timeout} s")
        time.sleep(0.05)


def _partitions(consumer: ck.Consumer, topic: str, timeout: float) -> list[int]:
    """The partitions ``topic`` has now (none if it does not exist)."""
    meta = _retry(lambda t: consumer.list_topics(topic, timeout=t), timeout, f"metadata of {topic}")
    info = meta.topics.get(topic)
    return sorted(info.partitions) if info is not None and info.error is None else []


def _reader_consumer(config: Mapping[str, Any] | str, **extra: Any) -> ck.Consumer:
    return ck.Consumer({**_client_config(config), "group.id": f"tweetoscope-reader-{uuid.uuid4().hex}",
                        "enable.auto.commit": False,
                        "fetch.queue.backoff.ms": CONSUMER_DEFAULTS["fetch.queue.backoff.ms"], **extra})


class TopicReader:
    """Reads partitions of a topic from their beginning, without a consumer group (nothing is committed).

    Used to restore state from a changelog, by ``tweetoscope alerts`` and by the tests
    (the stages follow ``models`` with a :class:`streams.kafka.KafkaSource` without a group).
    ``partitions`` None means every partition the topic has now; a topic that does not
    exist reads as empty. The partitions are assigned on the first read, so that
    :meth:`ends` alone fetches no message.
    :meth:`read_to_end` returns what was written up to the end offsets measured when it is
    called; :meth:`poll` returns whatever arrived (for following a topic).
    """

    def __init__(self, config: Mapping[str, Any] | str, topic: str, partitions: Iterable[int] | None = None,
                 *, timeout: float = 10.0):
        self.consumer = _reader_consumer(config, **{"enable.partition.eof": True, "auto.offset.reset": "earliest"})
        self.topic = topic
        self.partitions = sorted(_partitions(self.consumer, topic, timeout) if partitions is None else partitions)
        self.timeout = timeout
        self.next = {p: 0 for p in self.partitions}
        self._assigned = False

    def _assign(self) -> None:
        if not self._assigned and self.partitions:
            self.consumer.assign([ck.TopicPartition(self.topic, p, ck.OFFSET_BEGINNING) for p in self.partitions])
        self._assigned = True

    def ends(self) -> dict[int, int]:
        """The high watermark (next offset to be written) of each partition, retrying while leaders move."""
        return {p: _retry(lambda t, p=p: self.consumer.get_watermark_offsets(ck.TopicPartition(self.topic, p),
                                                                              timeout=t)[1],
                          self.timeout, f"end offset of {self.topic}[{p}]")
                for p in self.partitions}

    def read_to_end(self, timeout: float = 60.0) -> list[ck.Message]:
        """Every message up to the end offsets measured now, not returned before (tombstones included).

        Raises ``TimeoutError`` if they cannot be read within ``timeout`` seconds.
        """
        ends = self.ends()
        self._assign()
        deadline = time.monotonic() + timeout
        out: list[ck.Message] = []
        todo = {p for p, end in ends.items() if self.next[p] < end}
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} up to {ends} within {timeout} s")
            for msg in self.consumer.consume(10_000, 0.1):
                err = msg.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        if msg.offset() >= ends.get(msg.partition(), 0):
                            todo.discard(msg.partition())
                        continue
                    if err.fatal() or not err.retriable():
                        raise ck.KafkaException(err)
                    continue
                self.next[msg.partition()] = msg.offset() + 1
                if msg.offset() < ends[msg.partition()]:
                    out.append(msg)
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
        return out

    def poll(self, timeout: float = 0.1, max_messages: int = 10_000) -> list[ck.Message]:
        """Messages that arrived (up to ``max_messages``), waiting up to ``timeout`` seconds for the first."""
        out = []
        self._assign()
        for msg in self.consumer.consume(max_messages, timeout) if self.partitions else ():
            err = msg.error()
            if err is not None:
                if err.code() != ck.KafkaError._PARTITION_EOF and (err.fatal() or not err.retriable()):
                    raise ck.KafkaException(err)
                continue
            self.next[msg.partition()] = msg.offset() + 1
            out.append(msg)
        return out

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_topic(config: Mapping[str, Any] | str, topic: str, *, follow: bool = False,
               timeout: float = 1.0) -> Iterator[ck.Message]:
    """The messages of ``topic`` from its beginning; stop at its end unless ``follow``."""
    with TopicReader(config, topic) as reader:
        yield from reader.read_to_end()
        while follow:
            yield from reader.poll(timeout)


def committed_offsets(config: Mapping[str, Any] | str, group: str, topic: str,
                      timeout: float = 10.0) -> dict[int, int]:
    """The offsets ``group`` committed on each partition of ``topic`` (-1001 where none)."""
    consumer = ck.Consumer({**_client_config(config), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [ck.TopicPartition(topic, p) for p in _partitions(consumer, topic, timeout)]
        got = _retry(lambda t: consumer.committed(tps, timeout=t), timeout, f"offsets of {group}") if tps else []
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def end_offsets(config: Mapping[str, Any] | str, topics: Iterable[str], timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of ``topics`` (one consumer, no message fetched)."""
    consumer = _reader_consumer(config)
    try:
        return {(topic, p): _retry(lambda t, tp=ck.TopicPartition(topic, p): consumer.get_watermark_offsets(
                    tp, timeout=t)[1], timeout, f"end offset of {topic}[{p}]")
                for topic in topics for p in _partitions(consumer, topic, timeout)}
    finally:
        consumer.close()
