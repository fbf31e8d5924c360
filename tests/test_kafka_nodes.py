"""KafkaSource / KafkaSink against a real broker: relay, commit-after-release, kill -9, SIGTERM, rebalance.

No sleep stands in for synchronisation: tests wait for conditions (offsets committed,
records delivered) with timeouts. In-process graphs run on the test's own event loop
(``asyncio.run``); the crash tests run ``tests/kafka_relay.py`` in subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from streamz import Stream
from streamz.sinks import Sink
from tornado.ioloop import IOLoop

from streams.kafka import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, KafkaDeliveryError, KafkaSink, KafkaSource
from streams.records import Record

from helpers import wait_until

RELAY = Path(__file__).with_name("kafka_relay.py")
N_CRASH = 20_000  # messages in the kill -9 and SIGTERM tests


# ------------------------------------------------------------------ helpers


async def until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """``wait_until`` for code running on the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def produce_ids(bootstrap: str, topic: str, n: int, *, headers: bool = False, start: int = 0) -> None:
    """Write records key=value=b"<i>" for start <= i < n (with a header ``h`` if asked).

    Small record batches: a fetch returns at least one whole record batch, so with big
    ones a consumer would read the partitions one after the other instead of together.
    """
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 100})
    for i in range(start, n):
        while True:
            try:
                producer.produce(topic, b"%d" % i, b"%d" % i, headers={"h": f"h{i}"} if headers else None)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


class TopicReader:
    """Reads every partition of a topic from the beginning, incrementally, without a group."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                                     "enable.auto.commit": False})
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.tps = [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in sorted(partitions)]
        self.consumer.assign(self.tps)
        self.next = {tp.partition: 0 for tp in self.tps}
        self.messages: list[ck.Message] = []

    def ends(self) -> dict[int, int]:
        return {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps}

    def read_to_end(self, timeout: float = 30) -> list[ck.Message]:
        """Everything written so far (up to the high watermarks read now) not returned before."""
        ends = self.ends()
        deadline = time.monotonic() + timeout
        new = []
        while any(self.next[p] < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read up to {ends} within {timeout} s"
            for msg in self.consumer.consume(10_000, 0.05):
                assert msg.error() is None, msg.error()
                new.append(msg)
                self.next[msg.partition()] = msg.offset() + 1
        self.messages += new
        return new

    def close(self) -> None:
        self.consumer.close()


COORDINATOR_STARTING = {ck.KafkaError.NOT_COORDINATOR, ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                        ck.KafkaError.COORDINATOR_NOT_AVAILABLE}


class GroupOffsets:
    """The committed offsets of a group on a topic, as the broker has them (-1001: none)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int):
        self.consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.tps = [ck.TopicPartition(topic, p) for p in range(partitions)]

    def get(self, timeout: float = 10) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return {tp.partition: tp.offset for tp in self.consumer.committed(self.tps, timeout=timeout)}
            except ck.KafkaException as exc:  # e.g. NOT_COORDINATOR while __consumer_offsets is created
                if exc.args[0].code() not in COORDINATOR_STARTING or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def total(self) -> int:
        return sum(max(0, o) for o in self.get().values())

    def close(self) -> None:
        self.consumer.close()


def src_offsets(messages: list[ck.Message]) -> Counter[tuple[int, int]]:
    """How often each source (partition, offset) appears in relayed messages (``src`` header)."""
    out: Counter[tuple[int, int]] = Counter()
    for msg in messages:
        partition, offset = dict(msg.headers())["src"].decode().split(":")
        out[(int(partition), int(offset))] += 1
    return out


@dataclass
class Relay:
    """One ``tests/kafka_relay.py`` process; its stdout and stderr go to ``<dir>/<name>.out|.log``."""

    name: str
    proc: subprocess.Popen[bytes]
    dir: Path
    should_run: bool = True

    def log(self) -> str:
        return (self.dir / f"{self.name}.log").read_text()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.dir / f"{self.name}.out").read_text().strip().splitlines()[-1])


