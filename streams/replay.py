"""Replay of a cascade dataset as one stream of events, interleaved by event time.

Every cascade of a :class:`streams.datasets.Dataset` starts at its own absolute
time (``Cascade.start``; cascades without one are started ``stagger`` seconds
apart, in file order) and the events of all cascades are merged by absolute
time. Cascades are spread over ``sources`` sources (round robin), each source
with its own clock downstream. ``speed`` paces the replay against the wall
clock (``1000`` = 1,000 x real time; ``None`` = as fast as possible).

Batches are emitted as :class:`ReplayBatch` (parallel numpy arrays), and a
final batch carries ``eos`` for every source: the stream is finite.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from streamz import Source, Stream

from .datasets import Dataset

__all__ = ["ReplayBatch", "ReplaySchedule", "from_replay"]


@dataclass(slots=True)
class ReplayBatch:
    """Events of a replay: ``cascade`` (index in the dataset), ``index`` (event rank in its cascade,
    0 for the original post), ``t`` (absolute time, s), ``m`` (mark), ``source`` (source id per event).
    ``eos`` lists the sources that end after this batch."""

    cascade: np.ndarray
    index: np.ndarray
    t: np.ndarray
    m: np.ndarray
    source: list[str]
    eos: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.t.size)


def _time_order(t: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The order of events by time ``t``, ties by ``index`` (the original post first), then by position:
    ``np.lexsort((index, t))``, in 0.06 s against its 0.10 s for a million events with few ties (times in
    seconds with decimals). One stable sort on ``t`` (a merge of the cascades' sorted runs), then the events whose
    time is shared are sorted again by all three keys, where their time puts them. Times in whole
    seconds, or more than one event in 20 that shares its time: ``np.lexsort`` itself, faster then.
    Shape (n,), like ``t`` and ``index``."""
    if np.array_equal(t, np.floor(t)):
        return np.lexsort((index, t))
    order = np.argsort(t, kind="stable")
    ts = t[order]
    tie = ts[1:] == ts[:-1]
    ties = int(np.count_nonzero(tie))
    if ties > t.size // 20:
        return np.lexsort((index, t))
    if ties:
        shared = np.zeros(t.size, dtype=bool)
        shared[1:] |= tie
        shared[:-1] |= tie
        at = np.flatnonzero(shared)
        sub = order[at]
        order[at] = sub[np.lexsort((sub, index[sub], ts[at]))]
    return order


class ReplaySchedule:
    """The merged, time-ordered events of a dataset (computed once, O(n log n))."""

    def __init__(self, dataset: Dataset, *, sources: int = 1, stagger: float = 10.0):
        if sources < 1:
            raise ValueError(f"sources must be >= 1, got {sources}")
        if stagger < 0:
            raise ValueError(f"stagger must be >= 0 s, got {stagger}")
        cascades = dataset.cascades
        starts = np.array([c.start for c in cascades], dtype=np.float64)
        if not starts.any():
            starts = np.arange(len(cascades)) * float(stagger)
        sizes = np.array([c.times.size for c in cascades], dtype=np.int64)
        self.cascade = np.repeat(np.arange(len(cascades)), sizes)
        first = np.cumsum(sizes) - sizes  # each cascade's first event in the concatenation
        self.index = np.arange(int(sizes.sum())) - np.repeat(first, sizes)
        t = np.concatenate([c.times for c in cascades]) + np.repeat(starts, sizes) if len(cascades) else np.zeros(0)
        m = np.concatenate([c.marks for c in cascades]) if len(cascades) else np.zeros(0)
        order = _time_order(t, self.index)
        self.cascade, self.index, self.t, self.m = self.cascade[order], self.index[order], t[order], m[order]
        self.source_names = [f"s{k}" for k in range(sources)]
        self.source_of = self.cascade % sources
        self.starts = starts

    def __len__(self) -> int:
        return int(self.t.size)

    def batch(self, lo: int, hi: int, *, last: bool = False) -> ReplayBatch:
        names = self.source_names
        return ReplayBatch(
            cascade=self.cascade[lo:hi], index=self.index[lo:hi], t=self.t[lo:hi], m=self.m[lo:hi],
            source=[names[k] for k in self.source_of[lo:hi]], eos=tuple(names) if last else (),
        )


@Stream.register_api(staticmethod)
class from_replay(Source):
    """Streamz source replaying a :class:`ReplaySchedule` in batches of ``batch_size`` events.

    ``speed`` None replays as fast as the graph accepts (awaiting its back-pressure);
    otherwise events are released when the wall clock reaches their scaled time.
    ``done`` is set once the last batch (with ``eos``) has been emitted and accepted, or once the
    replay stopped because a node downstream raised: ``error`` then holds the exception (the
    event loop would only log it, and whoever waits for ``done`` would wait for ever).
    """

    def __init__(self, schedule: ReplaySchedule, *, batch_size: int = 10_000, speed: float | None = None,
                 **kwargs):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.schedule = schedule
        self.batch_size = int(batch_size)
        self.speed = speed
        self.position = 0
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        super().__init__(**kwargs)

    async def run(self):
        try:
            await self._replay()
        except Exception as exc:
            self.error = exc
            raise
        finally:
            self.stopped = True
            self.done.set()

    async def _replay(self) -> None:
        n = len(self.schedule)
        t0 = self.schedule.t[0] if n else 0.0
        wall0 = time.perf_counter()
        while not self.stopped and self.position <= n:
            lo = self.position
            hi = min(lo + self.batch_size, n)
            if self.speed is not None and lo < n:
                now = (time.perf_counter() - wall0) * self.speed + t0
                if self.schedule.t[lo] > now:
                    await asyncio.sleep(min((self.schedule.t[lo] - now) / self.speed, 0.05))
                    continue
                hi = min(hi, int(np.searchsorted(self.schedule.t, now, side="right")))
                hi = max(hi, lo + 1)
            last = hi >= n
            batch = self.schedule.batch(lo, hi, last=last)
            self.position = hi if not last else n + 1
            futures = self._emit(batch)
            if futures:
                await asyncio.gather(*futures)
            else:
                await asyncio.sleep(0)
