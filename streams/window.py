"""Event-time windowing of keyed cascades, per source, with bounded and checkpointed state.

A cascade is a keyed series of events started by a root event (the original
post). Each source has its own clock, the latest event time it has sent. For
every observation window ``T``, the window of a cascade closes when its
source's clock reaches ``start + T``: the events with ``t < start + T`` are
emitted as a :class:`WindowClosed`. The cascade ends when the clock reaches
``max(last event + terminated, start + max(windows))``: a :class:`CascadeEnded`
gives its size, and only a small marker is kept for it afterwards.

Late and bad events (the policy):

- an event older than its source's clock is accepted while its cascade is
  open: it joins the windows that have not closed yet and always counts in the
  final size; if it falls in a window already emitted it is counted in
  ``late_events`` (that window is not re-emitted);
- an event of a cascade whose root was never seen, of a cascade that already
  ended, earlier than its own root, or a second root for an open cascade is
  rejected (:class:`Rejected`, with the reason) for the dead-letter topic;
- an event more than ``max_clock_jump`` seconds ahead of its source's clock, and
  the first event of a source (which sets its clock), is held until the source's
  next event: if that one lies within ``max_clock_jump`` of it (a source that
  really was silent that long, or a normal start), both are accepted and the clock
  moves; otherwise the held event is rejected ("ahead of its source's clock").
  So one far-future timestamp cannot end every open cascade of its source, nor set
  a new source's clock, and nothing valid is lost (a source's lone event is
  accepted at its end of stream);
- a cascade keeps at most ``max_events`` events: later ones count in its final
  size but are not kept, and its windows that close after that are not emitted
  (counted in ``truncated_windows``): memory and message sizes stay bounded.

An end-of-stream marker for a source (``eos``) moves its clock to infinity:
every window closes and every cascade of that source ends; the source then
starts afresh.

State and checkpoints. The node emits each batch's outputs with the batch's
metadata and keeps no refs: its state is checkpointed instead. Sources live in
the input partition their events came from (``Events.partition``); the node is a
:class:`streams.state.StateStore`: per partition, one changelog entry per source
(its clock) and per cascade (its events and the windows already emitted, or, once
ended, a marker). Every event carries its input ``offset``; a cascade records the
offset of the last event applied to it, so that a replayed event (offset not
greater) changes nothing (see :mod:`streams.state`). Events with a negative offset
(not from Kafka, e.g. the embedded replay) are always applied and never
checkpointed.

This module knows nothing about Hawkes processes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
from streamz import Stream

from .state import Change, latest_entries

__all__ = ["Events", "WindowClosed", "CascadeEnded", "Rejected", "HeldOrigin", "cascade_windows"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Events:
    """A batch of events, as parallel lists (one entry per event).

    ``source``: source id; ``key``: cascade id; ``t``: event time (s, on the
    source's clock); ``m``: mark; ``root``: whether the event starts its cascade;
    ``info``: payload of root events (a string, e.g. the message text), ignored otherwise;
    ``origin``: anything identifying the input (returned in :class:`Rejected`);
    ``partition``, ``offset``: where the event was read (empty: -1, not from Kafka).
    ``eos``: sources whose stream ends after this batch, with ``eos_partition`` theirs.
    """

    source: Sequence[str]
    key: Sequence[str]
    t: Sequence[float]
    m: Sequence[float]
    root: Sequence[bool]
    info: Sequence[object]
    origin: Sequence[object]
    eos: Sequence[str] = ()
    partition: Sequence[int] = ()
    offset: Sequence[int] = ()
    eos_partition: Sequence[int] = ()

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
    ``times`` (relative to ``start``, s, sorted) and ``marks`` are the events kept (all of
    them unless the cascade went beyond ``max_events``), shape (min(size, max_events),).
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
class HeldOrigin:
    """The origin of an event held (too far ahead of its clock) across a restart: where it was read."""

    partition: int
    offset: int


@dataclass(slots=True)
class Rejected:
    """An event that cannot be placed, with the reason."""

    origin: object
    reason: str


class _Cascade:
    __slots__ = ("start", "info", "times", "marks", "size", "last", "next_window", "emitted", "in_order", "offset")

    def __init__(self, start: float, info: object, m: float, offset: int):
        self.start = start
        self.info = info
        self.times = array("d", (start,))  # float64, appended in place; copied into numpy with one memcpy
        self.marks = array("d", (m,))
        self.size = 1  # events in all, kept or not
        self.last = start
        self.in_order = True
        self.next_window = 0
        self.emitted: list[int] = []
        self.offset = offset  # input offset of the last event applied (-1: not from Kafka)

    def sort(self) -> None:
        """Sort the events kept by time (stable), if an event came out of order."""
        if not self.in_order:
            order = np.argsort(np.frombuffer(self.times), kind="stable")
            self.times = array("d", np.frombuffer(self.times)[order].tobytes())
            self.marks = array("d", np.frombuffer(self.marks)[order].tobytes())
            self.in_order = True

    def window_events(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` events kept (sorted first: :meth:`sort`): times relative to the start (s) and
        marks, new arrays of shape (n,) (no view of the arrays, which may still grow)."""
        return np.frombuffer(self.times, count=n) - self.start, np.frombuffer(self.marks, count=n).copy()


class _Source:
    __slots__ = ("clock", "cascades", "windows", "ends", "ended", "partition", "held", "dirty")

    def __init__(self, partition: int = -1) -> None:
        self.clock = -math.inf
        self.cascades: dict[str, _Cascade] = {}
        self.windows: list[tuple[float, int, str]] = []  # (deadline, seq, key) of each cascade's next window
        self.ends: list[tuple[float, int, str]] = []  # (deadline, seq, key), re-queued if the cascade moved on
        self.ended: OrderedDict[str, int] = OrderedDict()  # recently ended keys -> offset of their last event
        self.partition = partition
        self.dirty: dict[str | None, None] = {}  # keys changed since the last snapshot (None: the clock)
        # an event too far ahead of the clock, waiting for the next one to confirm the jump:
        # (key, t, m, root, info, origin, offset)
        self.held: tuple | None = None


# ------------------------------------------------------------------ checkpoint records


class _SourceEntry(msgspec.Struct, array_like=True, tag="s"):
    clock: float
    held: tuple[str, float, float, bool, str, int] | None = None  # key, t, m, root, info, offset


class _CascadeEntry(msgspec.Struct, array_like=True, tag="c"):
    offset: int
    start: float
    info: str
    times: bytes  # float64, absolute times, sorted
    marks: bytes
    size: int
    last: float
    next_window: int
    emitted: list[int]


class _EndedEntry(msgspec.Struct, array_like=True, tag="e"):
    offset: int


_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(_SourceEntry | _CascadeEntry | _EndedEntry).decode
_decode_key = msgspec.msgpack.Decoder(tuple[str, ...]).decode


def _key(source: str, key: str | None = None) -> bytes:
    return _encode((source,) if key is None else (source, key))


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
        How many ended cascade keys per source are remembered (to explain late events, and to
        ignore replayed ones).
    max_events : int
        Most events kept per cascade (see the module's policy).
    max_clock_jump : float
        Most seconds a source's clock moves forward on one unconfirmed event (``inf``: no bound).
    """

    def __init__(self, upstream, windows: Sequence[int], terminated: float, min_size: int = 1,
                 remember_ended: int = 100_000, max_events: int = 20_000, max_clock_jump: float = math.inf,
                 **kwargs):
        self.windows = tuple(int(w) for w in windows)
        if not self.windows or list(self.windows) != sorted(set(self.windows)) or self.windows[0] <= 0:
            raise ValueError(f"windows must be positive and increasing, got {windows}")
        if terminated <= 0:
            raise ValueError(f"terminated must be > 0 s, got {terminated}")
        if max_events < 1 or not max_clock_jump > 0:
            raise ValueError(f"max_events must be >= 1 and max_clock_jump > 0, got {max_events}, {max_clock_jump}")
        self.terminated = float(terminated)
        self.min_size = int(min_size)
        self.remember_ended = int(remember_ended)
        self.max_events = int(max_events)
        self.max_clock_jump = float(max_clock_jump)
        self.sources: dict[str, _Source] = {}
        self.late_events = 0
        self.rejected_events = 0
        self.replayed_events = 0  # events already in the state (read again after a restart)
        self.truncated_windows = 0
        self._seq = itertools.count()
        self._dirty: dict[int, dict[str, None]] = {}  # partition -> sources with changes since the last snapshot
        Stream.__init__(self, upstream, **kwargs)

    # ------------------------------------------------------------------ state

    @property
    def open_cascades(self) -> int:
        """Cascades currently held in memory, all sources together."""
        return sum(len(s.cascades) for s in self.sources.values())

    @property
    def events_held(self) -> int:
        """Events kept in memory by the open cascades."""
        return sum(len(c.times) for s in self.sources.values() for c in s.cascades.values())

    def _source(self, name: str, partition: int) -> _Source:
        src = self.sources.get(name)
        if src is None:
            src = self.sources[name] = _Source(partition)
        return src

    def _touch(self, src: _Source, name: str, key: str | None) -> None:
        """Mark ``key`` of source ``name`` (None: its clock) for the next snapshot (sources from Kafka only)."""
        if src.partition >= 0:
            src.dirty[key] = None
            self._dirty.setdefault(src.partition, {})[name] = None

    # ------------------------------------------------------------------ update

    def update(self, x: Events, who=None, metadata=None):
        out: list = []
        touched: dict[str, _Source] = {}
        jump = self.max_clock_jump
        n = len(x)
        partitions = x.partition if len(x.partition) == n else itertools.repeat(-1)
        offsets = x.offset if len(x.offset) == n else itertools.repeat(-1)
        apply = self._apply
        for source, key, t, m, root, info, origin, part, off in zip(x.source, x.key, x.t, x.m, x.root, x.info,
                                                                   x.origin, partitions, offsets):
            src = touched.get(source)
            if src is None:
                src = touched[source] = self._source(source, part)
            if off >= 0:
                c = src.cascades.get(key)
                if (c is not None and off <= c.offset) or (c is None and src.ended.get(key, -1) >= off) or (
                        src.held is not None and src.held[6] == off):
                    self.replayed_events += 1  # applied before the restart that read it again
                    if t > src.clock and t - src.clock <= jump:
                        self._advance(source, src, t, out)
                    continue
            held = src.held
            if t - src.clock > jump or src.clock == -math.inf:  # a jump, or a source's first event
                if held is not None and abs(t - held[1]) <= jump:  # a second event confirms the jump
                    src.held = None
                    apply(src, source, *held, out)
                else:
                    if held is not None:
                        out.append(Rejected(held[5], self._ahead_reason(src, held[1])))
                    src.held = (key, t, m, root, info, origin, off)  # wait for the next event to tell
                    self._touch(src, source, None)
                    continue
            elif held is not None and (off < 0 or off > held[6]):
                src.held = None
                out.append(Rejected(held[5], self._ahead_reason(src, held[1])))
            apply(src, source, key, t, m, root, info, origin, off, out)
        eos_parts = x.eos_partition if len(x.eos_partition) == len(x.eos) else itertools.repeat(-1)
        for name, part in zip(x.eos, eos_parts):
            src = touched.setdefault(name, self._source(name, part))
            if src.held is not None and src.clock == -math.inf:  # its only event: nothing to protect
                held, src.held = src.held, None
                apply(src, name, *held, out)
            src.clock = math.inf
        for name, src in touched.items():
            self._close(name, src, out)
            if src.partition >= 0:
                self._touch(src, name, None)
        self.rejected_events += sum(isinstance(r, Rejected) for r in out)
        if not out:
            return None
        return self._emit(out, metadata=metadata)

    def _apply(self, src: _Source, source: str, key: str, t: float, m: float, root: bool, info: object,
               origin: object, off: int, out: list) -> None:
        """Move its source's clock, then add one event to its cascade (or reject it)."""
        if t > src.clock:  # self._advance, inlined: once per event
            src.clock = t
            if (src.windows and src.windows[0][0] <= t) or (src.ends and src.ends[0][0] <= t):
                self._close(source, src, out)
        c = src.cascades.get(key)
        windows = self.windows
        if root:
            if c is not None:
                out.append(Rejected(origin, f"a second original post for open cascade {key!r}"))
                return
            c = src.cascades[key] = _Cascade(t, info, m, off)
            src.ended.pop(key, None)
            heapq.heappush(src.windows, (t + windows[0], next(self._seq), key))
            heapq.heappush(src.ends, (t + max(self.terminated, windows[-1]), next(self._seq), key))
        else:
            if c is None:
                why = "already ended" if key in src.ended else "unknown (its original post was not seen)"
                out.append(Rejected(origin, f"cascade {key!r} is {why}"))
                return
            if t < c.start:
                out.append(Rejected(origin, f"event at t={t} is before its original post (t={c.start})"))
                return
            c.size += 1
            c.offset = off
            cap = self.max_events
            if len(c.times) < cap:
                c.times.append(t)
                c.marks.append(m)
            elif c.size == cap + 1:
                logger.warning("cascade %r holds max_events = %d events: later ones count in its size but are "
                               "not kept, and its later windows are not emitted", key, cap)
            if c.next_window and t < c.start + windows[c.next_window - 1]:
                self.late_events += 1
            if t >= c.last:
                c.last = t
            else:
                c.in_order = False
        if off >= 0 and src.partition >= 0:  # self._touch, inlined: update() marks the source itself
            src.dirty[key] = None

    def _advance(self, name: str, src: _Source, t: float, out: list) -> None:
        """Move the clock of ``src`` to ``t``, closing what falls due: windows and ends are decided
        event by event, so that the outputs do not depend on how the input was cut into batches."""
        src.clock = t
        if (src.windows and src.windows[0][0] <= t) or (src.ends and src.ends[0][0] <= t):
            self._close(name, src, out)

    def _ahead_reason(self, src: _Source, t: float) -> str:
        return (f"event at t={t} is {t - src.clock:.0f} s ahead of its source's clock (t={src.clock}), more than "
                f"max_clock_jump = {self.max_clock_jump:g} s, and the next event did not confirm the jump")

    def _close(self, name: str, src: _Source, out: list) -> None:
        clock = src.clock
        windows = self.windows
        while src.windows and src.windows[0][0] <= clock:
            _, _, key = heapq.heappop(src.windows)
            c = src.cascades[key]
            T = windows[c.next_window]
            c.next_window += 1
            if c.next_window < len(windows):
                heapq.heappush(src.windows, (c.start + windows[c.next_window], next(self._seq), key))
            self._touch(src, name, key)
            c.sort()
            n = bisect_left(c.times, c.start + T)  # on the array itself: only the window's events are copied
            if c.size > len(c.times) and n == len(c.times):  # events before start + T were not all kept
                self.truncated_windows += 1
                continue
            if n >= self.min_size:
                c.emitted.append(T)
                out.append(WindowClosed(name, key, c.info, T, c.start, *c.window_events(n)))
        term, t_max = self.terminated, windows[-1]
        while src.ends and src.ends[0][0] <= clock:
            _, _, key = heapq.heappop(src.ends)
            c = src.cascades[key]
            deadline = max(c.last + term, c.start + t_max)
            if deadline > clock:  # the cascade moved on since it was queued
                heapq.heappush(src.ends, (deadline, next(self._seq), key))
                continue
            del src.cascades[key]
            self._remember_ended(src, name, key, c.offset)
            c.sort()
            out.append(CascadeEnded(name, key, c.info, c.start, c.size, c.last - c.start, tuple(c.emitted),
                                    *c.window_events(len(c.times))))
        if clock == math.inf:  # end of stream: the source may start afresh
            src.clock = -math.inf
            if src.held is not None:
                out.append(Rejected(src.held[5], "event far ahead of its source's clock, not confirmed before "
                                                 "the end of its stream"))
                src.held = None

    def _remember_ended(self, src: _Source, name: str, key: str, offset: int) -> None:
        src.ended[key] = offset
        self._touch(src, name, key)
        while len(src.ended) > self.remember_ended:
            old, _ = src.ended.popitem(last=False)
            self._touch(src, name, old)  # written as a deletion

    # ------------------------------------------------------------- StateStore

    def snapshot(self, partitions: Collection[int] | None = None) -> list[Change]:
        """Changelog records of what changed since the last snapshot (see :mod:`streams.state`).

        Per partition the cascades come first and the sources (their clocks) last: a checkpoint
        cut short by a crash may leave cascades ahead of the input's committed offset (their
        replayed events are then ignored), but never a clock ahead of a cascade it would end
        before its replayed events are back.
        """
        out: list[Change] = []
        for p in list(self._dirty) if partitions is None else partitions:
            clocks: list[Change] = []
            for name in self._dirty.pop(p, {}):
                src = self.sources.get(name)
                if src is None:
                    continue
                keys, src.dirty = src.dirty, {}
                for key in keys:
                    self._changes(p, name, src, key, out, clocks)
            out += clocks
        return out

    def _changes(self, p: int, name: str, src: _Source, key: str | None, out: list[Change],
                 clocks: list[Change]) -> None:
        """The changelog record of ``key`` of source ``name`` in partition ``p`` (None: its clock, to ``clocks``)."""
        if key is None:
            h = src.held
            held = None if h is None else (h[0], float(h[1]), float(h[2]), bool(h[3]), str(h[4] or ""), h[6])
            clocks.append((p, _key(name), _encode(_SourceEntry(float(src.clock), held))))
        elif (c := src.cascades.get(key)) is not None:
            c.sort()
            out.append((p, _key(name, key), _encode(_CascadeEntry(
                c.offset, float(c.start), str(c.info or ""), c.times.tobytes(), c.marks.tobytes(), c.size,
                float(c.last), c.next_window, c.emitted))))
        elif key in src.ended:
            out.append((p, _key(name, key), _encode(_EndedEntry(src.ended[key]))))
        else:
            out.append((p, _key(name, key), None))

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Rebuild the sources of ``partition`` from its changelog records (greatest offset per key wins)."""
        latest = latest_entries(records, _decode_entry)
        windows, term = self.windows, self.terminated
        t_max = windows[-1]
        ended: list[tuple[int, str, str]] = []
        for raw, entry in latest.items():
            path = _decode_key(raw)
            src = self._source(path[0], partition)
            src.partition = partition
            if isinstance(entry, _SourceEntry):
                src.clock = entry.clock
                if entry.held is not None:
                    k, t, m, root, info, off = entry.held
                    src.held = (k, t, m, root, info, HeldOrigin(partition, off), off)
            elif isinstance(entry, _EndedEntry):
                ended.append((entry.offset, path[0], path[1]))
            else:
                c = _Cascade(entry.start, entry.info, 0.0, entry.offset)
                c.times, c.marks = array("d", entry.times), array("d", entry.marks)
                c.size, c.last, c.next_window, c.emitted = entry.size, entry.last, entry.next_window, entry.emitted
                src.cascades[path[1]] = c
        for offset, name, key in sorted(ended):
            src = self.sources[name]
            if key not in src.cascades:
                src.ended[key] = offset
        live = 0
        for src in self.sources.values():
            if src.partition != partition:
                continue
            src.windows = [(c.start + windows[c.next_window], next(self._seq), k)
                           for k, c in src.cascades.items() if c.next_window < len(windows)]
            src.ends = [(max(c.last + term, c.start + t_max), next(self._seq), k) for k, c in src.cascades.items()]
            heapq.heapify(src.windows)
            heapq.heapify(src.ends)
            live += len(src.cascades)
        return live

    def drop(self, partitions: Collection[int]) -> None:
        """Forget every source of ``partitions`` (and their pending changes)."""
        parts = set(partitions)
        for name in [n for n, s in self.sources.items() if s.partition in parts]:
            del self.sources[name]
        for p in parts:
            self._dirty.pop(p, None)

    def committed(self, partition: int, offset: int) -> None:
        """Nothing to prune: ended markers are bounded by ``remember_ended``."""