class Relays:
    """Starts relay processes; kills the ones still running at teardown."""

    def __init__(self, bootstrap: str, tmp_path: Path):
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.started: list[Relay] = []

    def start(self, source: str, sink: str, group: str, name: str, *args: str) -> Relay:
        with open(self.tmp_path / f"{name}.out", "wb") as out, open(self.tmp_path / f"{name}.log", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-u", str(RELAY), self.bootstrap, source, sink, group, *args],
                                    stdout=out, stderr=err)
        relay = Relay(name, proc, self.tmp_path)
        self.started.append(relay)
        return relay

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """``wait_until``, failing at once (with its log) if a relay that should run has exited."""

        def check() -> Any:
            for relay in self.started:
                if relay.should_run and relay.proc.poll() is not None:
                    raise AssertionError(f"relay {relay.name} exited {relay.proc.returncode}:\n{relay.log()[-3000:]}")
            return condition()

        return wait_until(check, timeout, what)

    def kill(self, relay: Relay) -> None:
        """SIGKILL: no drain, no final commit."""
        relay.should_run = False
        relay.proc.kill()
        assert relay.proc.wait(10) == -signal.SIGKILL

    def stop(self, relay: Relay, timeout: float = 30) -> dict[str, Any]:
        """SIGTERM, expect exit 0 within ``timeout`` seconds, return the relay's JSON summary."""
        relay.should_run = False
        relay.proc.send_signal(signal.SIGTERM)
        code = relay.proc.wait(timeout)
        assert code == 0, f"relay {relay.name} exited {code}:\n{relay.log()[-3000:]}"
        return relay.summary()

    def close(self) -> None:
        for relay in self.started:
            if relay.proc.poll() is None:
                relay.proc.kill()
                relay.proc.wait(10)


@pytest.fixture
def relays(kafka_bootstrap: str, tmp_path: Path):
    r = Relays(kafka_bootstrap, tmp_path)
    yield r
    r.close()


def group_name() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------- in-process


def test_consumed_messages_become_records_per_partition_run_with_drops_and_errors() -> None:
    """``_to_records`` (the source's per-batch conversion) on confluent-kafka's own ``Message`` objects: runs of
    partitions interleaved, a partition not owned (dropped and counted), an error, a null value and no
    timestamp; each record as the message says, the last offset per owned partition."""
    from streams.kafka.source import _to_records

    eof = ck.KafkaError(ck.KafkaError._PARTITION_EOF)
    spec = [("k.a", 0, 10, b"x"), ("k.a", 0, 11, b"y"), ("k.a", 1, 4, None), ("k.b", 0, 7, b"z"),
            ("k.a", 0, 12, b"w"), None, ("k.a", 2, 1, b"dropped"), ("k.a", 2, 2, b"dropped"), ("k.a", 1, 5, b"v")]
    messages = []
    for i, m in enumerate(spec):
        if m is None:
            messages.append(ck.Message(topic="k.a", partition=0, error=eof))
            continue
        topic, part, off, value = m
        extra = {} if i % 2 else {"headers": [("h", b"%d" % i), ("n", None)],
                                  "timestamp": (ck.TIMESTAMP_CREATE_TIME, 1_500 + i)}
        messages.append(ck.Message(topic=topic, partition=part, offset=off, key=b"%d" % i, value=value, **extra))
    owned = {("k.a", 0), ("k.a", 1), ("k.b", 0)}
    records, lasts, dropped, errors = _to_records(messages, {"k.a": "a"}, owned.__contains__)

    kept = [m for m in messages if m.error() is None and (m.topic(), m.partition()) in owned]
    assert [r._fields() for r in records] == [
        ({"k.a": "a"}.get(m.topic(), m.topic()), m.value() or b"", m.key(),
         {k: (v or b"").decode() for k, v in m.headers() or []}, m.partition(), m.offset(),
         m.timestamp()[1] / 1000.0 if m.timestamp()[0] != ck.TIMESTAMP_NOT_AVAILABLE else 0.0) for m in kept]
    assert records[0].timestamp == 1.5 and records[0].headers == {"h": "0", "n": ""} and records[2].value == b""
    assert lasts == {("k.a", 0): 12, ("k.a", 1): 5, ("k.b", 0): 7}
    assert dropped == 2 and [e.code() for e in errors] == [ck.KafkaError._PARTITION_EOF]
    everything, lasts_all, none_dropped, _ = _to_records(messages, {})
    assert len(everything) == 8 and none_dropped == 0 and lasts_all[("k.a", 2)] == 2
    assert everything[0].topic == "k.a"


