"""Kafka source and sink nodes for streamz with at-least-once offset commits.

Why our own nodes: streamz's ``from_kafka`` leaves auto-commit on, so a ``kill -9``
loses whatever was auto-committed but not yet processed; ``from_kafka_batched``
never joins the consumer group. Here:

* :class:`KafkaSource` (``Stream.from_kafka_group``) is a consumer-group member. It
  emits ``list[Record]`` batches, each with a :class:`streamz.core.RefCounter` in its
  metadata, and commits a partition's offset only up to the end of the longest run of
  consecutive batches whose counters reached zero (every downstream node let go).
* :class:`KafkaSink` (``Stream.to_kafka_group``) retains a batch's refs on arrival and
  releases them only when the broker acknowledged every record of the batch (delivery
  callback), never when ``produce()`` returns. So a source offset is committed only
  after everything derived from it has been written: at-least-once, end to end.
  Downstream stages must therefore be idempotent (on ``(cid, T_obs)`` in Tweetoscope).

Threads and loops
    All graph work (``_emit``, ref releases, the zero-count callbacks, the sink's
    ``producer.poll``) runs on the source's event loop (``source.loop``; the source
    passes it to every ``RefCounter`` it creates, otherwise streamz would pick its own
    background loop or a Dask client's loop). Every call on the consumer (subscribe,
    consume, commit, position, close) runs on one dedicated thread, so ``consume()``
    never blocks the loop and the (not thread-safe) consumer is used by one thread only.
    The rebalance callbacks run on that thread too, inside ``consume()``.

Shutting down a stage (SIGTERM)
    The signal handler only requests a stop. The stage's main coroutine then runs, in
    this order: stop the sources (``source.stop()``: what was consumed but not yet
    emitted is dropped and will be redelivered), drain (wait until every emitted batch
    is done, i.e. delivered by the sinks that hold its refs), flush the sinks (anything
    written outside the refs; raise if undelivered), commit (synchronously), close,
    exit 0. ``await source.drain(timeout, sinks=[sink])`` performs these steps in this
    order; a failed flush or a drain timeout means "exit non-zero": what was not
    delivered is not committed and will be consumed again::

        source = Stream.from_kafka_group("tweets", consumer_config, loop=IOLoop.current())
        sink = source.map(process).to_kafka_group(producer_config)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        source.start()
        await stop.wait()
        sys.exit(0 if await source.drain(30, sinks=[sink]) else 1)

    Give each instance a stable ``group.instance.id`` (static membership, e.g. the pod
    name): a restarted instance then gets its partitions back at once, instead of
    after the dead member's ``session.timeout.ms`` (45 s by default).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic
from streamz import Stream
from streamz.core import RefCounter
from streamz.sinks import Sink
from streamz.sources import Source

from .records import Record

__all__ = [
    "PRODUCER_DEFAULTS",
    "CONSUMER_DEFAULTS",
    "KafkaSource",
    "KafkaSink",
    "KafkaDeliveryError",
    "create_topics",
    "wait_for_broker",
]

logger = logging.getLogger(__name__)
_FINAL_COMMIT_ATTEMPTS = 5

#: Producer settings merged beneath the caller's config: no loss, no duplicates from
#: retries, per-partition order kept.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
}

#: Consumer settings merged beneath the caller's config. ``enable.auto.commit`` is
#: forced off by :class:`KafkaSource` whatever the caller says.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
}

TopicPartitionKey = tuple[str, int]


def _merged(defaults: Mapping[str, Any], config: Mapping[str, Any],
            forced: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new dict: ``defaults``, overridden by ``config``, overridden by ``forced``."""
    return {**defaults, **config, **(forced or {})}


# --------------------------------------------------------------------------- source


@dataclass(eq=False, slots=True)
class _Segment:
    """The part of one emitted batch that lies in one partition (its last offset)."""

    last: int
    done: bool = False


