"""The unit that flows between stages: a raw message of a topic, in batches.

Streams nodes pass ``list[Record]`` batches (never single messages: per-element
Python overhead is the throughput limit). A record carries its origin
(partition, offset) so that a bad one can be sent to the dead-letter topic with
where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Record", "dlq_topic"]


@dataclass(slots=True)
class Record:
    """One message: ``topic``, ``key`` and ``value`` as bytes, optional string ``headers``.

    ``partition``/``offset`` are -1 for records that did not come from Kafka;
    ``timestamp`` is the message time in seconds since the epoch (0 if unknown).
    ``message``: what the consumer of the topic would decode ``value`` to, when the stage that made the
    record runs in the same process and knows ``value`` would decode (the embedded mode): the consumer
    may take it instead of decoding. It never leaves the process (None on records read from Kafka).
    """

    topic: str
    value: bytes
    key: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    partition: int = -1
    offset: int = -1
    timestamp: float = 0.0
    message: object = field(default=None, compare=False, repr=False)


def dlq_topic(topic: str) -> str:
    """Name of the dead-letter topic of ``topic``: ``<topic>.dlq``."""
    return f"{topic}.dlq"