def test_defaults_merged_beneath_user_config_without_mutating_it(kafka_bootstrap):
    user = {"bootstrap.servers": kafka_bootstrap, "group.id": "g", "enable.auto.commit": True,
            "auto.offset.reset": "latest"}
    before = dict(user)
    source = KafkaSource("t", user)
    assert user == before
    assert source.config["enable.auto.commit"] is False  # forced
    assert source.config["auto.offset.reset"] == "latest"  # user wins
    assert source.config["enable.auto.offset.store"] is CONSUMER_DEFAULTS["enable.auto.offset.store"]
    with pytest.raises(ValueError, match="group.id"):
        KafkaSource("t", {"bootstrap.servers": kafka_bootstrap})
    sink = Stream().to_kafka_group({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50})
    assert isinstance(sink, KafkaSink)
    assert sink.config == {**PRODUCER_DEFAULTS, "bootstrap.servers": kafka_bootstrap, "linger.ms": 50}
    sink.destroy()


def test_relay_from_source_to_sink_is_exact_and_commits_everything(kafka_bootstrap, kafka_topic_factory):
    a, b = kafka_topic_factory(3), kafka_topic_factory(3)
    n = 5000
    produce_ids(kafka_bootstrap, a, n, headers=True)
    group = group_name()
    config = {"bootstrap.servers": kafka_bootstrap, "group.id": group}
    reader = TopicReader(kafka_bootstrap, a)
    ends = {(a, p): end for p, end in reader.ends().items()}
    reader.close()

    async def run() -> KafkaSource:
        source = Stream.from_kafka_group([a], config, batch_size=700, commit_interval=0.1, loop=IOLoop.current())
        sink = source.map(lambda batch: [Record(b, r.value, r.key, r.headers) for r in batch]).to_kafka_group(
            {"bootstrap.servers": kafka_bootstrap})
        source.start()
        try:
            await until(lambda: sink.n_delivered == n, 30, "every record delivered to B")
            await until(lambda: source.committed_offsets() == ends, 10, f"commits up to the end offsets {ends}")
            await until(lambda: source.lag() == {key: 0 for key in ends}, 10, "zero lag")
        finally:
            assert await source.drain(10, sinks=[sink])
            sink.destroy()
        assert source.n_consumed == n
        return source

    asyncio.run(run())
    readers = {t: TopicReader(kafka_bootstrap, t) for t in (a, b)}
    content = {t: defaultdict(list) for t in (a, b)}
    for t, reader in readers.items():
        for msg in reader.read_to_end():
            content[t][msg.partition()].append((msg.key(), msg.value(), msg.headers()))
        reader.close()
    # same partitioner on both topics: partition by partition, same records in the same order
    assert content[b] == content[a]
    assert sum(len(v) for v in content[b].values()) == n
    offsets = GroupOffsets(kafka_bootstrap, group, a, 3)
    assert offsets.get() == {p: len(content[a][p]) for p in range(3)}
    offsets.close()


