"""Batched submission to a Dask cluster, with a bound on the work in flight.

Dask adds about a millisecond per task, so each incoming batch is cut into
chunks of ``chunk_size`` items and every chunk is one task (``pure=False``: the
same chunk submitted twice is computed twice), shipped packed by ``pack``. At most ``max_in_flight`` tasks
run at once: beyond that, ``update`` returns an awaitable that resolves when a
slot frees, which the sources await (back-pressure). Results are emitted as
their tasks complete, carrying the refs of the batch they came from, which are
released only after the emission.

Needs an asynchronous ``distributed.Client`` running on the same event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
        Items per task.
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
        self._slot = asyncio.Event()
        self._slot.set()
        self.error: BaseException | None = None
        Stream.__init__(self, upstream, ensure_io_loop=True, **kwargs)

    def update(self, x: Sequence, who=None, metadata=None):
        if self.error is not None:
            raise RuntimeError("a Dask task failed earlier") from self.error
        if not x:
            return None
        for i in range(0, len(x), self.chunk_size):
            chunk = list(x[i : i + self.chunk_size])
            self._retain_refs(metadata)
            future = self.client.submit(self.func, self.pack(chunk), pure=False)
            self._started()
            task = asyncio.ensure_future(self._wait(future, chunk, metadata))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.in_flight >= self.max_in_flight:
            self._slot.clear()
            return [asyncio.ensure_future(self._slot.wait())]
        return None

    def _started(self) -> None:
        if self.in_flight == 0:
            self._busy_since = time.perf_counter()
        self.in_flight += 1
        self.n_tasks += 1

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
        if self.in_flight < self.max_in_flight:
            self._slot.set()

    @property
    def idle(self) -> bool:
        return self.in_flight == 0

    async def drain(self) -> None:
        """Wait until every submitted task has completed and its result was emitted."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.error is not None:
            raise RuntimeError("a Dask task failed") from self.error