@dataclass(eq=False, slots=True)
class _Partition:
    """Commit bookkeeping of one assigned partition.

    ``segments`` holds the emitted, not yet committable segments in consumption order;
    ``committable`` is the offset to commit next (last offset of the longest done
    prefix + 1), ``committed`` what this source last committed.
    """

    segments: deque[_Segment] = field(default_factory=deque)
    committable: int | None = None
    committed: int | None = None

    def advance(self) -> None:
        while self.segments and self.segments[0].done:
            self.committable = self.segments.popleft().last + 1


@dataclass(eq=False, slots=True)
class _Batch:
    """One emitted batch: its segments (one per partition) and whether it is done."""

    parts: list[tuple[_Partition, _Segment]]
    size: int
    done: bool = False


def _close_consumer(consumer: ck.Consumer) -> None:
    try:
        consumer.close()
    except RuntimeError:  # already closed
        pass
    except ck.KafkaException as exc:
        logger.warning("closing the Kafka consumer failed: %s", exc)


def _headers(raw: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    if not raw:
        return {}
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in raw}


def _to_record(msg: ck.Message) -> Record:
    ts_type, ts_ms = msg.timestamp()
    value = msg.value()
    return Record(
        topic=msg.topic(),
        value=value if value is not None else b"",
        key=msg.key(),
        headers=_headers(msg.headers()),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp=ts_ms / 1000.0 if ts_type != ck.TIMESTAMP_NOT_AVAILABLE else 0.0,
    )


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("Kafka source background call failed", exc_info=future.exception())