def test_a_prefix_is_taken_off_by_the_source_and_put_back_by_the_sink(kafka_bootstrap, kafka_topic_factory):
    """A prefixed deployment: the source's records carry the topic without its prefix, every other field as
    consumed; the sink produces each record to the prefixed topic (key, value, headers kept)."""
    from streams.kafka import create_topics

    a = kafka_topic_factory(1)
    prefix, name = a[: a.rindex("-") + 1], a[a.rindex("-") + 1:]
    out = f"{prefix}{uuid.uuid4().hex[:8]}-out"
    create_topics(kafka_bootstrap, {out: 1})
    n = 300
    produce_ids(kafka_bootstrap, a, n, headers=True)
    with pytest.raises(ValueError, match="strip_prefix"):
        KafkaSource([a], {"bootstrap.servers": kafka_bootstrap, "group.id": "g"}, strip_prefix="other-")

    async def run() -> list[Record]:
        source = Stream.from_kafka_group([a], {"bootstrap.servers": kafka_bootstrap, "group.id": group_name()},
                                         batch_size=100, commit_interval=0.1, strip_prefix=prefix,
                                         loop=IOLoop.current())
        seen: list[Record] = []

        def relay(batch: list[Record]) -> list[Record]:
            seen.extend(batch)
            return [Record(out[len(prefix):], r.value, r.key, r.headers) for r in batch]

        sink = source.map(relay).to_kafka_group({"bootstrap.servers": kafka_bootstrap}, topic_prefix=prefix)
        source.start()
        try:
            await until(lambda: sink.n_delivered == n, 30, "every record delivered")
        finally:
            assert await source.drain(10, sinks=[sink])
            sink.destroy()
        return seen

    seen = asyncio.run(run())
    assert {r.topic for r in seen} == {name}
    assert sorted((r.key, r.value, r.headers, r.partition) for r in seen) == sorted(
        (b"%d" % i, b"%d" % i, {"h": f"h{i}"}, 0) for i in range(n))
    assert sorted(r.offset for r in seen) == list(range(n)) and all(r.timestamp > 0 for r in seen)
    reader = TopicReader(kafka_bootstrap, out)
    got = sorted((m.key(), m.value(), {k: v.decode() for k, v in m.headers()}) for m in reader.read_to_end())
    reader.close()
    assert got == sorted((b"%d" % i, b"%d" % i, {"h": f"h{i}"}) for i in range(n))


class Holder(Sink):
    """Keeps every batch and its refs until the test releases it."""

    def __init__(self, upstream: Stream):
        self.batches: list[tuple[list[Record], list[dict[str, Any]]]] = []
        super().__init__(upstream)

    def update(self, x, who=None, metadata=None):
        self._retain_refs(metadata)
        self.batches.append((x, metadata))

    def release(self, i: int) -> None:
        self._release_refs(self.batches[i][1])


def test_commit_waits_for_release_and_for_earlier_batches(kafka_bootstrap, kafka_topic_factory):
    a = kafka_topic_factory(1)
    n = 30
    produce_ids(kafka_bootstrap, a, n)
    group = group_name()
    broker = GroupOffsets(kafka_bootstrap, group, a, 1)

    async def run() -> None:
        source = KafkaSource(a, {"bootstrap.servers": kafka_bootstrap, "group.id": group}, batch_size=10,
                             commit_interval=0.05, loop=IOLoop.current())
        holder = Holder(source)
        source.start()

        def first(i: int) -> int:
            return holder.batches[i][0][0].offset

        def last(i: int) -> int:
            return holder.batches[i][0][-1].offset

        def committed() -> int | None:
            return source.committed_offsets().get((a, 0))

        try:
            await until(lambda: sum(len(x) for x, _ in holder.batches) == n, 20, "all records held")
            assert len(holder.batches) >= 3
            # the zero-count callbacks run on the source's loop, not on streamz's own loop
            assert all(md[0]["ref"].loop is source.loop for _, md in holder.batches)

            assert await source.commit() == {}  # nothing released: nothing to commit
            assert broker.get() == {0: ck.OFFSET_INVALID}

            holder.release(0)
            await until(lambda: committed() == first(1), 10, "commit of batch 0")
            assert broker.get() == {0: first(1)}

            holder.release(2)  # out of order: batch 1 still held
            assert source.n_inflight == len(holder.batches) - 1
            await until(lambda: source.n_inflight == len(holder.batches) - 2, 10, "batch 2 done")
            await source.commit()
            assert committed() == first(1)
            assert broker.get() == {0: first(1)}

            holder.release(1)
            await until(lambda: committed() == last(2) + 1, 10, "commit of batches 1 and 2")
            assert broker.get() == {0: last(2) + 1}

            for i in range(3, len(holder.batches)):
                holder.release(i)
            await until(lambda: committed() == n, 10, "commit of every batch")
            assert all(md[0]["ref"].count == 0 for _, md in holder.batches)
        finally:
            assert await source.drain(10)
            holder.destroy()
        assert source.n_inflight == 0

    asyncio.run(run())
    assert broker.get() == {0: n}
    broker.close()


