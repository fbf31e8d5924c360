"""Offset bookkeeping of a consumer-group member, with no broker in it.

A :class:`OffsetTracker` follows, per assigned ``(topic, partition)``, the batches
consumed and not yet done, and says which offset may be committed: the one after the
longest run of consecutive done batches (at-least-once: an offset is committed only
once every record before it is done). It is used by :class:`streams.kafka.KafkaSource`
from two threads (the consumer thread consumes and commits, the event loop marks batches
done), hence the lock; every method is short and never calls out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["TopicPartitionKey", "Batch", "OffsetTracker"]

TopicPartitionKey = tuple[str, int]


@dataclass(eq=False, slots=True)
class _Segment:
    """The part of one batch that lies in one partition: its last offset."""

    last: int
    done: bool = False


@dataclass(eq=False, slots=True)
class _Partition:
    segments: deque[_Segment] = field(default_factory=deque)
    committable: int | None = None  # last offset of the longest done prefix + 1
    committed: int | None = None  # what was last committed
    position: int | None = None  # last consumed offset + 1


@dataclass(eq=False, slots=True)
class Batch:
    """One consumed batch: its segment in each assigned partition, and whether it is done."""

    parts: list[tuple[_Partition, _Segment]]
    size: int
    done: bool = False


class OffsetTracker:
    """Commit bookkeeping of the partitions assigned to one consumer.

    ``consumed`` registers a batch by the last offset it holds per partition (records of
    partitions not assigned are not tracked and must not be processed); ``done`` marks it
    done; ``committable`` gives the offsets that may be committed now and ``committed``
    records what the broker accepted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[TopicPartitionKey, _Partition] = {}
        self._committed: dict[TopicPartitionKey, int] = {}

    # ------------------------------------------------------------- assignment

    def assign(self, keys: Iterable[TopicPartitionKey]) -> None:
        with self._lock:
            for key in keys:
                self._parts.setdefault(key, _Partition())

    def revoke(self, keys: Iterable[TopicPartitionKey]) -> None:
        """Forget partitions: batches in flight on them are never committed by this member."""
        with self._lock:
            for key in keys:
                self._parts.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()

    def assigned(self) -> set[TopicPartitionKey]:
        with self._lock:
            return set(self._parts)

    def is_assigned(self, key: TopicPartitionKey) -> bool:
        return key in self._parts

    # ---------------------------------------------------------------- batches

    def consumed(self, lasts: Mapping[TopicPartitionKey, int], size: int) -> Batch:
        """Register a batch holding offsets up to ``lasts[key]`` of each (assigned) partition."""
        with self._lock:
            parts = []
            for key, last in lasts.items():
                part = self._parts.get(key)
                if part is None:
                    continue
                segment = _Segment(last)
                part.segments.append(segment)
                part.position = last + 1
                parts.append((part, segment))
        return Batch(parts, size)

    def done(self, batch: Batch) -> bool:
        """Mark ``batch`` done; False if it already was (released more often than retained)."""
        if batch.done:
            return False
        batch.done = True
        with self._lock:
            for part, segment in batch.parts:
                segment.done = True
                while part.segments and part.segments[0].done:
                    part.committable = part.segments.popleft().last + 1
        return True

    # ---------------------------------------------------------------- commits

    def committable(self, only: Iterable[TopicPartitionKey] | None = None) -> dict[TopicPartitionKey, int]:
        """Offsets that may be committed and were not yet, by partition (of ``only``, if given)."""
        keys = None if only is None else set(only)
        with self._lock:
            return {key: part.committable for key, part in self._parts.items()
                    if (keys is None or key in keys) and part.committable is not None
                    and part.committable != part.committed}

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Next offset to consume per partition, for the partitions consumed from so far."""
        with self._lock:
            return {key: part.position for key, part in self._parts.items() if part.position is not None}

    def pending(self) -> dict[TopicPartitionKey, int]:
        """Batches not done per partition (those with any)."""
        with self._lock:
            return {key: len(part.segments) for key, part in self._parts.items() if part.segments}

    def committed(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Record offsets the broker accepted."""
        with self._lock:
            for key, offset in offsets.items():
                self._committed[key] = offset
                part = self._parts.get(key)
                if part is not None:
                    part.committed = offset

    def committed_offsets(self) -> dict[TopicPartitionKey, int]:
        """Every offset committed successfully so far, by partition (revoked ones included)."""
        with self._lock:
            return dict(self._committed)

    def behind(self) -> dict[TopicPartitionKey, tuple[int | None, int]]:
        """``(committed, committable)`` of the partitions whose done offsets are not all committed."""
        with self._lock:
            return {key: (part.committed, part.committable) for key, part in self._parts.items()
                    if part.committable is not None and part.committable != part.committed}
