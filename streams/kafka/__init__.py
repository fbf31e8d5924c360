"""Kafka nodes for streamz: a consumer-group source with at-least-once commits and checkpointed state,
a delivery-confirmed sink, and the admin helpers (topics, reading a topic in full).

* :mod:`.source` — :class:`KafkaSource` (``Stream.from_kafka_group``);
* :mod:`.sink` — :class:`KafkaSink` (``Stream.to_kafka_group``);
* :mod:`.offsets` — :class:`OffsetTracker`, the commit bookkeeping (no broker in it);
* :mod:`.admin` — client defaults, :func:`create_topics`, :class:`TopicReader`.

Why our own nodes: streamz's ``from_kafka`` leaves auto-commit on, so a ``kill -9``
loses whatever was auto-committed but not yet processed; ``from_kafka_batched``
never joins the consumer group.
"""

from .admin import (CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, TopicReader, committed_offsets, connection, create_topics,
                    end_offsets, merged, read_topic, retriable, wait_for_broker)
from .offsets import OffsetTracker, TopicPartitionKey
from .sink import KafkaDeliveryError, KafkaSink
from .source import CHANGELOG_MAX_BYTES, ChangelogError, KafkaSource, SourceState

__all__ = [
    "PRODUCER_DEFAULTS", "CONSUMER_DEFAULTS", "CHANGELOG_MAX_BYTES", "KafkaSource", "KafkaSink", "KafkaDeliveryError",
    "ChangelogError", "SourceState", "OffsetTracker", "TopicPartitionKey", "TopicReader", "create_topics",
    "wait_for_broker", "read_topic", "committed_offsets", "end_offsets", "connection", "merged", "retriable",
]