def test_group_false_reads_all_partitions_from_the_beginning_and_commits_nothing(kafka_bootstrap,
                                                                                 kafka_topic_factory):
    a = kafka_topic_factory(3)
    n = 300
    produce_ids(kafka_bootstrap, a, n)
    group = group_name()
    broker = GroupOffsets(kafka_bootstrap, group, a, 3)
    broker.consumer.commit(offsets=[ck.TopicPartition(a, 0, 5)], asynchronous=False)  # must be ignored

    async def run(config: dict[str, Any]) -> tuple[KafkaSource, list[list[Record]]]:
        source = KafkaSource(a, config, group=False, batch_size=50, commit_interval=0.01, loop=IOLoop.current())
        out = source.sink_to_list()
        source.start()
        try:
            await until(lambda: sum(map(len, out)) == n, 20, "every record read")
        finally:
            assert await source.drain(10)
        return source, out

    for config in ({"bootstrap.servers": kafka_bootstrap, "group.id": group},
                   {"bootstrap.servers": kafka_bootstrap}):  # no group.id needed
        source, out = asyncio.run(run(config))
        assert sorted(int(r.value) for batch in out for r in batch) == list(range(n))
        assert {r.partition for batch in out for r in batch} == {0, 1, 2}
        assert source.committed_offsets() == {}
    assert broker.get() == {0: 5, 1: ck.OFFSET_INVALID, 2: ck.OFFSET_INVALID}
    broker.close()


def test_a_member_left_outside_its_group_is_reported_until_it_is_assigned_again(kafka_bootstrap,
                                                                              kafka_topic_factory):
    """MOCK of a librdkafka hang (confluentinc/librdkafka#3437: after a session timeout under static
    membership the member may never rejoin; it cannot be produced on demand): the lost callback is
    called on the consumer thread as librdkafka calls it, and no rejoin follows. ``rejoin_stalled``
    reports it once the timeout has passed; a real rebalance (a second member joins) clears it."""
    a = kafka_topic_factory(2)
    group = group_name()
    config = {"bootstrap.servers": kafka_bootstrap, "group.id": group, "session.timeout.ms": 6000}

    async def run() -> None:
        source = KafkaSource(a, config, batch_size=50, loop=IOLoop.current())
        source.start()
        other = None
        try:
            await until(lambda: source.joined and source.tracker.assigned(), 30, "the first member assigned")
            assert not source.rejoin_stalled(0.0)
            lost = [ck.TopicPartition(t, p) for t, p in source.tracker.assigned()]
            await source._call(source._on_lost, source.consumer, lost)  # the mocked event
            assert not source.rejoin_stalled(60.0)
            await until(lambda: source.rejoin_stalled(0.2), 5, "the stuck member reported")
            other = KafkaSource(a, config, batch_size=50, loop=IOLoop.current())
            other.start()
            await until(lambda: other.joined and not source.rejoin_stalled(0.2), 60, "a rebalance assigns both")
        finally:
            assert await source.drain(10)
            if other is not None:
                assert await other.drain(10)

    asyncio.run(run())


def test_delivery_error_keeps_the_refs_so_nothing_is_committed(kafka_bootstrap, kafka_topic_factory):
    a = kafka_topic_factory(1)
    b = kafka_topic_factory(1, {"max.message.bytes": "2000"})  # the broker rejects bigger batches
    produce_ids(kafka_bootstrap, a, 10)
    group = group_name()

    def to_b(batch: list[Record]) -> list[Record]:  # record 5 gets an incompressible 20 kB value
        return [Record(b, os.urandom(20_000) if r.value == b"5" else r.value, r.key) for r in batch]

    async def run() -> None:
        source = KafkaSource(a, {"bootstrap.servers": kafka_bootstrap, "group.id": group}, commit_interval=0.01,
                             loop=IOLoop.current())
        sink = source.map(to_b).to_kafka_group({"bootstrap.servers": kafka_bootstrap})
        source.start()
        try:
            await until(lambda: sink.error is not None, 20, "the delivery error")
            assert isinstance(sink.error, KafkaDeliveryError)
            # reported by the broker, not by produce(); the neighbours in its produce batch fail with it
            assert "delivery" in str(sink.error) and sink.n_failed >= 1
            assert source.n_inflight == 1
            assert await source.commit() == {}
            with pytest.raises(KafkaDeliveryError):
                await sink.flush(5)
        finally:
            with pytest.raises(KafkaDeliveryError):  # flush-then-commit: the flush fails, no commit
                await source.drain(10, sinks=[sink])
            sink.destroy()
        assert source.committed_offsets() == {}

    asyncio.run(run())
    broker = GroupOffsets(kafka_bootstrap, group, a, 1)
    assert broker.get() == {0: ck.OFFSET_INVALID}
    broker.close()


