"""Kafka source node for streamz: a consumer-group member with at-least-once commits and checkpointed state.

:class:`KafkaSource` (``Stream.from_kafka_group``) emits ``list[Record]`` batches, each
with a :class:`streamz.core.RefCounter` in its metadata, and commits a partition's
offset only up to the end of the longest run of consecutive batches whose counters
reached zero (every downstream node let go: the sinks hold a batch's refs until the
broker acknowledged what was derived from it). Downstream consumers are idempotent.

Stateful stages give the source their :class:`streams.state.StateStore` and a
compacted changelog topic. Then, every ``checkpoint_interval`` seconds, the source
stops emitting, waits until every batch emitted so far is done (``barrier``; the state
then reflects exactly the input consumed, and every output derived from it was
delivered), writes the store's changes to the changelog partition of each input
partition, waits for their acknowledgement and only then commits the input offsets
(Quix Streams' flush-then-commit order). So the committed offset trails the consumed
one by about one interval, whatever the age of the state, and a restart re-reads at
most an interval. On assignment, a partition's state is restored from its changelog
before any of its records is emitted; on revocation it is checkpointed, committed and
dropped (a handover); a lost partition (the group moved on without this member) is
dropped without writing.

Threads and loops
    All graph work (``_emit``, ref releases, the zero-count callbacks, the store) runs on
    the source's event loop (``source.loop``). Every call on the consumer (subscribe,
    consume, commit, position, close) runs on one dedicated thread, so ``consume()``
    never blocks the loop; the rebalance callbacks run on that thread, inside
    ``consume()``, and hand the store's work to the loop and wait for it.

Lifecycle (``source.state``)
    ``new`` -> ``running`` (``start()``) -> ``draining`` (``stop_polling()`` or ``drain()``:
    no more consuming, the consumer stays open for the final checkpoint and commit) ->
    ``closed`` (the consumer is closed; ``start()`` may run it again). An error in the
    polling loop closes it without committing and is kept in ``source.error``.

Shutting down a stage (SIGTERM)
    The signal handler only requests a stop; then ``await source.drain(timeout, sinks=[sink])``
    stops consuming, waits for the batches in flight, flushes the sinks (raises if
    something is undelivered), checkpoints, commits and closes; False means "exit
    non-zero": what was not delivered is not committed and will be consumed again.

    Give each instance a stable ``group.instance.id`` (static membership, e.g. the pod
    name): a restarted instance then gets its partitions back at once, instead of
    after the dead member's ``session.timeout.ms``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import confluent_kafka as ck
from streamz import Stream
from streamz.core import RefCounter
from streamz.sources import Source

from ..records import Record
from ..state import StateStore
from .admin import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, TopicReader, connection, merged
from .offsets import Batch, OffsetTracker, TopicPartitionKey

if TYPE_CHECKING:
    from .sink import KafkaSink

__all__ = ["KafkaSource", "SourceState", "CHANGELOG_MAX_BYTES"]

logger = logging.getLogger(__name__)
_FINAL_COMMIT_ATTEMPTS = 5

#: Largest changelog record (bytes); changelog topics and their producer are set up for it.
CHANGELOG_MAX_BYTES = 8 * 2**20


class SourceState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


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


_NO_TIMESTAMP = ck.TIMESTAMP_NOT_AVAILABLE


def _to_records(messages: Iterable[ck.Message], names: Mapping[str, str],
                owned: Callable[[TopicPartitionKey], bool] | None = None,
                ) -> tuple[list[Record], dict[TopicPartitionKey, int], int, list[ck.KafkaError]]:
    """The records of consumed messages, on the topic names ``names`` gives their Kafka topics (Kafka's name
    if it gives none), with the last offset of each ``(topic, partition)``, how many were dropped because
    ``owned`` says their partition is not this member's (None: all are), and the errors among the messages.

    Consumed messages come in runs of one partition: the name and ``owned`` are looked up once per run, and
    a record is made with positional arguments and no call for absent headers (0.45 against 0.77 µs per
    message when each was looked up and made by a function of its own)."""
    records: list[Record] = []
    append = records.append
    lasts: dict[TopicPartitionKey, int] = {}
    dropped = 0
    errors: list[ck.KafkaError] = []
    topic: str | None = None
    part = -1
    key: TopicPartitionKey = ("", -1)
    name = ""
    ok = False
    off = -1
    for msg in messages:
        err = msg.error()
        if err is not None:
            errors.append(err)
            continue
        t, p = msg.topic(), msg.partition()
        if p != part or t != topic:
            if ok:
                lasts[key] = off
            topic, part, key = t, p, (t, p)
            ok = owned is None or owned(key)
            name = names.get(t, t)
        if not ok:
            dropped += 1
            continue
        ts_type, ts_ms = msg.timestamp()
        value = msg.value()
        headers = msg.headers()
        off = msg.offset()
        append(Record(name, b"" if value is None else value, msg.key(), _headers(headers) if headers else {}, p,
                      off, ts_ms / 1000.0 if ts_type != _NO_TIMESTAMP else 0.0))
    if ok:
        lasts[key] = off
    return records, lasts, dropped, errors


def _fatal(err: ck.KafkaError) -> bool:
    """An error after which the consumer cannot go on: librdkafka's fatal errors (reported by
    ``consume()`` as ``_FATAL``), e.g. a static member fenced after its session timed out."""
    return err.fatal() or err.code() in (ck.KafkaError._FATAL, ck.KafkaError.FENCED_INSTANCE_ID)


class ChangelogError(RuntimeError):
    """A changelog record could not be delivered: the state it holds is not durable, nothing is committed."""


@Stream.register_api(staticmethod, attribute_name="from_kafka_group")
class KafkaSource(Source):
    """Consume Kafka topics as a consumer-group member; emit ``list[Record]`` batches.

    Each non-empty result of ``consumer.consume()`` is emitted as one batch (record
    timestamps in seconds; a null value becomes ``b""``) with
    ``metadata=[{"ref": RefCounter(...)}]``; the source awaits what ``_emit`` returns
    before consuming again (back-pressure). Records of partitions this member does not
    own (any more) are dropped: they are redelivered to their owner.

    Parameters
    ----------
    topics:
        A topic name or a sequence of names (one, with a ``store``).
    config:
        librdkafka consumer settings (``bootstrap.servers``, ``group.id``, security ...),
        merged over :data:`CONSUMER_DEFAULTS`; ``enable.auto.commit`` is always off. The
        caller's dict is not modified.
    batch_size:
        Most records per batch (``consume(num_messages=...)``).
    poll_timeout:
        Seconds one ``consume()`` call waits for records; also bounds how long
        :meth:`stop` takes to take effect.
    commit_interval:
        Without a store: least number of seconds between two periodic commits.
    group:
        True: join the group ``config["group.id"]`` (``subscribe``). False: read every
        partition of the topics from the beginning (``assign``) and never commit.
    checkpoint_interval:
        With a store (:meth:`use_store`): seconds between two checkpoints (each one commits).
    checkpoint_timeout:
        Seconds a checkpoint waits for the barrier, and for the changelog's acknowledgement,
        before it gives up (nothing is committed; the next one tries again).
    strip_prefix:
        Removed from the topic names the records carry: ``topics`` are the names on the
        broker (e.g. ``"dev.tweets"``), ``Record.topic`` the name without the prefix
        (``"tweets"``). Set once here, not record by record downstream.
    start, loop, stream_name:
        As for every streamz source.
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
        checkpoint_interval: float = 2.0,
        checkpoint_timeout: float = 60.0,
        strip_prefix: str = "",
        start: bool = False,
        loop: Any = None,
        stream_name: str | None = None,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ValueError("KafkaSource needs at least one topic")
        if strip_prefix and not all(t.startswith(strip_prefix) for t in self.topics):
            raise ValueError(f"strip_prefix {strip_prefix!r} does not begin every topic of {self.topics}")
        self._names = {t: t[len(strip_prefix):] for t in self.topics}  # Kafka's topic -> the records'
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if group and not config.get("group.id"):
            raise ValueError("KafkaSource(group=True) needs config['group.id']")
        self.config = merged(CONSUMER_DEFAULTS, config, {"enable.auto.commit": False})
        if not group:
            # librdkafka wants a group.id even for assign(); nothing is ever committed.
            self.config.setdefault("group.id", f"tweetoscope-reader-{uuid.uuid4().hex}")
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.commit_interval = commit_interval
        self.group = group
        self.store: StateStore | None = None
        self.changelog: str | None = None
        self.barrier = True
        self.checkpoint_interval = float(checkpoint_interval)
        self.checkpoint_timeout = float(checkpoint_timeout)
        self.state = SourceState.NEW
        self.consumer: ck.Consumer | None = None
        self.error: BaseException | None = None
        self.n_consumed = 0
        self.n_batches = 0
        self.n_dropped = 0  # records of partitions this member no longer owned
        self.n_checkpoints = 0
        self.n_changelog_records = 0
        self.last_checkpoint: float | None = None  # time.time() of the last acknowledged checkpoint
        self.last_commit: float | None = None  # time.time() of the last successful commit
        self.last_progress = time.monotonic()  # a batch done, or a poll with nothing in flight
        self.restore_seconds: dict[int, float] = {}
        self.joined = False  # True once the group assigned this member its partitions (or, group=False, assigned)
        self.restoring = False
        # monotonic time of a revocation or loss not yet followed by an assignment
        self.unassigned_since: float | None = None
        self.tracker = OffsetTracker()
        self._executor: ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self._producer: ck.Producer | None = None
        self._changelog_error: BaseException | None = None
        self._lag: dict[TopicPartitionKey, int] = {}
        self._lag_lock = threading.Lock()
        self._inflight = 0
        self._commit_allowed = True
        self._commit_handle: Any = None
        self._last_commit = 0.0
        self._next_checkpoint = 0.0
        self._closing = False
        self._loop_thread: int | None = None
        self._loop_exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._shutdown_ok = False  # whether the last close committed every done offset
        self._idle = asyncio.Event()
        super().__init__(start=start, loop=loop, stream_name=stream_name)

    # ------------------------------------------------------------------ public API

    def use_store(self, store: StateStore, changelog: str, *, barrier: bool = True) -> None:
        """Checkpoint ``store`` to ``changelog`` (see the class); call before :meth:`start`.

        ``store``: a :class:`streams.state.StateStore` keeping state per partition of the
        topic; ``changelog``: the compacted topic (as many partitions as the input) its
        changes go to; ``barrier``: wait until every emitted batch is done before taking a
        snapshot. Needed when the state records what outputs were emitted (windows, joins);
        a store that only accumulates statistics may do without.
        """
        if self.state is not SourceState.NEW or not self.group or len(self.topics) != 1:
            raise ValueError("a state store needs a source not started yet, with group=True and one topic")
        self.store, self.changelog, self.barrier = store, changelog, barrier

    def start(self) -> None:
        """Build the consumer and start polling on ``self.loop`` (no-op if running)."""
        if self.state in (SourceState.RUNNING, SourceState.DRAINING):
            if self.state is SourceState.DRAINING:
                raise RuntimeError("KafkaSource is still shutting down; start it again once drain() returned")
            return
        self.consumer = ck.Consumer(self.config)
        if self.store is not None:
            self._producer = ck.Producer(merged(PRODUCER_DEFAULTS, connection(self.config),
                                                {"message.max.bytes": CHANGELOG_MAX_BYTES}))
            self._changelog_error = None
        self.joined = False
        self.unassigned_since = None
        self._finalizer = weakref.finalize(self, _close_consumer, self.consumer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-source-{self.topics[0]}")
        self.error = None
        self._commit_allowed = True
        self._loop_exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._idle = asyncio.Event()
        self._next_checkpoint = time.monotonic() + self.checkpoint_interval
        if self._inflight == 0:  # batches of a previous run may still be in flight
            self._idle.set()
        self.state = SourceState.RUNNING
        self.stopped = False
        self.started = True
        self.loop.add_callback(self.run)

    def request_checkpoint(self) -> None:
        """Checkpoint (and commit) before the next poll instead of at the end of the interval."""
        self._next_checkpoint = 0.0

    def stop(self) -> None:
        """Stop consuming; the consumer is committed and closed once the polling loop ends."""
        if self.state is SourceState.RUNNING:
            self.stopped = True

    def stop_polling(self) -> None:
        """Stop consuming but keep the consumer open for :meth:`drain` (which then waits for the
        batches in flight, checkpoints, commits and closes). Stopping several sources before draining
        them one by one keeps each able to commit what finishes meanwhile."""
        if self.state is SourceState.RUNNING:
            self.state = SourceState.DRAINING
        self.stopped = True

    def committed_offsets(self) -> dict[TopicPartitionKey, int]:
        """The offsets this source committed successfully, by ``(topic, partition)``."""
        return self.tracker.committed_offsets()

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records not yet consumed per assigned partition: high watermark minus position.

        A snapshot taken after each ``consume()`` (no broker call); partitions with no
        known position or watermark yet are left out.
        """
        with self._lag_lock:
            return dict(self._lag)

    @property
    def n_inflight(self) -> int:
        """Batches emitted and not done yet."""
        return self._inflight

    @property
    def ready(self) -> bool:
        """Consuming: running, in its group, not restoring state, no error."""
        return (self.state is SourceState.RUNNING and self.consumer is not None and self.joined
                and not self.restoring and self.error is None)

    def stalled(self, timeout: float) -> bool:
        """Batches are in flight and none was done for ``timeout`` seconds (the graph is stuck)."""
        return self._inflight > 0 and time.monotonic() - self.last_progress > timeout

    def rejoin_stalled(self, timeout: float) -> bool:
        """Partitions were revoked or lost more than ``timeout`` seconds ago and the group has not
        assigned any since (not even an empty set): the member is stuck outside its group.

        librdkafka can hang so after a session timeout under static membership
        (confluentinc/librdkafka#3437); a normal rebalance assigns within the rebalance timeout.
        """
        since = self.unassigned_since
        return since is not None and not self._closing and time.monotonic() - since > timeout

    async def commit(self) -> dict[TopicPartitionKey, int]:
        """Commit what may be committed now (with a store: checkpoint first); return what was committed."""
        if not self.group or self.consumer is None:
            return {}
        if self.store is not None:
            return await self.checkpoint()
        return await self._call(self._commit_sync)

    async def join(self) -> None:
        """Wait until the source is stopped and its consumer closed; raise its error if any."""
        await self._closed.wait()
        if self.error is not None:
            raise self.error

    async def drain(self, timeout: float = 30.0, *, sinks: Iterable[KafkaSink] = (),
                    require_idle: bool = True) -> bool:
        """Stop, wait for every emitted batch, flush ``sinks``, checkpoint, commit, close.

        Returns True if every batch was done within ``timeout`` seconds and the final
        commit went through. Batches not done by then are not committed (they will be
        consumed again). With ``require_idle=False``, batches still held downstream are
        expected: the result only says whether the flush and the commit of what is done
        went through. Waiting ends early if one of ``sinks`` fails; if a sink's flush
        raises, nothing more is committed, the consumer is closed and the error propagates.
        """
        sinks = list(sinks)
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.consumer is None:  # never started, or already closed
            return self._inflight == 0 and self.error is None
        self.stop_polling()
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
            committed = await self._shutdown(commit=self.error is None and self._commit_allowed,
                                             timeout=max(left(), 5.0))
            await self._closed.wait()  # also when the run loop was already closing it
        ok = (complete or not require_idle) and committed and self.error is None
        if not ok:
            logger.warning("drain of %s incomplete: all batches done %s, committed %s, error %r",
                           self.topics, complete, committed, self.error)
        return ok

    # ------------------------------------------------------------ the polling loop

    async def run(self) -> None:
        self._loop_thread = threading.get_ident()
        try:
            if self.state is SourceState.RUNNING:
                await self._call(self._setup_sync)
            while self.state is SourceState.RUNNING and not self.stopped:
                if self.store is not None and time.monotonic() >= self._next_checkpoint:
                    await self.checkpoint()
                polled = await self._call(self._poll_sync)
                if self.stopped:
                    break  # consumed after stop(): dropped, never committed, redelivered later
                if polled is not None:
                    await self._emit_batch(*polled)
                elif self._inflight == 0:
                    self.last_progress = time.monotonic()
        except Exception as exc:
            self.error = exc
            self._commit_allowed = False
            logger.exception("Kafka source on %s failed; stopping without committing", self.topics)
        finally:
            self.stopped = True
            self._loop_exited.set()
            if self.state is SourceState.RUNNING:  # stopped (or failed) without drain(): close here
                await self._shutdown(commit=self._commit_allowed, timeout=self.checkpoint_timeout)

    async def _emit_batch(self, records: list[Record], batch: Batch) -> None:
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

    def _batch_done(self, batch: Batch) -> None:
        """Zero-count callback of a batch's RefCounter (runs on ``self.loop``)."""
        if not self.tracker.done(batch):
            logger.warning("a batch of %s was released more often than retained", self.topics)
            return
        self.last_progress = time.monotonic()
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()
        if self.store is None:
            self._schedule_commit()

    # ------------------------------------------------------------ checkpoints

    async def checkpoint(self, partitions: set[int] | None = None, *,
                         timeout: float | None = None) -> dict[TopicPartitionKey, int]:
        """Write the store's changes to the changelog, then commit the offsets they cover.

        With ``barrier``, first waits (up to ``timeout`` s, default ``checkpoint_timeout``)
        until every emitted batch is done. Returns what was committed (nothing if the
        barrier or the changelog's acknowledgement timed out: the next checkpoint tries
        again).
        """
        offsets = await self._persist(partitions, timeout=timeout)
        if not offsets or not self._commit_allowed or self.consumer is None:
            return {}
        done = await self._call(self._commit_sync, set(offsets), offsets)
        for (_, partition), offset in done.items():
            self.store.committed(partition, offset)
        return done

    async def _persist(self, partitions: set[int] | None = None, *, timeout: float | None = None,
                       drop: bool = False) -> dict[TopicPartitionKey, int] | None:
        """The first half of a checkpoint, on the loop: barrier, snapshot, changelog written and
        acknowledged. Returns the offsets it covers (None if it did not go through); ``drop``:
        forget the state of ``partitions`` afterwards (a handover).

        The barrier (a store with ``barrier``, and every handover: the new owner must not
        redo what this member still has in flight) waits until no batch is in flight; the
        offsets and the snapshot are then taken with no ``await`` between them, so that no
        batch can be emitted in between. A handover whose barrier times out on a store
        without ``barrier`` goes on: its state does not depend on the outputs.
        """
        assert self.store is not None
        timeout = self.checkpoint_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._next_checkpoint = time.monotonic() + self.checkpoint_interval
        topic = self.topics[0]
        keys = None if partitions is None else {(topic, p) for p in partitions}
        if self.barrier or drop:
            while not self._idle.is_set():  # re-checked: a batch may be emitted before this task resumes
                try:
                    await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    logger.warning("checkpoint of %s: %d batch(es) still in flight after %.0f s",
                                   topic, self._inflight, timeout)
                    if not self.barrier:
                        break
                    if drop:
                        self.store.drop(partitions or ())
                    return None
        offsets = self.tracker.committable(keys)
        changes = self.store.snapshot(partitions)
        if drop:
            self.store.drop(partitions or ())
        if changes and not await self._write_changelog(changes, max(0.1, deadline - time.monotonic())):
            return None
        self.n_checkpoints += 1
        self.last_checkpoint = time.time()
        return offsets

    async def _write_changelog(self, changes: list, timeout: float) -> bool:
        """Produce ``(partition, key, value)`` changes and wait for their acknowledgement."""
        assert self._producer is not None and self.changelog is not None
        if self._changelog_error is not None:
            raise self._changelog_error
        producer, topic = self._producer, self.changelog

        def failed(err: ck.KafkaError | None, msg: ck.Message) -> None:
            if err is not None and self._changelog_error is None:
                self._changelog_error = ChangelogError(f"changelog {topic} record not delivered: {err}")

        for partition, key, value in changes:
            while True:
                try:
                    producer.produce(topic, value, key, partition=partition, on_delivery=failed)
                    break
                except BufferError:
                    producer.poll(0.05)
                    await asyncio.sleep(0)
        self.n_changelog_records += len(changes)
        left = await asyncio.get_running_loop().run_in_executor(None, producer.flush, timeout)
        if self._changelog_error is not None:
            raise self._changelog_error
        if left:
            logger.warning("checkpoint of %s: %d changelog records not acknowledged after %.1f s; not committing "
                           "(they are retried, and the next checkpoint waits for them)", self.topics[0], left, timeout)
            return False
        return True

    def _on_loop(self, make: Callable[[], Any], timeout: float) -> Any:
        """From the consumer thread: run the coroutine ``make()`` on the loop and wait for its result."""
        loop = self.loop.asyncio_loop
        if threading.get_ident() == self._loop_thread or not loop.is_running():
            raise RuntimeError("the event loop is not available to the rebalance callback")
        return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout)

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
        future = self.loop.run_in_executor(self._executor, self._commit_sync)
        future.add_done_callback(
            lambda f: f.cancelled() or f.exception() is None
            or logger.error("periodic commit failed", exc_info=f.exception()))

    def _commit_sync(self, only: set[TopicPartitionKey] | None = None,
                     offsets: Mapping[TopicPartitionKey, int] | None = None) -> dict[TopicPartitionKey, int]:
        """Commit ``offsets`` (default: what the tracker says may be) on the consumer thread."""
        if not self.group or not self._commit_allowed or self.consumer is None:
            return {}
        todo = dict(offsets) if offsets is not None else self.tracker.committable(only)
        self._last_commit = time.monotonic()
        if not todo:
            return {}
        tps = [ck.TopicPartition(topic, partition, offset) for (topic, partition), offset in todo.items()]
        try:
            result = self.consumer.commit(offsets=tps, asynchronous=False)
        except ck.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, ck.KafkaError) and _fatal(error):
                raise
            logger.warning("commit of %s failed (%s); retried at the next commit", todo, exc)
            if self.store is None:
                self.loop.add_callback(self._schedule_commit)
            return {}
        done: dict[TopicPartitionKey, int] = {}
        for tp in result or []:
            if tp.error is not None:
                logger.warning("commit of %s[%d]@%d failed: %s", tp.topic, tp.partition, tp.offset, tp.error)
                continue
            done[(tp.topic, tp.partition)] = tp.offset
        self.tracker.committed(done)
        if done:
            self.last_commit = time.time()
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
            if self.store is not None:
                self._check_changelog()
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

    def _check_changelog(self) -> None:
        assert self.consumer is not None and self.changelog is not None
        meta = self.consumer.list_topics(timeout=10)
        counts = {}
        for name in (self.topics[0], self.changelog):
            info = meta.topics.get(name)
            if info is None or info.error is not None:
                raise ValueError(f"topic {name!r} is missing: create the pipeline's topics first")
            counts[name] = len(info.partitions)
        if counts[self.topics[0]] != counts[self.changelog]:
            raise ValueError(f"changelog {self.changelog!r} has {counts[self.changelog]} partitions, its input "
                             f"{self.topics[0]!r} {counts[self.topics[0]]}: they must be equal")

    def _poll_sync(self) -> tuple[list[Record], Batch] | None:
        assert self.consumer is not None
        messages = self.consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout)
        tracked = self.tracker
        # records of partitions revoked or lost meanwhile are dropped: their new owner reads them
        records, lasts, dropped, errors = _to_records(messages, self._names,
                                                      tracked.is_assigned if self.group else None)
        self.n_dropped += dropped
        for err in errors:
            if err.code() == ck.KafkaError._PARTITION_EOF:
                continue
            if _fatal(err):
                raise ck.KafkaException(err)
            logger.warning("Kafka consumer error on %s: %s", self.topics, err)
        self._snapshot_lag()
        if not records:
            return None
        return records, tracked.consumed(lasts, len(records))

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
        with self._lag_lock:
            self._lag = lag

    def _on_assign(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        self.joined = True  # a member of the group now, even with no partition to read
        self.unassigned_since = None
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if self.store is not None and partitions:
            self.restoring = True
            try:
                for tp in partitions:
                    self._restore(tp.partition)
            finally:
                self.restoring = False
        self.tracker.assign(keys)
        logger.info("assigned %s", sorted(keys))

    def _restore(self, partition: int) -> None:
        """Read changelog ``partition`` to its end and hand it to the store (consumer thread)."""
        assert self.store is not None and self.changelog is not None
        start = time.perf_counter()
        with TopicReader(self.config, self.changelog, [partition]) as reader:
            messages = reader.read_to_end(timeout=self.checkpoint_timeout * 5)
        records = [(m.key(), m.value()) for m in messages]

        async def restore() -> int:
            return self.store.restore(partition, records)

        live = self._on_loop(restore, self.checkpoint_timeout)
        self.restore_seconds[partition] = seconds = time.perf_counter() - start
        logger.info("restored %s[%d] from %s: %d records, %d live entries, %.2f s", self.topics[0], partition,
                    self.changelog, len(records), live, seconds)

    def _on_revoke(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            if self.store is not None:
                parts = {p for _, p in keys}
                wait = 0.0 if self._closing and not self._idle.is_set() else self.checkpoint_timeout
                offsets = self._on_loop(lambda: self._persist(parts, timeout=wait, drop=True),
                                        self.checkpoint_timeout * 2)
                committed = self._commit_sync(offsets=offsets) if offsets else {}
            else:
                committed = self._commit_sync(only=keys)
        except Exception:  # an exception here would surface from consume()/close()
            logger.exception("checkpoint or commit on revocation of %s failed", sorted(keys))
            committed = {}
            if self.store is not None:
                self._drop_on_loop({p for _, p in keys})
        self.tracker.revoke(keys)
        self.unassigned_since = time.monotonic()
        logger.info("revoked %s (committed %s)", sorted(keys), committed)

    def _on_lost(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self.tracker.revoke(keys)
        self.unassigned_since = time.monotonic()
        if self.store is not None:
            self._drop_on_loop({p for _, p in keys})
        logger.warning("lost %s without committing; rejoining the group", sorted(keys))

    def _drop_on_loop(self, parts: set[int]) -> None:
        async def drop() -> None:
            self.store.drop(parts)

        try:
            self._on_loop(drop, self.checkpoint_timeout)
        except Exception:
            logger.exception("dropping the state of %s failed", sorted(parts))

    def _close_sync(self) -> None:
        assert self._finalizer is not None
        self._finalizer()  # consumer.close(); runs on_revoke (its checkpoint and commit) in group mode

    async def _shutdown(self, *, commit: bool, timeout: float) -> bool:
        """Final checkpoint and commit (if allowed) and close, on the consumer thread.

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
                    if self.store is not None:
                        if self.barrier and not self._idle.is_set():
                            logger.warning("final checkpoint of %s skipped: %d batch(es) not done",
                                           self.topics, self._inflight)
                            break  # their state is not checkpointed: nothing more is committed
                        await self.checkpoint(timeout=timeout)
                    else:
                        await self._call(self._commit_sync)
                    behind = self.tracker.behind()
                    if not behind:
                        committed = True
                        break
                    await asyncio.sleep(0.2 * (attempt + 1))
                else:
                    logger.warning("final commit on %s incomplete: (committed, done) offsets %s",
                                   self.topics, behind)
            elif self.store is not None:
                self.store.drop({p for _, p in self.tracker.assigned()})
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
            if self._producer is not None:
                self._producer.flush(1.0)
                self._producer = None
            self._closing = False
            self.state = SourceState.CLOSED
            self._closed.set()
            self.tracker.clear()
            self.unassigned_since = None  # close() revoked everything: not a member stuck outside its group
            with self._lag_lock:
                self._lag.clear()
            self._shutdown_ok = committed
        return self._shutdown_ok
