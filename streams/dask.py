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

Needs an asynchronous ``distributed.Client`` running on the same event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from streamz import Stream

__all__ = ["submit_batches"]

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, upstream, client, func: Callable, *, pack: Callable[[list], object] = list,
                 chunk_size: int = 256, max_in_flight: int = 8, **kwargs):
        if chunk_size < 1 or max_in_flight < 1:
            raise ValueError("chunk_size and max_in_flight must be >= 1")
        self.client = client
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
            future = self.client.submit(self.func, self.pack(chunk), pure=False)
            if self.in_flight == 0:
                self._busy_since = time.perf_counter()
            self.in_flight += 1
            self.n_tasks += 1
            task = asyncio.ensure_future(self._wait(future, chunk, metadata))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._queued < self.chunk_size:
            self._slot.set()

    async def _wait(self, future, chunk: list, metadata) -> None:
        try:
            result = await future
        except BaseException as exc:  # a bug in func: stop, commit nothing more
            logger.exception("Dask task failed")
            self.error = exc
            self._finished()
            raise
        self.n_items += len(chunk)
        try:
            self._emit((chunk, result), metadata=metadata)
        finally:
            self._release_refs(metadata)
            self._finished()

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