def test_full_producer_queue_applies_back_pressure_and_loses_nothing(kafka_bootstrap, kafka_topic_factory):
    a, b = kafka_topic_factory(1), kafka_topic_factory(1)
    n = 3000
    produce_ids(kafka_bootstrap, a, n)
    group = group_name()

    async def run() -> None:
        source = KafkaSource(a, {"bootstrap.servers": kafka_bootstrap, "group.id": group}, batch_size=1000,
                             commit_interval=0.05, loop=IOLoop.current())
        sink = source.map(lambda batch: [Record(b, r.value, r.key) for r in batch]).to_kafka_group(
            {"bootstrap.servers": kafka_bootstrap, "queue.buffering.max.messages": 50})
        waits = []
        update = sink.update
        sink.update = lambda x, who=None, metadata=None: waits.append(update(x, who, metadata)) or waits[-1]
        source.start()
        try:
            await until(lambda: source.committed_offsets().get((a, 0)) == n, 20, "every record committed")
        finally:
            assert await source.drain(10, sinks=[sink])
            sink.destroy()
        assert sink.n_delivered == n and sink.error is None
        assert any(w is not None for w in waits), "the queue never filled up: no back-pressure shown"

    asyncio.run(run())
    reader = TopicReader(kafka_bootstrap, b)
    assert [int(m.value()) for m in reader.read_to_end()] == list(range(n))
    reader.close()


# ---------------------------------------------------------------- subprocesses


SLOW = ("--instance-id", "relay", "--batch-size", "250", "--delay", "0.04", "--commit-interval", "0.3")


def relay_mid_stream(kafka_bootstrap, kafka_topic_factory, relays):
    """Topics A (N_CRASH ids) and B, and a slow relay A -> B that has committed 4000 records of A.

    Returns ``(a, b, group, broker offsets of A, the relay)``.
    """
    a, b = kafka_topic_factory(2), kafka_topic_factory(2)
    produce_ids(kafka_bootstrap, a, N_CRASH)
    group = group_name()
    broker = GroupOffsets(kafka_bootstrap, group, a, 2)
    first = relays.start(a, b, group, "first", *SLOW)
    relays.wait_until(lambda: broker.total() >= 4000, 30, "the first relay to commit 4000 records")
    return a, b, group, broker, first


def test_kill9_then_restart_loses_nothing(kafka_bootstrap, kafka_topic_factory, relays):
    a, b, group, broker, first = relay_mid_stream(kafka_bootstrap, kafka_topic_factory, relays)
    relays.kill(first)
    committed_at_kill = broker.total()
    reader = TopicReader(kafka_bootstrap, b)
    in_b_at_kill = len(reader.read_to_end())
    assert committed_at_kill < N_CRASH and in_b_at_kill < N_CRASH, "killed too late to show anything"

    second = relays.start(a, b, group, "second", *SLOW)
    relays.wait_until(lambda: broker.total() == N_CRASH, 60, "the second relay to commit everything")
    relays.stop(second)
    reader.read_to_end()
    ids = [int(m.value()) for m in reader.messages]
    missing = set(range(N_CRASH)) - set(ids)
    duplicates = len(ids) - len(set(ids))
    print(f"\nkill -9: committed {committed_at_kill} and {in_b_at_kill} in B at kill; after restart "
          f"{len(ids)} records in B, {len(missing)} missing, {duplicates} duplicates")
    assert not missing
    assert duplicates <= in_b_at_kill - committed_at_kill + 250 * 2  # at most what was uncommitted at kill
    reader.close()
    broker.close()


