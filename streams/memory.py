"""In-process topics: the embedded mode wires stages through memory instead of Kafka.

A :class:`MemoryBus` holds one streamz ``Stream`` per topic. Its sink node takes
``list[Record]`` batches, groups them by topic and emits each group into that
topic's stream with the batch's metadata, so ref-counted checkpoints flow
through exactly as they would through Kafka. :class:`jsonl_sink` appends the
records of a topic to ``<dir>/<topic>.jsonl``, in this process (:class:`JsonlFiles`) or through a
child process (:class:`JsonlWriter`), so that the lines a batch makes itself are made on another core.

A batch is any sequence of records. One with a ``topic`` attribute holds records of that topic
only, and one with a ``jsonl`` attribute (and a ``topic``) makes its own JSONL lines: ``jsonl`` is
a callable, called with no argument (in a :class:`JsonlWriter`'s process: a module-level function or a
:func:`functools.partial` of one), that returns the lines
:func:`lines` would make of its records. A batch made in the process (the generator's tweets, the
collector's series) can so be published and written without a record object per message, and its
lines formatted off the pipeline's process.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import orjson
from streamz import Sink, Stream

from .jsonl_writer import BINARY, JsonlFiles, JsonlWriter, lines
from .records import Record

__all__ = ["MemoryBus", "to_memory", "JsonlFiles", "JsonlWriter", "jsonl_sink", "lines", "BINARY", "read_jsonl_topic"]


class MemoryBus:
    """One stream per topic, created on first use; ``counts[topic]`` records emitted so far."""

    def __init__(self) -> None:
        self.topics: dict[str, Stream] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def topic(self, name: str) -> Stream:
        """The stream of ``name``: connect consumers to it."""
        s = self.topics.get(name)
        if s is None:
            s = self.topics[name] = Stream(stream_name=name)
        return s

    def publish(self, batch: Sequence[Record], metadata=None) -> list:
        """Emit each topic's records of ``batch`` into its stream (a batch of one topic as it is: one
        whose ``topic`` attribute names it is not even looked into)."""
        topic = getattr(batch, "topic", None)
        topics = {topic} if topic is not None else {r.topic for r in batch}
        if len(topics) == 1:
            by_topic = {topics.pop(): batch}
        else:
            by_topic = defaultdict(list)
            for r in batch:
                by_topic[r.topic].append(r)
        out = []
        for name, records in by_topic.items():
            self.counts[name] += len(records)
            out.extend(self.topic(name)._emit(records, metadata=metadata))
        return out


@Stream.register_api()
class to_memory(Sink):
    """Streamz sink: publish ``list[Record]`` batches on a :class:`MemoryBus`."""

    def __init__(self, upstream, bus: MemoryBus, **kwargs):
        self.bus = bus
        super().__init__(upstream, **kwargs)

    def update(self, x: list[Record], who=None, metadata=None):
        if x:
            return self.bus.publish(x, metadata=metadata)
        return None


@Stream.register_api()
class jsonl_sink(Sink):
    """Streamz sink: append every record of ``list[Record]`` batches to ``<directory>/<record.topic>.jsonl``.

    One line per record: ``{"key": str | null, "value": <the JSON message>, "headers": {...}}``;
    binary values (header ``content-type: application/octet-stream``, the model files) are
    written as ``{"base64": ...}``. ``writer``: a :class:`JsonlFiles` or a :class:`JsonlWriter` (several
    sinks may share one), or a directory for a :class:`JsonlFiles` of this sink's own (closed by
    :meth:`close`).
    """

    def __init__(self, upstream, writer: JsonlFiles | JsonlWriter | str | Path, **kwargs):
        self.owned = not isinstance(writer, (JsonlFiles, JsonlWriter))
        self.writer = JsonlFiles(writer) if self.owned else writer
        super().__init__(upstream, **kwargs)

    def update(self, x: Sequence[Record], who=None, metadata=None):
        if not x:
            return None
        write = self.writer.write
        jsonl = getattr(x, "jsonl", None)
        if jsonl is not None:  # a batch of one topic that makes its own lines (in a JsonlWriter's process)
            write(x.topic, jsonl)
            return None
        topic = x[0].topic
        if all(r.topic == topic for r in x):
            write(topic, lines(x))
        else:
            by_topic: dict[str, list[Record]] = defaultdict(list)
            for r in x:
                by_topic[r.topic].append(r)
            for name, records in by_topic.items():
                write(name, lines(records))
        return None

    def flush(self) -> None:
        """Make what was written visible to other readers."""
        self.writer.flush()

    def close(self) -> None:
        """Close the writer this sink started (one given to it is closed by its owner)."""
        if self.owned:
            self.writer.close()


def read_jsonl_topic(path: str | Path) -> list[dict]:
    """Read back a ``<topic>.jsonl`` file written by :class:`jsonl_sink` (base64 values decoded to bytes)."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            rec = orjson.loads(line)
            v = rec["value"]
            if isinstance(v, dict) and set(v) == {"base64"}:
                rec["value"] = base64.b64decode(v["base64"])
            out.append(rec)
    return out
