"""Where the dashboard reads a running pipeline: the in-memory bus of the run it is served beside, an
embedded run's output folder, or the Kafka topics.

A feed's :meth:`poll` returns the messages that arrived since the previous call, as
``(topic, message)`` pairs (messages decoded by :mod:`tweetoscope.schemas`; for
``models``, the model's ``(T_obs, version)``), plus counters for the health panel.
``status`` is ``None`` while the pipeline is readable, else a sentence saying why not.
:class:`tweetoscope.dashboard.Dashboard` calls :meth:`poll` on a thread of its own, never on the
event loop that serves the pages.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ..batches import SeriesBatch
from ..config import Settings
from ..schemas import TOPICS, Alert, Forecast, Sample, Serie, SerieArrays, Stat

__all__ = ["Polled", "MemoryFeed", "OutDirFeed", "KafkaFeed", "READ_TOPICS"]

#: Topics whose messages the dashboard decodes (``tweets`` are only counted).
READ_TOPICS = ("forecasts", "alerts", "stats", "samples", "cascade_series", "models")


def _messages(batch: list) -> list:
    """What the in-memory feed keeps of a batch: a batch of series made in this process as its
    :class:`SerieArrays` (its records are not made), any other batch as its records."""
    return batch.arrays if type(batch) is SeriesBatch else batch


#: Types of the JSON values of each read topic, for the JSONL files.
_TYPES: dict[str, Any] = {"forecasts": Forecast, "alerts": Alert, "stats": Stat, "samples": Sample,
                          "cascade_series": Serie}


@dataclass
class Polled:
    """What one poll brought: messages in arrival order, tweets counted, consumer lag per topic."""

    messages: list[tuple[str, Any]] = field(default_factory=list)
    tweets: int = 0
    lag: dict[str, int] | None = None  # None: not applicable (embedded run)


class MemoryFeed:
    """The topics of a run's in-memory bus (:class:`streams.memory.MemoryBus`), as they are emitted.

    Sinks on the bus keep the records of :data:`READ_TOPICS` (the last ``capacity``: a dashboard
    that falls behind shows the latest) and count the tweets; :meth:`poll` (on another thread)
    decodes what arrived since the previous call. Nothing is read from files.
    """

    def __init__(self, bus, capacity: int = 200_000):
        self.source = "this run (in memory)"
        self.status: str | None = None
        # (topic, Record or SerieArrays), appended on the loop, taken by poll
        self._pending: deque = deque(maxlen=capacity)
        self._tweets = self._tweets_seen = 0
        for topic in READ_TOPICS:
            bus.topic(topic).sink(lambda batch, t=topic: self._pending.extend((t, r) for r in _messages(batch)))
        bus.topic("tweets").sink(self._count)

    def _count(self, batch: list) -> None:
        self._tweets += len(batch)

    def poll(self) -> Polled:
        got = Polled()
        total = self._tweets
        got.tweets, self._tweets_seen = total - self._tweets_seen, total
        for _ in range(len(self._pending)):
            topic, r = self._pending.popleft()
            if topic == "models":
                got.messages.append((topic, (int(r.key or b"0"), int(r.headers.get("version", 0)))))
                continue
            if type(r) is SerieArrays:
                got.messages.append((topic, r.serie()))
                continue
            try:
                got.messages.append((topic, TOPICS[topic].decode(r.value)))
            except ValueError:
                continue
        return got

    def close(self) -> None:
        pass


class OutDirFeed:
    """Tails the ``<topic>.jsonl`` files of an embedded run's output folder (only complete lines)."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.offsets: dict[str, int] = {}
        self.status: str | None = None
        self.source = f"output folder {self.out_dir}"

    def poll(self, max_bytes: int = 32 * 2**20) -> Polled:
        got = Polled()
        if not self.out_dir.is_dir() or not any(self.out_dir.glob("*.jsonl")):
            self.status = (f"No pipeline to read: {self.out_dir} holds no pipeline output yet. "
                           f"Start one with: tweetoscope run --data PATH --out {self.out_dir}")
            return got
        self.status = None
        for topic in ("tweets", *READ_TOPICS):
            data = self._read(topic, max_bytes)
            if not data:
                continue
            if topic == "tweets":
                got.tweets += data.count(b"\n")
                continue
            for line in data.splitlines():
                rec = orjson.loads(line)
                if topic == "models":
                    got.messages.append((topic, (int(rec["key"]), int(rec.get("headers", {}).get("version", 0)))))
                    continue
                try:
                    got.messages.append((topic, msgspec.convert(rec["value"], _TYPES[topic])))
                except msgspec.ValidationError:
                    continue
        return got

    def _read(self, topic: str, max_bytes: int) -> bytes:
        path = self.out_dir / f"{topic}.jsonl"
        offset = self.offsets.get(topic, 0)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return b""
        if size < offset:  # a new run replaced the file
            offset = 0
        if size == offset:
            return b""
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(max_bytes)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offsets[topic] = offset + end
        return data[:end]

    def close(self) -> None:
        pass