def test_sigterm_drains_flushes_commits_and_exits_0(kafka_bootstrap, kafka_topic_factory, relays):
    a, b, group, broker, first = relay_mid_stream(kafka_bootstrap, kafka_topic_factory, relays)
    summary = relays.stop(first)
    assert summary["drained"] and summary["error"] is None
    committed = {p: max(0, o) for p, o in broker.get().items()}
    assert 0 < sum(committed.values()) < N_CRASH, "stopped too late to show anything"
    reader = TopicReader(kafka_bootstrap, b)
    delivered = src_offsets(reader.read_to_end())
    # exactly what was delivered was committed: every source offset below the commit, once, nothing above
    assert set(delivered.values()) == {1}
    assert sorted(delivered) == [(p, o) for p in sorted(committed) for o in range(committed[p])]
    assert summary["delivered"] == sum(committed.values())

    second = relays.start(a, b, group, "second", *SLOW)
    relays.wait_until(lambda: broker.total() == N_CRASH, 60, "the second relay to commit everything")
    relays.stop(second)
    reader.read_to_end()
    ids = [int(m.value()) for m in reader.messages]
    assert sorted(ids) == list(range(N_CRASH))  # nothing lost, no duplicate
    reader.close()
    broker.close()


class CommittedOnlyDelivered:
    """Checks, each time it is called, that every committed source offset was delivered to B."""

    def __init__(self, bootstrap: str, group: str, source: str, partitions: int, sink: str):
        self.broker = GroupOffsets(bootstrap, group, source, partitions)
        self.reader = TopicReader(bootstrap, sink)
        self.seen: dict[int, set[int]] = defaultdict(set)
        self.delivered_below = dict.fromkeys(range(partitions), 0)  # first offset never delivered
        self.checks = 0

    def __call__(self) -> int:
        committed = self.broker.get()  # first the commits, then what B holds by now
        for partition, offset in src_offsets(self.reader.read_to_end()):
            self.seen[partition].add(offset)
        for partition, offset in committed.items():
            while self.delivered_below[partition] in self.seen[partition]:
                self.delivered_below[partition] += 1
            assert offset <= self.delivered_below[partition], (
                f"partition {partition}: committed {offset} but offset {self.delivered_below[partition]} "
                "was never delivered")
        self.checks += 1
        return sum(max(0, o) for o in committed.values())

    def close(self) -> None:
        self.broker.close()
        self.reader.close()


def test_rebalance_commits_revoked_partitions_and_loses_nothing(kafka_bootstrap, kafka_topic_factory, relays):
    a, b = kafka_topic_factory(4), kafka_topic_factory(4)
    n = 10_000
    produce_ids(kafka_bootstrap, a, n // 2)
    group = group_name()
    check = CommittedOnlyDelivered(kafka_bootstrap, group, a, 4, b)
    # small fetches, so that all four partitions progress together (as on a live stream)
    slow = ("--batch-size", "100", "--delay", "0.03", "--commit-interval", "0.3",
            "-X", "max.partition.fetch.bytes=2048")

    first = relays.start(a, b, group, "first", *slow)
    relays.wait_until(lambda: check() >= 1500, 30, "the first relay to commit 1500 records")
    second = relays.start(a, b, group, "second", *slow)
    # the second half is posted once the second relay holds partitions, so that both relays consume
    # whatever the start-up time of the second (the first may have drained the first half by then)
    relays.wait_until(lambda: re.search(r"assigned \[\(", second.log()), 60, "the second relay to get partitions")
    produce_ids(kafka_bootstrap, a, n, start=n // 2)
    relays.wait_until(lambda: check() == n, 60, "both relays to commit everything")
    summaries = [relays.stop(first), relays.stop(second)]
    assert "revoked" in first.log()
    assert all(s["consumed"] > 0 for s in summaries), summaries  # the second relay took partitions
    ids = [int(m.value()) for m in check.reader.messages]
    assert set(ids) == set(range(n))
    print(f"\nrebalance: {check.checks} checks, {len(ids) - n} duplicates, consumed "
          f"{[s['consumed'] for s in summaries]}")
    check.close()
