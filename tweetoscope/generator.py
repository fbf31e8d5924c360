"""Generator stage: a dataset replay turned into the course's ``tweets`` messages."""

from __future__ import annotations

from streamz import Stream

from streams.datasets import Dataset
from streams.records import Record
from streams.replay import ReplayBatch
from streams.window import Events

from .collector import DecodedTweets
from .schemas import MAX_MESSAGE_BYTES, MAX_VALUE, TWEETS, Eos, Retweet, Tweet, encode

__all__ = ["tweet_records", "cascade_id"]


def cascade_id(index: int) -> str:
    """The cid of the dataset's cascade number ``index``: the original tweet's id, ``str(index + 1)``."""
    return str(index + 1)


def tweet_records(dataset: Dataset, batch: ReplayBatch) -> list[Record]:
    """``tweets`` records of a replay batch (key = source id), then an ``eos`` per ended source.

    The original post of cascade ``i`` is ``{"type": "tweet", "tweet_id": i + 1, "msg": <its
    message or dataset id>, "info": <dataset id>}``; its retweets carry the same ``tweet_id``.
    ``t`` is the absolute event time in seconds, ``m`` the follower count.

    The batch is a :class:`tweetoscope.collector.DecodedTweets` carrying the events the collector
    would decode from these records, when every value is within the schema's bounds (else the
    collector decodes them, and dead-letters what is not).
    """
    cascades = dataset.cascades
    out = DecodedTweets()
    name = TWEETS.name
    keys = {src: src.encode() for src in set(batch.source)}
    roots = []
    cs, ts, ms = batch.cascade.tolist(), batch.t.tolist(), batch.m.tolist()
    for k, (c, i, t, m, src) in enumerate(zip(cs, batch.index.tolist(), ts, ms, batch.source)):
        if i == 0:
            casc = cascades[c]
            msg = casc.msg or casc.cid
            value = encode(Tweet(msg=msg, t=t, m=m, tweet_id=c + 1, info=casc.cid))
            roots.append((k, msg, len(value)))
        else:
            value = encode(Retweet(t=t, m=m, tweet_id=c + 1))
        out.append(Record(name, value, keys[src]))
    n = len(out)
    t_end = float(batch.t[-1]) if len(batch) else 0.0
    for src in batch.eos:
        out.append(Record(name, encode(Eos(t=t_end, info="end of replay")), src.encode()))
    if _within_bounds(batch) and all(size <= MAX_MESSAGE_BYTES for _, _, size in roots):
        info = [""] * n  # a retweet's msg
        for k, msg, _ in roots:
            info[k] = msg
        out.events = Events(list(batch.source), [str(c + 1) for c in cs], ts, ms, (batch.index == 0).tolist(), info,
                            out[:n], list(batch.eos), [-1] * n, [-1] * n, [-1] * len(batch.eos))
    else:
        out = list(out)
    return out


def _within_bounds(batch: ReplayBatch) -> bool:
    """Whether every time and mark of the batch is one the ``tweets`` schema accepts."""
    t, m = batch.t, batch.m
    return bool(((t >= 0) & (t <= MAX_VALUE) & (m >= 0) & (m <= MAX_VALUE)).all())


def generator(replay: Stream, dataset: Dataset) -> Stream:
    """The generator's graph: replay batches in, ``tweets`` record batches out."""
    return replay.map(lambda b: tweet_records(dataset, b), stream_name="generator")
