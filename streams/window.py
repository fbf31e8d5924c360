"""Event-time windowing of keyed cascades, per source, with bounded state.

A cascade is a keyed series of events started by a root event (the original
post). Each source has its own clock, the latest event time it has sent. For
every observation window ``T``, the window of a cascade closes when its
source's clock reaches ``start + T``: the events with ``t < start + T`` are
emitted as a :class:`WindowClosed`. The cascade ends when the clock reaches
``max(last event + terminated, start + max(windows))``: a :class:`CascadeEnded`
gives its size, and nothing is kept for it afterwards.

Late and bad events (the policy):

- an event older than its source's clock is accepted while its cascade is
  open: it joins the windows that have not closed yet and always counts in the
  final size; if it falls in a window already emitted it is counted in
  ``late_events`` (that window is not re-emitted);
- an event of a cascade whose root was never seen, of a cascade that already
  ended, earlier than its own root, or a second root for an open cascade is
  rejected (:class:`Rejected`, with the reason) for the dead-letter topic.

An end-of-stream marker for a source (``eos``) moves its clock to infinity:
every window closes and every cascade of that source ends.

Ref-counted checkpoints (streamz metadata): a cascade retains the refs of
every input batch that brought it an event and releases them once its
:class:`CascadeEnded` has been emitted, so that an input offset is committed
only after every output derived from it has been delivered.

This module knows nothing about Hawkes processes.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from streamz import Stream

__all__ = ["Events", "WindowClosed", "CascadeEnded", "Rejected", "cascade_windows"]


@dataclass(slots=True)
class Events:
    """A batch of events, as parallel lists (one entry per event).

    ``source``: source id; ``key``: cascade id; ``t``: event time (s, on the
    source's clock); ``m``: mark; ``root``: whether the event starts its cascade;
    ``info``: payload of root events (e.g. the message text), ignored otherwise;
    ``origin``: anything identifying the input (returned in :class:`Rejected`).
    ``eos``: sources whose stream ends after this batch.
    """

    source: Sequence[str]
    key: Sequence[str]
    t: Sequence[float]
    m: Sequence[float]
    root: Sequence[bool]
    info: Sequence[object]
    origin: Sequence[object]
    eos: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.t)


@dataclass(slots=True)
class WindowClosed:
    """The events of a cascade before ``start + T_obs``: ``times`` relative to ``start`` (s), sorted."""

    source: str
    key: str
    info: object
    T_obs: int
    start: float
    times: np.ndarray
    marks: np.ndarray


@dataclass(slots=True)
class CascadeEnded:
    """A cascade is over: ``size`` events in all, the last at ``t_end`` s after its start.

    ``windows`` lists the observation windows for which a :class:`WindowClosed` was emitted;
    ``times`` (relative to ``start``, s, sorted) and ``marks`` are all its events, shape (size,).
    """

    source: str
    key: str
    info: object
    start: float
    size: int
    t_end: float
    windows: tuple[int, ...]
    times: np.ndarray
    marks: np.ndarray


@dataclass(slots=True)
class Rejected:
    """An event that cannot be placed, with the reason."""

    origin: object
    reason: str


class _Cascade:
    __slots__ = ("start", "info", "times", "marks", "last", "next_window", "emitted", "refs", "batch_id", "in_order")

    def __init__(self, start: float, info: object, m: float):
        self.start = start
        self.info = info
        self.times = [start]
        self.marks = [m]
        self.last = start
        self.in_order = True
        self.next_window = 0
        self.emitted: list[int] = []
        self.refs: list[dict] = []
        self.batch_id = -1


class _Source:
    __slots__ = ("clock", "cascades", "windows", "ends", "ended")

    def __init__(self) -> None:
        self.clock = -math.inf
        self.cascades: dict[str, _Cascade] = {}
        self.windows: list[tuple[float, int, str]] = []  # (deadline, seq, key) of each cascade's next window
        self.ends: list[tuple[float, int, str]] = []  # (deadline, seq, key), re-queued if the cascade moved on
        self.ended: OrderedDict[str, None] = OrderedDict()  # recently ended keys, to explain rejections


@Stream.register_api()
class cascade_windows(Stream):
    """Streamz node: :class:`Events` batches in, lists of window/end/rejection records out.

    Parameters
    ----------
    windows : sequence of int
        Observation windows in seconds, increasing.
    terminated : float
        Inactivity (s) after which a cascade ends (not before its last window).
    min_size : int
        A window is emitted only if it holds at least this many events.
    remember_ended : int
        How many ended cascade keys per source are remembered to explain late events.
    """

    def __init__(self, upstream, windows: Sequence[int], terminated: float, min_size: int = 1,
                 remember_ended: int = 100_000, **kwargs):
        self.windows = tuple(int(w) for w in windows)
        if not self.windows or list(self.windows) != sorted(set(self.windows)) or self.windows[0] <= 0:
            raise ValueError(f"windows must be positive and increasing, got {windows}")
        if terminated <= 0:
            raise ValueError(f"terminated must be > 0 s, got {terminated}")
        self.terminated = float(terminated)
        self.min_size = int(min_size)
        self.remember_ended = int(remember_ended)
        self.sources: dict[str, _Source] = {}
        self.late_events = 0
        self.rejected_events = 0
        self._seq = itertools.count()
        self._batch = itertools.count()
        Stream.__init__(self, upstream, **kwargs)

    # ------------------------------------------------------------------ state

    @property
    def open_cascades(self) -> int:
        """Cascades currently held in memory, all sources together."""
        return sum(len(s.cascades) for s in self.sources.values())

    def _source(self, name: str) -> _Source:
        src = self.sources.get(name)
        if src is None:
            src = self.sources[name] = _Source()
        return src

    # ------------------------------------------------------------------ update

    def update(self, x: Events, who=None, metadata=None):
        out: list = []
        batch_id = next(self._batch)
        touched: dict[str, _Source] = {}
        refs_out: dict[int, dict] = {}
        windows = self.windows
        t_max = windows[-1]
        term = self.terminated
        seq = self._seq
        for source, key, t, m, root, info, origin in zip(x.source, x.key, x.t, x.m, x.root, x.info, x.origin):
            src = touched.get(source)
            if src is None:
                src = touched[source] = self._source(source)
            c = src.cascades.get(key)
            if root:
                if c is not None:
                    out.append(Rejected(origin, f"a second original post for open cascade {key!r}"))
                    continue
                c = src.cascades[key] = _Cascade(t, info, m)
                heapq.heappush(src.windows, (t + windows[0], next(seq), key))
                heapq.heappush(src.ends, (t + max(term, t_max), next(seq), key))
            else:
                if c is None:
                    why = "already ended" if key in src.ended else "unknown (its original post was not seen)"
                    out.append(Rejected(origin, f"cascade {key!r} is {why}"))
                    continue
                if t < c.start:
                    out.append(Rejected(origin, f"event at t={t} is before its original post (t={c.start})"))
                    continue
                c.times.append(t)
                c.marks.append(m)
                if c.next_window and t < c.start + windows[c.next_window - 1]:
                    self.late_events += 1
                if t >= c.last:
                    c.last = t
                else:
                    c.in_order = False
            if c.batch_id != batch_id and metadata:
                c.batch_id = batch_id
                c.refs.extend(metadata)
                self._retain_refs(metadata)
            if t > src.clock:
                src.clock = t
        for name in x.eos:
            touched.setdefault(name, self._source(name)).clock = math.inf
        ended: list[_Cascade] = []
        for name, src in touched.items():
            self._close(name, src, out, refs_out, ended)
        self.rejected_events += sum(isinstance(r, Rejected) for r in out)
        if not out:
            return None
        for r in metadata or ():
            refs_out.setdefault(id(r), r)
        for c in ended:
            for r in c.refs:
                refs_out.setdefault(id(r), r)
        result = self._emit(out, metadata=list(refs_out.values()))
        for c in ended:
            self._release_refs(c.refs)
            c.refs = []
        return result

    def _close(self, name: str, src: _Source, out: list, refs_out: dict, ended: list) -> None:
        clock = src.clock
        windows = self.windows
        while src.windows and src.windows[0][0] <= clock:
            _, _, key = heapq.heappop(src.windows)
            c = src.cascades[key]
            T = windows[c.next_window]
            c.next_window += 1
            if c.next_window < len(windows):
                heapq.heappush(src.windows, (c.start + windows[c.next_window], next(self._seq), key))
            times = np.asarray(c.times)
            marks = np.asarray(c.marks)
            if not c.in_order:  # out-of-order arrivals: sort once, keep sorted
                order = np.argsort(times, kind="stable")
                times, marks = times[order], marks[order]
                c.times, c.marks = times.tolist(), marks.tolist()
                c.in_order = True
            n = int(np.searchsorted(times, c.start + T, side="left"))
            if n >= self.min_size:
                c.emitted.append(T)
                out.append(WindowClosed(name, key, c.info, T, c.start, times[:n] - c.start, marks[:n]))
                for r in c.refs:
                    refs_out.setdefault(id(r), r)
        term, t_max = self.terminated, windows[-1]
        while src.ends and src.ends[0][0] <= clock:
            _, _, key = heapq.heappop(src.ends)
            c = src.cascades[key]
            deadline = max(c.last + term, c.start + t_max)
            if deadline > clock:  # the cascade moved on since it was queued
                heapq.heappush(src.ends, (deadline, next(self._seq), key))
                continue
            del src.cascades[key]
            src.ended[key] = None
            if len(src.ended) > self.remember_ended:
                src.ended.popitem(last=False)
            times, marks = np.asarray(c.times), np.asarray(c.marks)
            if not c.in_order:
                order = np.argsort(times, kind="stable")
                times, marks = times[order], marks[order]
            out.append(CascadeEnded(name, key, c.info, c.start, len(c.times), c.last - c.start, tuple(c.emitted),
                                    times - c.start, marks))
            ended.append(c)
        if clock == math.inf:  # end of stream: the source may start afresh
            src.clock = -math.inf
