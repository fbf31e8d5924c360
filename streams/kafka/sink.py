"""Kafka sink node for streamz: a batch's refs are released only once every record is acknowledged.

:class:`KafkaSink` (``Stream.to_kafka_group``) retains a batch's refs on arrival and
releases them in the delivery callbacks, never when ``produce()`` returns, so that a
source offset is committed only after everything derived from it was written
(at-least-once end to end; downstream consumers are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import confluent_kafka as ck
from streamz import Stream
from streamz.sinks import Sink

from ..records import Record
from .admin import PRODUCER_DEFAULTS, merged

__all__ = ["KafkaSink", "KafkaDeliveryError"]

logger = logging.getLogger(__name__)




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
    topic_prefix:
        Put before every record's ``topic`` to name the topic it is produced to (e.g.
        ``"dev."``: a record of ``"forecasts"`` goes to ``"dev.forecasts"``).
    poll_interval:
        Seconds between two ``producer.poll(0)`` calls on the loop (they run the
        delivery callbacks) while records are queued or in flight; an idle sink polls
        every ``idle_interval`` seconds, or as soon as a batch arrives.
    stream_name:
        Name of the node.
    """

    def __init__(
        self,
        upstream: Stream,
        config: Mapping[str, Any],
        *,
        topic_prefix: str = "",
        poll_interval: float = 0.005,
        idle_interval: float = 1.0,
        stream_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = merged(PRODUCER_DEFAULTS, config)
        self.topic_prefix = topic_prefix
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self._work = asyncio.Event()  # a batch arrived: poll at poll_interval again
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
        self._work.set()
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
        self._work.set()
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
            if self._backlog or len(self.producer):  # deliveries due: their callbacks run in poll()
                await asyncio.sleep(self.poll_interval)
            else:  # idle: 200 wake-ups a second cost an idle stage about 4 % of a core; wait for a batch
                self._work.clear()
                try:
                    await asyncio.wait_for(self._work.wait(), self.idle_interval)
                except asyncio.TimeoutError:
                    pass

    def _produce_backlog(self) -> None:
        produce = self.producer.produce
        prefix = self.topic_prefix
        while self._backlog:
            pending = self._backlog[0]
            records = pending.records
            callback = partial(self._on_delivery, pending)
            i = pending.next
            try:
                while i < len(records):
                    r = records[i]
                    produce(prefix + r.topic if prefix else r.topic, r.value, r.key, headers=r.headers or None,
                            on_delivery=callback)
                    i += 1
            except BufferError:
                return  # queue full: _poll_forever resumes after the next poll()
            except Exception as exc:
                # fatal: this batch and the ones queued behind it keep their refs
                pending.failed = True
                self._backlog.clear()
                self._fail(KafkaDeliveryError(f"cannot produce to {prefix + records[i].topic!r}: {exc}"))
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


