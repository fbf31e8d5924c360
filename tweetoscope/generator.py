"""Generator stage: a dataset replay turned into the course's ``tweets`` messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import repeat

import numpy as np
from streamz import Stream

from streams.datasets import Dataset
from streams.memory import lines
from streams.records import Record
from streams.replay import ReplayBatch
from streams.window import Events

from .batches import DecodedTweets
from .schemas import MAX_MESSAGE_BYTES, MAX_VALUE, TWEETS, Eos, Retweet, Tweet, encode
from .batch_lines import batch_jsonl

__all__ = ["tweet_records", "tweet_record_list", "cascade_id", "cascade_ids"]


def cascade_id(index: int) -> str:
    """The cid of the dataset's cascade number ``index``: the original tweet's id, ``str(index + 1)``."""
    return str(index + 1)


def cascade_ids(dataset: Dataset) -> np.ndarray:
    """The cid of every cascade of ``dataset`` (:func:`cascade_id`), as an array of ``str`` objects."""
    out = np.empty(len(dataset.cascades), dtype=object)
    out[:] = [cascade_id(i) for i in range(len(dataset.cascades))]
    return out


def tweet_records(dataset: Dataset, batch: ReplayBatch, cids: np.ndarray | None = None) -> Sequence[Record]:
    """``tweets`` records of a replay batch (key = source id), then an ``eos`` per ended source.

    The original post of cascade ``i`` is ``{"type": "tweet", "tweet_id": i + 1, "msg": <its
    message or dataset id>, "info": <dataset id>}``; its retweets carry the same ``tweet_id``.
    ``t`` is the absolute event time in seconds, ``m`` the follower count.

    When every value is within the schema's bounds, the batch is a
    :class:`tweetoscope.batches.DecodedTweets`: it carries the events the collector would decode
    from these records and its lines of JSONL, and makes its records only when asked (a Kafka
    producer iterates them; in process, only the origins of dead-lettered events are made). Else
    it is the list of records (the collector decodes them, and dead-letters what is not valid).
    ``cids``: :func:`cascade_ids` of the dataset, made once for all batches: the events then share
    their cascade's id (a string made, hashed and freed per event took 0.08–0.16 s per million events).
    """
    cols = _Columns(dataset, batch)
    if not (_within_bounds(batch) and all(len(v) <= MAX_MESSAGE_BYTES for v in cols.values.values())):
        return cols.records()
    n = len(batch)
    info = [""] * n  # a retweet's msg
    for k, tweet in cols.tweets.items():
        info[k] = tweet.msg
    record = cols.record
    keys = cids[batch.cascade].tolist() if cids is not None else [cascade_id(c) for c in cols.cs]
    events = Events(list(batch.source), keys, cols.ts, cols.ms, (batch.index == 0).tolist(),
                    info, _Origins(record, n), list(batch.eos), [-1] * n, [-1] * n, [-1] * len(batch.eos))
    return DecodedTweets(events, n + len(cols.eos), cols.records, record, cols.jsonl())


def tweet_record_list(dataset: Dataset, batch: ReplayBatch) -> list[Record]:
    """The records of :func:`tweet_records`, as a list, made at once (what a producer of the batch sends)."""
    return _Columns(dataset, batch).records()


class _Columns:
    """A replay batch's tweets as columns, with its original posts and ends of stream encoded: each
    record, all of them, or their JSONL lines, made from them."""

    def __init__(self, dataset: Dataset, batch: ReplayBatch) -> None:
        cascades = dataset.cascades
        self.batch = batch
        self.cs, self.ts, self.ms = cs, ts, ms = batch.cascade.tolist(), batch.t.tolist(), batch.m.tolist()
        roots = {int(k): cascades[cs[k]] for k in np.flatnonzero(batch.index == 0)}
        self.tweets = {k: Tweet(msg=c.msg or c.cid, t=ts[k], m=ms[k], tweet_id=cs[k] + 1, info=c.cid)
                       for k, c in roots.items()}
        self.values = {k: encode(v) for k, v in self.tweets.items()}  # of the original posts, by row
        self.keys = {src: src.encode() for src in set(batch.source)}
        t_end = float(batch.t[-1]) if len(batch) else 0.0
        self.eos = [Record(TWEETS.name, encode(Eos(t=t_end, info="end of replay")), src.encode())
                    for src in batch.eos]

    def records(self) -> list[Record]:
        """Every record: the tweets, then the ends of stream."""
        name, values, keys = TWEETS.name, self.values, self.keys
        out = []
        for k, (c, t, m, src) in enumerate(zip(self.cs, self.ts, self.ms, self.batch.source)):
            value = values.get(k)
            if value is None:
                value = encode(Retweet(t=t, m=m, tweet_id=c + 1))
            out.append(Record(name, value, keys[src]))
        out.extend(self.eos)
        return out

    def record(self, k: int) -> Record:
        """The record of tweet ``k``."""
        value = self.values.get(k)
        if value is None:
            value = encode(Retweet(t=self.ts[k], m=self.ms[k], tweet_id=self.cs[k] + 1))
        return Record(TWEETS.name, value, self.keys[self.batch.source[k]])

    def jsonl(self) -> Callable[[], bytes]:
        """A callable that returns the JSONL lines of every record (:func:`streams.memory.lines`),
        made without the tweets' records: a :class:`streams.memory.JsonlWriter` calls it in its own
        process: a partial of :func:`tweetoscope.batch_lines.batch_jsonl`, which holds the batch's arrays
        (sent as their bytes), not the batch."""
        b = self.batch
        return partial(batch_jsonl, b.source, b.cascade, b.t, b.m, self.values, lines(self.eos))


class _Origins(Sequence):
    """``(record, k)`` for each tweet ``k`` of a batch (its ``Events.origin``): ``record(k)`` makes its
    record. Made as they are iterated; they hold the function, not the batch, so that a batch is
    freed as soon as it is dropped (no reference cycle for the garbage collector to find)."""

    def __init__(self, record: Callable[[int], Record], n: int) -> None:
        self.record, self.n = record, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [(self.record, i) for i in range(self.n)[k]]
        return (self.record, range(self.n)[k])

    def __iter__(self):
        return zip(repeat(self.record), range(self.n))


def _within_bounds(batch: ReplayBatch) -> bool:
    """Whether every time and mark of the batch is one the ``tweets`` schema accepts."""
    t, m = batch.t, batch.m
    return bool(((t >= 0) & (t <= MAX_VALUE) & (m >= 0) & (m <= MAX_VALUE)).all())


def generator(replay: Stream, dataset: Dataset) -> Stream:
    """The generator's graph: replay batches in, ``tweets`` record batches out."""
    cids = cascade_ids(dataset)
    return replay.map(lambda b: tweet_records(dataset, b, cids), stream_name="generator")
