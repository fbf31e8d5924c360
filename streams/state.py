"""Stage state that survives restarts and moves with its partitions: the checkpoint protocol.

A stateful streamz node (the collector's cascade windows, the predictor's join, the
learner's samples, the estimator's whole-cascade fits) keeps its state by *input
partition* and implements :class:`StateStore`. The Kafka source
(:class:`streams.kafka.KafkaSource`) then checkpoints it to a compacted changelog topic
(one changelog partition per input partition) and commits an input offset only once
the checkpoint that covers it is acknowledged; on assignment it restores a partition's
state before consuming it, on revocation it checkpoints, commits and drops it.

Idempotence on replay. A restart re-reads the input from the last committed offset,
and a checkpoint interrupted half-way may leave the changelog *ahead* of that offset for
some keys. So every entry records the input offset of the last record applied to it,
and a removed entry leaves a marker with its offset: a replayed record at offset ``o``
is applied to an entry only if ``o`` is greater than the entry's offset. Applying the
same input twice thus changes nothing, and the state after a restart is the state of
an uninterrupted run. On restore, for each key the value with the greatest offset wins
(an instance that lost its partitions without knowing it may have written an older one
after the new owner's).

This module knows nothing about Kafka or Hawkes processes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = ["StateStore", "Change", "latest_entries"]

#: One changelog record: ``(partition, key, value)``; ``value`` None deletes the key.
Change = tuple[int, bytes, "bytes | None"]


@runtime_checkable
class StateStore(Protocol):
    """State kept per input partition, checkpointed as key/value changes."""

    def snapshot(self, partitions: Collection[int] | None = None) -> list[Change]:
        """The changes since the last snapshot, of ``partitions`` (all if None); they are then clean."""
        ...

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Rebuild the state of ``partition`` from its changelog records in log order; returns the
        number of live entries."""
        ...

    def drop(self, partitions: Collection[int]) -> None:
        """Forget the state of ``partitions`` (they moved to another instance, or were lost)."""
        ...

    def committed(self, partition: int, offset: int) -> None:
        """The input of ``partition`` is committed up to ``offset`` (exclusive): markers of removed
        entries below it are no longer needed (a replay starts at ``offset`` at the earliest)."""
        ...


def latest_entries(records: Iterable[tuple[bytes, bytes | None]], decode: Callable[[bytes], Any]) -> dict[bytes, Any]:
    """The live entry of each key of a changelog read in log order: a deletion removes the key; of the
    values written, the one with the greatest ``offset`` attribute wins (the last one for entries
    without an offset)."""
    latest: dict[bytes, Any] = {}
    for key, value in records:
        if value is None:
            latest.pop(key, None)
            continue
        entry = decode(value)
        old = latest.get(key)
        offset = getattr(entry, "offset", None)
        if old is None or offset is None or offset >= old.offset:
            latest[key] = entry
    return latest
