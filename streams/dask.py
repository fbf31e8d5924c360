"""Batched submission to a Dask cluster, with a bound on the work in flight.

Dask costs milliseconds per task (3 to 7 ms on a 2-core machine, see
BENCHMARKS.md) while a fit of a small cascade takes microseconds, so items are
shipped many per task, packed by ``pack`` into a few flat arrays, ``pure=False``
(the same chunk submitted twice is computed twice).

Batching adapts to the load. Incoming items join a queue; whenever fewer than
``max_in_flight`` tasks are in flight, the queue's head, up to ``chunk_size``
items, becomes one task. A light stream thus gets small tasks at once (low
latency); under a backlog the queue fills while the slots are busy and the
tasks grow to ``chunk_size`` (low overhead). Once a full chunk waits, ``update``
returns an awaitable that resolves when it has been submitted, which the
sources await (back-pressure).

Results are emitted as their tasks complete, ``(items, result)``, with the
metadata of every input batch the items came from; the batches' refs are
released only after the emission.

Failures. A task lost with the infrastructure (the scheduler connection lost and
re-established, a worker gone, a comm closed) is submitted again, with backoff,
for up to ``retry_timeout`` seconds; a task that raises on the workers is tried
``retries`` more times, then handed to ``on_error`` (which turns the chunk into
outputs, e.g. dead letters, so that the stream goes on) or, without it, stops the
node. A node that stops keeps the error in ``error`` and raises it from the next
``update``: its source stops without committing and the stage exits non-zero.

Needs an asynchronous ``distributed.Client`` running on the same event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from streamz import Stream

if TYPE_CHECKING:
    import distributed

__all__ = ["submit_batches", "resilient_result", "DaskUnavailable"]

logger = logging.getLogger(__name__)


class DaskUnavailable(RuntimeError):
    """The Dask cluster could not be reached for longer than the retry timeout."""


async def resilient_result(client: distributed.Client, future: distributed.Future, resubmit: Callable[[], object], *,
                           retries: int = 2, retry_timeout: float = 120.0) -> Any:
    """The result of ``future``, submitted again with ``resubmit()`` when it fails.

    A future lost with the infrastructure (scheduler connection lost, comm closed, timeout)
    is resubmitted with backoff once the client is connected again, for up to
    ``retry_timeout`` seconds, then :class:`DaskUnavailable` is raised; an exception raised
    by the task itself (the future's status is ``"error"``, whatever the exception's type)
    is retried ``retries`` times, then raised.
    """
    from distributed.client import FutureCancelledError

    deadline = time.monotonic() + retry_timeout
    attempts = 0
    delay = 0.1
    while True:
        try:
            return await future
        except Exception as exc:
            lost = isinstance(exc, (FutureCancelledError, OSError, TimeoutError)) and future.status != "error"
            if not lost:  # raised by the task on a worker (or the worker died running it)
                attempts += 1
                if attempts > retries:
                    raise
                logger.warning("Dask task raised %r; attempt %d of %d", exc, attempts + 1, retries + 1)
            else:  # the cluster, not the task
                if time.monotonic() > deadline or client.status in ("closing", "closed"):
                    raise DaskUnavailable(f"Dask cluster unavailable for {retry_timeout:.0f} s "
                                          f"(client {client.status}): {exc!r}") from exc
                logger.warning("Dask task lost (%r); resubmitting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)
                while client.status != "running" and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)  # the client reconnects by itself
        try:
            future = resubmit()
        except Exception as exc:
            raise DaskUnavailable(f"cannot resubmit the task to Dask: {exc!r}") from exc


@Stream.register_api()
class submit_batches(Stream):
    """Streamz node: lists in, ``(chunk, func(pack(chunk)))`` pairs out (one per chunk), computed on Dask.

    Parameters
    ----------
    client : distributed.Client
        An asynchronous client on this loop.
    func : callable
        Run on a worker on each packed chunk.
    pack : callable
        Turns a chunk (a list of items) into what is shipped to the worker. Shipping a
        few flat arrays instead of many small objects is what keeps a task cheap: each
        numpy array travels as its own frame.
    chunk_size : int
        Most items per task.
    max_in_flight : int
        Tasks submitted and not yet emitted, at most.
    retries : int
        Further attempts of a task that raised on a worker.
    retry_timeout : float
        Seconds a task lost with the infrastructure is resubmitted for (the client
        reconnecting to a restarted scheduler, say), after which the node stops.
    on_error : callable, optional
        ``on_error(chunk, exc) -> output`` for a task that still raises after ``retries``:
        what to emit instead of ``(chunk, result)``.

    ``on_task``, if set (an attribute, default None), is called as ``on_task(seconds, items)``
    when a task's result is in: the seconds from its submission (retries included) and
    its number of items (for latency metrics).
    """

    def __init__(self, upstream, client, func: Callable, *, pack: Callable[[list], object] = list,
                 chunk_size: int = 256, max_in_flight: int = 8, retries: int = 2, retry_timeout: float = 120.0,
                 on_error: Callable[[list, BaseException], object] | None = None, **kwargs):
        if chunk_size < 1 or max_in_flight < 1 or retries < 0:
            raise ValueError("chunk_size and max_in_flight must be >= 1, retries >= 0")
        self.client = client
        self.retries = int(retries)
        self.retry_timeout = float(retry_timeout)
        self.on_error = on_error
        self.n_retried = 0
        self.n_failed_chunks = 0
        self.func = func
        self.pack = pack
        self.chunk_size = int(chunk_size)
        self.max_in_flight = int(max_in_flight)
        self.in_flight = 0
        self.n_tasks = 0
        self.n_items = 0
        self.busy_seconds = 0.0  # wall time with at least one task in flight
        self._busy_since: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._queue: deque[list] = deque()  # [items, next index, metadata] of batches not fully submitted
        self._queued = 0  # items in the queue
        self._slot = asyncio.Event()
        self._slot.set()
        self.error: BaseException | None = None
        self.on_task: Callable[[float, int], None] | None = None
        Stream.__init__(self, upstream, ensure_io_loop=True, **kwargs)

    def update(self, x: Sequence, who=None, metadata=None):
        if self.error is not None:
            raise RuntimeError("a Dask task failed earlier") from self.error
        if not x:
            return None
        self._retain_refs(metadata)  # the queue's hold, released once its last item is taken
        self._queue.append([list(x), 0, metadata or []])
        self._queued += len(x)
        self._submit_queued()
        if self._queued >= self.chunk_size:
            self._slot.clear()
            return [asyncio.ensure_future(self._slot.wait())]
        return None

    def _submit_queued(self) -> None:
        """While a slot is free, submit the queue's head (up to ``chunk_size`` items) as one task."""
        while self._queue and self.in_flight < self.max_in_flight:
            chunk: list = []
            metadata: list = []
            while self._queue and len(chunk) < self.chunk_size:
                entry = self._queue[0]
                items, start, meta = entry
                stop = min(len(items), start + self.chunk_size - len(chunk))
                chunk.extend(items[start:stop])
                self._retain_refs(meta)  # the task's hold
                metadata.extend(meta)
                if stop == len(items):
                    self._queue.popleft()
                    self._release_refs(meta)
                else:
                    entry[1] = stop
            self._queued -= len(chunk)
            packed = self.pack(chunk)
            future = self.client.submit(self.func, packed, pure=False)
            if self.in_flight == 0:
                self._busy_since = time.perf_counter()
            self.in_flight += 1
            self.n_tasks += 1
            task = asyncio.ensure_future(self._wait(future, packed, chunk, metadata, time.perf_counter()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._queued < self.chunk_size:
            self._slot.set()

    async def _wait(self, future, packed, chunk: list, metadata, submitted: float) -> None:
        try:
            output = await self._result(future, packed, chunk)
        except Exception as exc:
            logger.error("Dask task of %d items failed for good: %r; the node stops", len(chunk), exc)
            self.error = exc
            self._finished()
            return
        self.n_items += len(chunk)
        if self.on_task is not None:
            self.on_task(time.perf_counter() - submitted, len(chunk))
        try:
            self._emit(output, metadata=metadata)
        finally:
            self._release_refs(metadata)
            self._finished()

    async def _result(self, future, packed, chunk: list):
        """``(chunk, result)`` of the task, retried as the module says; ``on_error``'s output if it keeps failing."""
        def resubmit():
            self.n_retried += 1
            return self.client.submit(self.func, packed, pure=False)

        try:
            return chunk, await resilient_result(self.client, future, resubmit, retries=self.retries,
                                                 retry_timeout=self.retry_timeout)
        except DaskUnavailable:
            raise
        except Exception as exc:
            if self.on_error is None:
                raise
            self.n_failed_chunks += 1
            logger.error("Dask task of %d items raised %r %d times; handed to on_error", len(chunk), exc,
                         self.retries + 1)
            return self.on_error(chunk, exc)

    def _finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._busy_since is not None:
            self.busy_seconds += time.perf_counter() - self._busy_since
            self._busy_since = None
        if self.error is None:
            self._submit_queued()

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and not self._queue

    async def drain(self) -> None:
        """Wait until every queued item was submitted and every task has completed and emitted its result.

        (While items are queued a task is in flight: each completion submits the next chunk.)
        """
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.error is not None:
            raise RuntimeError("a Dask task failed") from self.error
