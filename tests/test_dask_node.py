"""``submit_batches`` on a real distributed cluster: chunking, the bound on tasks in flight, refs, errors."""

from __future__ import annotations

import asyncio

import pytest
from distributed import Client, LocalCluster
from streamz import RefCounter, Stream

import streams.dask  # noqa: F401  (registers submit_batches)


def square_all(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


def fail_on_13(xs: list[int]) -> list[int]:
    if 13 in xs:
        raise ValueError("13 is unlucky")
    return xs


def oserror_on_13(xs: list[int]) -> list[int]:
    if 13 in xs:
        raise OSError("disk full on the worker")  # the task's own error, of a type a lost comm also raises
    return xs


class SpyClient:
    """The real client, recording how many tasks the node had in flight at each submission."""

    def __init__(self, client: Client):
        self.client = client
        self.node = None
        self.in_flight_seen: list[int] = []

    def submit(self, *args, **kwargs):
        self.in_flight_seen.append(self.node.in_flight)
        return self.client.submit(*args, **kwargs)


async def _cluster():
    cluster = await LocalCluster(n_workers=1, threads_per_worker=2, processes=False, asynchronous=True,
                                 dashboard_address=None)
    return cluster, await Client(cluster, asynchronous=True)


def test_chunks_bound_in_flight_and_refs():
    async def main():
        cluster, client = await _cluster()
        try:
            spy = SpyClient(client)
            src = Stream()
            node = src.submit_batches(spy, square_all, chunk_size=7, max_in_flight=3)
            spy.node = node
            out = node.sink_to_list()
            released = []
            ref = RefCounter(initial=1, cb=lambda: released.append(True), loop=node.loop)
            futures = src._emit(list(range(100)), metadata=[{"ref": ref}])
            assert futures, "more chunks than slots: the source must be told to wait"
            ref.release()  # the source's own hold
            await asyncio.gather(*futures)
            await node.drain()
            assert node.idle and node.n_tasks == 15 and node.n_items == 100
            assert max(spy.in_flight_seen) < 3  # a submission happens only with a free slot
            assert sorted(x for chunk, _ in out for x in chunk) == list(range(100))
            assert all(result == [x * x for x in chunk] for chunk, result in out)
            assert all(len(chunk) <= 7 for chunk, _ in out)
            assert released == [True]  # once, after every chunk was emitted
        finally:
            await client.close()
            await cluster.close()

    asyncio.run(main())


def test_items_coalesce_while_the_slots_are_busy():
    """Light load: a task at once. Items arriving while every slot is busy ride together in the next task."""
    async def main():
        cluster, client = await _cluster()
        try:
            src = Stream()
            node = src.submit_batches(client, square_all, chunk_size=100, max_in_flight=1)
            out = node.sink_to_list()
            released = []
            refs = [RefCounter(initial=1, cb=lambda i=i: released.append(i), loop=node.loop) for i in range(4)]
            waits = [src._emit(list(range(10 * i, 10 * i + 5)), metadata=[{"ref": ref}]) for i, ref in enumerate(refs)]
            assert not any(waits)  # 5 + 15 queued items: less than a chunk, no back-pressure
            assert node.n_tasks == 1  # the first batch went at once, the others wait for its slot
            for ref in refs:
                ref.release()
            await node.drain()
            assert [len(chunk) for chunk, _ in out] == [5, 15]
            assert out[1][0] == [10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 30, 31, 32, 33, 34]
            assert sorted(released) == [0, 1, 2, 3]
        finally:
            await client.close()
            await cluster.close()

    asyncio.run(main())


def test_failed_task_stops_the_node_and_keeps_the_refs():
    async def main():
        cluster, client = await _cluster()
        try:
            src = Stream()
            node = src.submit_batches(client, fail_on_13, chunk_size=5, max_in_flight=2)
            released = []
            ref = RefCounter(initial=1, cb=lambda: released.append(True), loop=node.loop)
            futures = src._emit(list(range(20)), metadata=[{"ref": ref}])
            ref.release()
            if futures:
                await asyncio.gather(*futures, return_exceptions=True)
            with pytest.raises(RuntimeError, match="a Dask task failed"):
                await node.drain()
            assert isinstance(node.error, ValueError)
            assert released == []  # its offsets are never committed
            with pytest.raises(RuntimeError, match="failed earlier"):
                src._emit([1, 2])
        finally:
            await client.close()
            await cluster.close()

    asyncio.run(main())


def test_a_task_raising_oserror_is_a_task_failure_not_a_lost_cluster():
    """An OSError raised by the task is retried ``retries`` times and handed to ``on_error``
    at once, not resubmitted for ``retry_timeout`` as if the cluster were gone."""
    async def main():
        cluster, client = await _cluster()
        try:
            src = Stream()
            failed = []
            node = src.submit_batches(client, oserror_on_13, chunk_size=5, max_in_flight=2, retries=1,
                                      retry_timeout=600.0, on_error=lambda chunk, exc: failed.append((chunk, exc)))
            out = node.sink_to_list()
            src._emit(list(range(20)))
            await asyncio.wait_for(node.drain(), 60)  # far less than retry_timeout
            assert node.error is None
            assert [c for c, _ in failed] == [[10, 11, 12, 13, 14]] and isinstance(failed[0][1], OSError)
            assert None in out  # what on_error returned, emitted in place of the chunk's result
            assert sorted(x for o in out if o is not None for x in o[0]) == [x for x in range(20) if not 10 <= x < 15]
        finally:
            await client.close()
            await cluster.close()

    asyncio.run(main())


def test_bad_arguments():
    src = Stream()
    with pytest.raises(ValueError, match="chunk_size and max_in_flight"):
        src.submit_batches(None, square_all, chunk_size=0)
