"""The record batches a stage makes in process, which the stages after it in the same process take as they
are: a replay batch's tweets (:class:`DecodedTweets`, made by :mod:`tweetoscope.generator`) and the
collector's series (:class:`SeriesBatch`). Each is a sequence of records whose records are made only
when asked (a Kafka producer iterates them); the consumers in the same process take what it carries
(its events, its arrays) instead of decoding records, and :class:`streams.memory.JsonlWriter` has its
lines made in its own process (``jsonl``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from streams.records import Record

from .batch_lines import serie_record, series_jsonl
from .schemas import CASCADE_SERIES, TWEETS, SerieArrays

if TYPE_CHECKING:  # streams.window imports streamz, which a reader of these batches may not need
    from streams.window import Events

__all__ = ["DecodedTweets", "SeriesBatch"]


class _MadeOnDemand(Sequence[Record]):
    """A batch of records of one topic (``topic``) made in this process, whose records are made when it is
    first iterated or indexed (a Kafka producer does; the consumers in the same process take what the
    batch carries instead), by its ``_make()``."""

    topic: str
    _records: list[Record] | None = None

    def _make(self) -> list[Record]:
        raise NotImplementedError

    @property
    def records(self) -> list[Record]:
        """The batch's records (made on first use)."""
        if self._records is None:
            self._records = self._make()
        return self._records

    def __getitem__(self, i):
        return self.records[i]

    def __iter__(self):
        return iter(self.records)


class DecodedTweets(_MadeOnDemand):
    """A ``tweets`` record batch made in the same process by the generator
    (:func:`tweetoscope.generator.tweet_records`), within the schema's bounds, that carries what the
    process needs without making a record per tweet: the :class:`streams.window.Events` its records
    decode to (:func:`tweetoscope.collector.decode_tweets` takes them instead of decoding every record
    again), a callable that makes its lines of JSONL (``jsonl``, for :class:`streams.memory.jsonl_sink`:
    it calls it in its writer's process) and each record on demand (:meth:`record`: the origin of an
    event that is dead-lettered). Iterating it, or indexing it, makes its records: its tweets, then an
    ``eos`` per source that ended. A batch read from Kafka, or any other list, is decoded.

    ``events.origin`` holds ``(record, k)`` for its ``k``-th tweet:
    :func:`tweetoscope.collector.encode_outputs` makes the record, ``record(k)``, of an event it
    dead-letters."""

    topic = TWEETS.name

    def __init__(self, events: Events, size: int, records: Callable[[], list[Record]],
                 record: Callable[[int], Record], jsonl: Callable[[], bytes]) -> None:
        self.events = events
        self._size = size
        self._make = records
        self.record = record
        self.jsonl = jsonl

    def __len__(self) -> int:
        return self._size


class SeriesBatch(_MadeOnDemand):
    """The ``cascade_series`` records of a batch of windows, held as :class:`SerieArrays` (``arrays``),
    each one whose message certainly decodes (:meth:`SerieArrays.decodes`), and encoded only when asked:
    the estimator in the same process fits the arrays (:func:`tweetoscope.estimator.decode_series`), the
    dashboard shows them, :class:`streams.memory.jsonl_sink` has their lines made in its writer's process
    (``jsonl``), and iterating or indexing the batch makes the records (a Kafka producer does)."""

    topic = CASCADE_SERIES.name

    def __init__(self, arrays: list[SerieArrays]) -> None:
        self.arrays = arrays

    def _make(self) -> list[Record]:
        return [serie_record(s) for s in self.arrays]

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def jsonl(self) -> Callable[[], bytes]:
        """A callable that returns the JSONL lines of the records (:func:`streams.memory.lines`): a partial of
        :func:`tweetoscope.batch_lines.series_jsonl` holding the series as columns (their events as two
        arrays), which a :class:`streams.memory.JsonlWriter` sends to its process as they are."""
        cid, T_obs, times, marks, msg, source, start, final, _ = zip(*self.arrays)
        offsets = np.cumsum([0, *(t.size for t in times)])
        return partial(series_jsonl, cid, T_obs, msg, source, start, final, offsets, np.concatenate(times),
                       np.concatenate(marks))