@Stream.register_api(staticmethod, attribute_name="from_kafka_group")
class KafkaSource(Source):
    """Consume Kafka topics as a consumer-group member; emit ``list[Record]`` batches.

    Each non-empty result of ``consumer.consume()`` is emitted as one batch (record
    timestamps in seconds; a null value becomes ``b""``) with
    ``metadata=[{"ref": RefCounter(...)}]``; the source awaits what ``_emit`` returns
    before consuming again (back-pressure). A batch is *done* when its counter reaches
    zero. Per partition, the source commits (synchronously, checking each partition's
    error) the offset after the longest run of consecutive done batches, at most every
    ``commit_interval`` seconds, on revocation (then forgets the revoked partitions),
    on stop and in :meth:`drain`. Batches still in flight when a partition is revoked
    are never committed by this member: their records are redelivered (at-least-once).

    Parameters
    ----------
    topics:
        A topic name or a sequence of names.
    config:
        librdkafka consumer settings (``bootstrap.servers``, ``group.id``, ...), merged
        over :data:`CONSUMER_DEFAULTS`; ``enable.auto.commit`` is always off. The
        caller's dict is not modified.
    batch_size:
        Most records per batch (``consume(num_messages=...)``).
    poll_timeout:
        Seconds one ``consume()`` call waits for records; also bounds how long
        :meth:`stop` takes to take effect.
    commit_interval:
        Least number of seconds between two periodic commits.
    group:
        True: join the group ``config["group.id"]`` (``subscribe``). False: read every
        partition of the topics from the beginning (``assign``) and never commit, e.g.
        for a topic that every instance must read in full; partitions added later are
        not picked up.
    start:
        Start consuming at once.
    loop:
        The tornado IOLoop the graph runs on; by default streamz's (a background
        thread, or the Dask client's loop).
    stream_name:
        Name of the node.
    """

    def __init__(
        self,
        topics: str | Sequence[str],
        config: Mapping[str, Any],
        *,
        batch_size: int = 10_000,
        poll_timeout: float = 0.2,
        commit_interval: float = 1.0,
        group: bool = True,
        start: bool = False,
        loop: Any = None,
        stream_name: str | None = None,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ValueError("KafkaSource needs at least one topic")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if group and not config.get("group.id"):
            raise ValueError("KafkaSource(group=True) needs config['group.id']")
        self.config = _merged(CONSUMER_DEFAULTS, config, {"enable.auto.commit": False})
        if not group:
            # librdkafka wants a group.id even for assign(); nothing is ever committed.
            self.config.setdefault("group.id", f"tweetoscope-reader-{uuid.uuid4().hex}")
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.commit_interval = commit_interval
        self.group = group
        self.consumer: ck.Consumer | None = None
        self.error: BaseException | None = None
        self.n_consumed = 0
        self.n_batches = 0
        self.joined = False  # True once the group assigned this member its partitions (or, group=False, assigned)
        self._executor: ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()  # _parts, _committed, _lag (consumer thread vs loop)
        self._parts: dict[TopicPartitionKey, _Partition] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._lag: dict[TopicPartitionKey, int] = {}
        self._inflight = 0
        self._commit_allowed = True
        self._commit_handle: Any = None
        self._last_commit = 0.0
        self._draining = False
        self._closing = False
        self._loop_exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._shutdown_ok = False  # whether the last close committed every done offset
        self._idle = asyncio.Event()
        super().__init__(start=start, loop=loop, stream_name=stream_name)

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Build the consumer and start polling on ``self.loop`` (no-op if running)."""
        if not self.stopped:
            return
        if self.consumer is not None:
            raise RuntimeError("KafkaSource is still shutting down; start it again once drain() returned")
        self.consumer = ck.Consumer(self.config)
        self.joined = False
        self._finalizer = weakref.finalize(self, _close_consumer, self.consumer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-source-{self.topics[0]}")
        self.error = None
        self._commit_allowed = True
        self._loop_exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._idle = asyncio.Event()
        if self._inflight == 0:  # batches of a previous run may still be in flight
            self._idle.set()
        super().start()

    def stop_polling(self) -> None:
        """Stop consuming but keep the consumer open for :meth:`drain` (which then waits for the
        batches in flight, commits and closes). Stopping several sources before draining them one
        by one keeps each able to commit what finishes meanwhile."""
        self._draining = True
        self.stop()

    def committed_offsets(self) -> dict[TopicPartitionKey, int]:
        """The offsets this source committed successfully, by ``(topic, partition)``."""
        with self._lock:
            return dict(self._committed)

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records not yet consumed per assigned partition: high watermark minus position.

        A snapshot taken after each ``consume()`` (no broker call); partitions with no
        known position or watermark yet are left out.
        """
        with self._lock:
            return dict(self._lag)

    @property
    def n_inflight(self) -> int:
        """Batches emitted and not done yet."""
        return self._inflight

    async def commit(self) -> dict[TopicPartitionKey, int]:
        """Commit the contiguous-done offsets now; return what was committed."""
        if not self.group or self.consumer is None:
            return {}
        return await self._call(self._commit_sync)

    async def join(self) -> None:
        """Wait until the source is stopped and its consumer closed; raise its error if any."""
        await self._closed.wait()
        if self.error is not None:
            raise self.error

    async def drain(self, timeout: float = 30.0, *, sinks: Iterable[KafkaSink] = (),
                    require_idle: bool = True) -> bool:
        """Stop, wait for every emitted batch, flush ``sinks``, commit, close.

        Returns True if every batch was done within ``timeout`` seconds and the final
        commit went through. Batches not done by then are not committed (they will be
        consumed again). With ``require_idle=False``, batches still held by stateful nodes
        (open cascades, pending joins) are expected: the result only says whether the
        flush and the commit of what is done went through. Waiting ends early if one of ``sinks`` fails; if a sink's flush
        raises, nothing more is committed, the consumer is closed and the error
        propagates.
        """
        sinks = list(sinks)
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.consumer is None:  # never started, or already closed
            return self._inflight == 0 and self.error is None
        self._draining = True
        self.stop()
        complete = True
        try:
            try:
                await asyncio.wait_for(self._loop_exited.wait(), left())
            except asyncio.TimeoutError:
                complete = False
            if self.error is None:
                waits = [asyncio.ensure_future(event.wait()) for event in (self._idle, *(s.failed for s in sinks))]
                await asyncio.wait(waits, timeout=left(), return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                if not self._idle.is_set():
                    complete = False
                    why = "a sink failed" if any(s.error for s in sinks) else f"timeout of {timeout} s"
                    logger.warning("drain: %d batch(es) of %s not done (%s); they will not be committed",
                                   self._inflight, self.topics, why)
            try:
                for sink in sinks:
                    await sink.flush(left())
            except BaseException:
                self._commit_allowed = False
                raise
        finally:
            committed = await self._shutdown(commit=self.error is None and self._commit_allowed)
            await self._closed.wait()  # also when the run loop was already closing it
            self._draining = False
        ok = (complete or not require_idle) and committed and self.error is None
        if not ok:
            logger.warning("drain of %s incomplete: all batches done %s, committed %s, error %r",
                           self.topics, complete, committed, self.error)
        return ok

    # ------------------------------------------------------------ the polling loop

    async def run(self) -> None:
        try:
            if not self.stopped:
                await self._call(self._setup_sync)
            while not self.stopped:
                polled = await self._call(self._poll_sync)
                if self.stopped:
                    break  # consumed after stop(): dropped, never committed, redelivered later
                if polled is not None:
                    await self._emit_batch(*polled)
        except Exception as exc:
            self.error = exc
            self._commit_allowed = False
            logger.exception("Kafka source on %s failed; stopping without committing", self.topics)
        finally:
            self.stopped = True
            self._loop_exited.set()
            if not self._draining:
                await self._shutdown(commit=self._commit_allowed)

    async def _emit_batch(self, records: list[Record], batch: _Batch) -> None:
        self._inflight += 1
        self._idle.clear()
        self.n_batches += 1
        self.n_consumed += len(records)
        # The source holds one reference while emitting so that the count cannot reach
        # zero before every downstream node has had the chance to retain it (and so
        # that a source with no downstream still completes its batches).
        ref = RefCounter(initial=1, cb=partial(self._batch_done, batch), loop=self.loop)
        results = self._emit(records, metadata=[{"ref": ref}])
        ref.release()
        if results:
            await asyncio.gather(*results)

    def _batch_done(self, batch: _Batch) -> None:
        """Zero-count callback of a batch's RefCounter (runs on ``self.loop``)."""
        if batch.done:
            logger.warning("a batch of %s was released more often than retained", self.topics)
            return
        batch.done = True
        with self._lock:
            for part, segment in batch.parts:
                segment.done = True
                part.advance()
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()
        self._schedule_commit()

    # ------------------------------------------------------------------ commits

    def _schedule_commit(self) -> None:
        """Arrange a commit no sooner than ``commit_interval`` s after the previous one."""
        if not self.group or self._commit_handle is not None or self.consumer is None or self._closing:
            return
        delay = max(0.0, self._last_commit + self.commit_interval - time.monotonic())
        self._commit_handle = self.loop.call_later(delay, self._commit_due)

    def _commit_due(self) -> None:
        self._commit_handle = None
        if self.consumer is None or self._closing or self._executor is None:
            return
        # queued behind any consume() in progress, on the consumer thread
        self.loop.run_in_executor(self._executor, self._commit_sync).add_done_callback(_log_failure)

    def _commit_sync(self, only: set[TopicPartitionKey] | None = None) -> dict[TopicPartitionKey, int]:
        """Commit contiguous-done offsets (consumer thread). Returns what was committed."""
        if not self.group or not self._commit_allowed or self.consumer is None:
            return {}
        with self._lock:
            todo = {
                key: part.committable
                for key, part in self._parts.items()
                if (only is None or key in only)
                and part.committable is not None
                and part.committable != part.committed
            }
        self._last_commit = time.monotonic()
        if not todo:
            return {}
        offsets = [ck.TopicPartition(topic, partition, offset) for (topic, partition), offset in todo.items()]
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except ck.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, ck.KafkaError) and error.fatal():
                raise
            logger.warning("commit of %s failed (%s); retried at the next commit", todo, exc)
            self.loop.add_callback(self._schedule_commit)
            return {}
        done: dict[TopicPartitionKey, int] = {}
        for tp in result or []:
            if tp.error is not None:
                logger.warning("commit of %s[%d]@%d failed: %s", tp.topic, tp.partition, tp.offset, tp.error)
                continue
            done[(tp.topic, tp.partition)] = tp.offset
        with self._lock:
            for key, offset in done.items():
                self._committed[key] = offset
                part = self._parts.get(key)
                if part is not None:
                    part.committed = offset
        logger.debug("committed %s", done)
        return done

    # ------------------------------------------------- consumer-thread callbacks

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the consumer thread."""
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _setup_sync(self) -> None:
        assert self.consumer is not None
        if self.group:
            self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_lost)
            return
        metadata = self.consumer.list_topics(timeout=10)
        assignment = []
        for topic in self.topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                raise ValueError(f"cannot read topic {topic!r}: {info.error if info else 'it does not exist'}")
            assignment += [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in sorted(info.partitions)]
        self.consumer.assign(assignment)
        self.joined = True
        logger.info("reading %d partition(s) of %s from the beginning (no group)", len(assignment), self.topics)

    def _poll_sync(self) -> tuple[list[Record], _Batch] | None:
        assert self.consumer is not None
        messages = self.consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout)
        records: list[Record] = []
        lasts: dict[TopicPartitionKey, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise ck.KafkaException(err)
                logger.warning("Kafka consumer error on %s: %s", self.topics, err)
                continue
            records.append(_to_record(msg))
            lasts[(msg.topic(), msg.partition())] = msg.offset()
        self._snapshot_lag()
        if not records:
            return None
        with self._lock:
            parts = []
            for key, last in lasts.items():
                part = self._parts.get(key)
                if part is None:  # not (or no longer) assigned, or group=False: never committed
                    continue
                segment = _Segment(last)
                part.segments.append(segment)
                parts.append((part, segment))
        return records, _Batch(parts, len(records))

    def _snapshot_lag(self) -> None:
        assert self.consumer is not None
        lag: dict[TopicPartitionKey, int] = {}
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                if tp.offset < 0:
                    continue
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        except ck.KafkaException as exc:
            logger.debug("lag snapshot failed: %s", exc)
            return
        with self._lock:
            self._lag = lag

    def _on_assign(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        self.joined = True  # a member of the group now, even with no partition to read
        with self._lock:
            for tp in partitions:
                self._parts.setdefault((tp.topic, tp.partition), _Partition())
        logger.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def _on_revoke(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            committed = self._commit_sync(only=keys)
        except Exception:  # an exception here would surface from consume()/close()
            logger.exception("commit on revocation failed")
            committed = {}
        self._forget(keys)
        logger.info("revoked %s (committed %s)", sorted(keys), committed)

    def _on_lost(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._forget(keys)
        logger.warning("lost %s without committing", sorted(keys))

    def _forget(self, keys: set[TopicPartitionKey]) -> None:
        with self._lock:
            for key in keys:
                self._parts.pop(key, None)
                self._lag.pop(key, None)

    def _close_sync(self) -> None:
        assert self._finalizer is not None
        self._finalizer()  # consumer.close(); runs on_revoke (and its commit) in group mode

    async def _shutdown(self, *, commit: bool) -> bool:
        """Final commit (if allowed) and close, on the consumer thread.

        Returns True if every done offset is committed (always True with group=False).
        """
        if self._closing:  # the run loop is closing it: wait, and report how that went
            await self._closed.wait()
            return self._shutdown_ok
        if self.consumer is None:
            return self._shutdown_ok
        self._closing = True
        committed = False
        if self._commit_handle is not None:
            self.loop.remove_timeout(self._commit_handle)
            self._commit_handle = None
        self._commit_allowed = self._commit_allowed and commit
        try:
            if self._commit_allowed:
                for attempt in range(_FINAL_COMMIT_ATTEMPTS):  # a coordinator moving or loading is retriable
                    await self._call(self._commit_sync)
                    with self._lock:
                        behind = {key: (part.committed, part.committable) for key, part in self._parts.items()
                                  if part.committable not in (None, part.committed)}
                    if not behind:
                        committed = True
                        break
                    await asyncio.sleep(0.2 * (attempt + 1))
                else:
                    logger.warning("final commit on %s incomplete: (committed, done) offsets %s",
                                   self.topics, behind)
            await self._call(self._close_sync)
        except Exception as exc:
            if self.error is None:
                self.error = exc
            logger.exception("closing the Kafka source on %s failed", self.topics)
        finally:
            assert self._executor is not None
            self._executor.shutdown(wait=False)
            self._executor = None
            self.consumer = None
            self._closing = False
            self._closed.set()
            with self._lock:
                self._parts.clear()
                self._lag.clear()
            self._shutdown_ok = committed
        return committed


# ----------------------------------------------------------------------------- sink


class KafkaDeliveryError(RuntimeError):
    """A record could not be produced or delivered; nothing derived from it is committed."""


@dataclass(eq=False, slots=True)
class _Pending:
    """One incoming batch: records left to produce and to be acknowledged, its refs."""

    records: list[Record]
    metadata: list[dict[str, Any]]
    next: int = 0
    remaining: int = 0
    failed: bool = False


@Stream.register_api(attribute_name="to_kafka_group")
class KafkaSink(Sink):
    """Produce ``list[Record]`` batches to Kafka; release a batch's refs once all are acknowledged.

    Each record goes to its own ``topic`` with its ``key``, ``value`` and ``headers``;
    its ``partition``, ``offset`` and ``timestamp`` (origin information) are ignored:
    the key picks the partition and the producer stamps the time. On arrival, the
    batch's refs are retained once; they are released when the delivery callbacks of
    all its records reported success. A delivery (or produce) error is fatal for
    at-least-once: it is logged, the batch keeps its refs (so its source offsets are
    never committed), ``self.error`` is set, raised by :meth:`flush` and by the next
    :meth:`update` (which stops the source). An empty batch releases at once.

    If the producer queue is full, the rest of the batch waits in a backlog and
    ``update`` returns a future that resolves once it is queued (back-pressure).

    Parameters
    ----------
    upstream:
        The node feeding ``list[Record]`` batches.
    config:
        librdkafka producer settings, merged over :data:`PRODUCER_DEFAULTS` (the
        caller's dict is not modified).
    poll_interval:
        Seconds between two ``producer.poll(0)`` calls on the loop (they run the
        delivery callbacks).
    stream_name:
        Name of the node.
    """

    def __init__(
        self,
        upstream: Stream,
        config: Mapping[str, Any],
        *,
        poll_interval: float = 0.005,
        stream_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = _merged(PRODUCER_DEFAULTS, config)
        self.poll_interval = poll_interval
        self.producer = ck.Producer(self.config)
        self.error: KafkaDeliveryError | None = None
        self.failed = asyncio.Event()  # set with self.error
        self.n_produced = 0
        self.n_delivered = 0
        self.n_failed = 0
        self._backlog: deque[_Pending] = deque()
        self._backlog_waiter: asyncio.Future[None] | None = None
        self._loop_thread: int | None = None
        self._closed = False
        kwargs.setdefault("ensure_io_loop", True)
        super().__init__(upstream, stream_name=stream_name, **kwargs)
        self.loop.add_callback(self._poll_forever)

    def update(self, x: list[Record], who: Stream | None = None,
               metadata: list[dict[str, Any]] | None = None) -> Awaitable[None] | None:
        if self.error is not None:
            raise self.error
        self._loop_thread = threading.get_ident()
        pending = _Pending(records=x, metadata=list(metadata or []), remaining=len(x))
        self._retain_refs(pending.metadata)
        if not x:
            self._release_refs(pending.metadata)
            return None
        self._backlog.append(pending)
        self._produce_backlog()
        if not self._backlog:
            return None
        if self._backlog_waiter is None:
            self._backlog_waiter = asyncio.get_running_loop().create_future()
        return self._backlog_waiter

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything received so far is acknowledged, for up to ``timeout`` seconds.

        Raises :class:`KafkaDeliveryError` if a delivery failed or records are still
        undelivered when the time is up.
        """
        deadline = time.monotonic() + timeout
        self._loop_thread = threading.get_ident()
        if self._backlog:
            if self._backlog_waiter is None:
                self._backlog_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._backlog_waiter), timeout)
            except asyncio.TimeoutError:
                raise KafkaDeliveryError(f"{sum(len(p.records) - p.next for p in self._backlog)} records "
                                         f"still waiting for room in the producer queue after {timeout} s") from None
        left = await asyncio.get_running_loop().run_in_executor(
            None, self.producer.flush, max(0.0, deadline - time.monotonic()))
        # Delivery callbacks served by flush() on the executor thread were handed to the
        # loop (call_soon_threadsafe) before flush() returned, hence before this
        # coroutine resumes: their effects are visible here.
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        if left:
            raise KafkaDeliveryError(f"{left} records undelivered after {timeout} s")

    def destroy(self) -> None:
        """Stop polling the producer and leave the graph (call :meth:`flush` first)."""
        self._closed = True
        super().destroy()

    # ---------------------------------------------------------------- internals

    async def _poll_forever(self) -> None:
        self._loop_thread = threading.get_ident()
        while not self._closed:
            self.producer.poll(0)
            if self._backlog:
                try:
                    self._produce_backlog()
                except KafkaDeliveryError:
                    pass  # already recorded in self.error, waiter failed
            await asyncio.sleep(self.poll_interval)

    def _produce_backlog(self) -> None:
        produce = self.producer.produce
        while self._backlog:
            pending = self._backlog[0]
            records = pending.records
            callback = partial(self._on_delivery, pending)
            i = pending.next
            try:
                while i < len(records):
                    r = records[i]
                    produce(r.topic, r.value, r.key, headers=r.headers or None, on_delivery=callback)
                    i += 1
            except BufferError:
                return  # queue full: _poll_forever resumes after the next poll()
            except Exception as exc:
                # fatal: this batch and the ones queued behind it keep their refs
                pending.failed = True
                self._backlog.clear()
                self._fail(KafkaDeliveryError(f"cannot produce to {records[i].topic!r}: {exc}"))
                raise self.error from exc  # type: ignore[misc]
            finally:
                self.n_produced += i - pending.next
                pending.next = i
            self._backlog.popleft()
        if self._backlog_waiter is not None:
            waiter, self._backlog_waiter = self._backlog_waiter, None
            if not waiter.done():
                waiter.set_result(None)

    def _on_delivery(self, pending: _Pending, err: ck.KafkaError | None, msg: ck.Message) -> None:
        if threading.get_ident() != self._loop_thread:  # served by flush() in an executor
            self.loop.add_callback(self._delivered, pending, err, msg)
        else:
            self._delivered(pending, err, msg)

    def _delivered(self, pending: _Pending, err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is not None:
            self.n_failed += 1
            pending.failed = True
            self._fail(KafkaDeliveryError(f"delivery to {msg.topic()} failed: {err}"))
            return
        self.n_delivered += 1
        pending.remaining -= 1
        if pending.remaining == 0 and not pending.failed:
            self._release_refs(pending.metadata)

    def _fail(self, error: KafkaDeliveryError) -> None:
        if self.error is None:
            logger.error("%s; the batch keeps its refs (its offsets will not be committed)", error)
            self.error = error
            self.failed.set()
        else:
            logger.debug("%s", error)
        if self._backlog_waiter is not None and not self._backlog_waiter.done():
            self._backlog_waiter.set_exception(error)
            self._backlog_waiter = None


# -------------------------------------------------------------------------- helpers


def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until a broker at ``bootstrap`` answers a metadata request, for up to ``timeout`` seconds.

    Raises ``TimeoutError`` otherwise.
    """
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while True:
        left = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.1, min(left, 2.0)))
            return
        except ck.KafkaException as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout} s: {exc}") from exc
            time.sleep(0.1)


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    replication: int = 1,
    config: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> None:
    """Create ``{name: partitions}`` topics (existing ones are fine) and wait until they have leaders.

    ``config`` holds topic settings (e.g. ``{"cleanup.policy": "compact"}``); ``timeout``
    is in seconds. Raises ``confluent_kafka.KafkaException`` if a creation fails for
    another reason than "already exists", ``TimeoutError`` if the topics do not become
    ready in time.
    """
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, num_partitions=n, replication_factor=replication, config=dict(config or {}))
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