class KafkaFeed:
    """Reads the pipeline's topics from their beginning (no consumer group: nothing is committed).

    ``tweets`` are counted from their high watermarks, not consumed; consumer lag per
    topic is the high watermark minus the offsets committed by the stage that reads it.
    """

    LAG_EVERY = 2.0  # seconds between two lag measurements

    def __init__(self, settings: Settings):
        import confluent_kafka as ck

        self.ck = ck
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.source = f"Kafka at {settings.kafka}"
        self.status: str | None = None
        self.consumer = ck.Consumer({**settings.kafka_config(), "group.id": "tweetoscope-dashboard",
                                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                     "enable.partition.eof": False})
        self.assigned: set[str] = set()
        self.tweets_seen: int | None = None
        self.group_consumers: dict[str, Any] = {}
        self._lag: dict[str, int] = {}
        self._lag_at = 0.0

    def _partitions(self, topic: str, timeout: float = 2.0) -> list[int]:
        meta = self.consumer.list_topics(self.prefix + topic, timeout=timeout)
        info = meta.topics.get(self.prefix + topic)
        if info is None or info.error is not None:
            return []
        return sorted(info.partitions)

    def poll(self, max_messages: int = 20_000) -> Polled:
        ck = self.ck
        got = Polled(lag=self._lag)
        try:
            missing = [t for t in READ_TOPICS if t not in self.assigned]
            if missing:
                new = []
                for topic in missing:
                    parts = self._partitions(topic)
                    if parts:
                        self.assigned.add(topic)
                        new += [ck.TopicPartition(self.prefix + topic, p, ck.OFFSET_BEGINNING) for p in parts]
                if new:
                    self.consumer.incremental_assign(new)
            if not self.assigned:
                self.status = (f"No pipeline to read: no pipeline topics on Kafka at {self.settings.kafka} yet. "
                               f"Start one with: tweetoscope run --kafka {self.settings.kafka}")
                return got
            self.status = None
            got.tweets = self._count_tweets()
            for msg in self.consumer.consume(num_messages=max_messages, timeout=0.05):
                if msg.error():
                    continue
                topic = msg.topic()[len(self.prefix):]
                if topic == "models":
                    headers = dict(msg.headers() or [])
                    version = int(headers.get("version", b"0").decode() or 0)
                    got.messages.append((topic, (int((msg.key() or b"0").decode()), version)))
                    continue
                try:
                    got.messages.append((topic, TOPICS[topic].decode(msg.value())))
                except ValueError:
                    continue
            if time.monotonic() - self._lag_at > self.LAG_EVERY:
                self._lag = got.lag = self._measure_lag()
                self._lag_at = time.monotonic()
        except ck.KafkaException as exc:
            self.status = f"No pipeline to read: Kafka at {self.settings.kafka} does not answer ({exc})"
        return got

    def _high(self, topic: str) -> dict[int, int]:
        tps = [self.ck.TopicPartition(self.prefix + topic, p) for p in self._partitions(topic)]
        return {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=2.0)[1] for tp in tps}

    def _count_tweets(self) -> int:
        total = sum(self._high("tweets").values())
        new = 0 if self.tweets_seen is None else max(0, total - self.tweets_seen)
        self.tweets_seen = total
        return new

    def _measure_lag(self) -> dict[str, int]:
        """High watermark minus committed offset of each consumed topic's stage group, summed over partitions."""
        from ..kafka_mode import CONSUMERS, group_id

        lag = {}
        for topic, (stage, grouped) in CONSUMERS.items():
            if not grouped or topic == "samples":
                continue
            group = group_id(self.settings, stage)
            consumer = self.group_consumers.get(group)
            if consumer is None:
                consumer = self.group_consumers[group] = self.ck.Consumer(
                    {**self.settings.kafka_config(), "group.id": group, "enable.auto.commit": False})
            high = self._high(topic)
            if not high:
                continue
            committed = consumer.committed([self.ck.TopicPartition(self.prefix + topic, p) for p in high], timeout=2.0)
            lag[topic] = sum(high[tp.partition] - max(tp.offset, 0) for tp in committed)
        return lag

    def close(self) -> None:
        for c in (self.consumer, *self.group_consumers.values()):
            c.close()
