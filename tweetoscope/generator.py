"""Generator stage: a dataset replay turned into the course's ``tweets`` messages."""

from __future__ import annotations

from streamz import Stream

from streams.datasets import Dataset
from streams.records import Record
from streams.replay import ReplayBatch

from .schemas import TWEETS, Eos, Retweet, Tweet, encode

__all__ = ["tweet_records", "cascade_id"]


def cascade_id(index: int) -> str:
    """The cid of the dataset's cascade number ``index``: the original tweet's id, ``str(index + 1)``."""
    return str(index + 1)


def tweet_records(dataset: Dataset, batch: ReplayBatch) -> list[Record]:
    """``tweets`` records of a replay batch (key = source id), then an ``eos`` per ended source.

    The original post of cascade ``i`` is ``{"type": "tweet", "tweet_id": i + 1, "msg": <its
    message or dataset id>, "info": <dataset id>}``; its retweets carry the same ``tweet_id``.
    ``t`` is the absolute event time in seconds, ``m`` the follower count.
    """
    cascades = dataset.cascades
    out = []
    name = TWEETS.name
    keys = {src: src.encode() for src in set(batch.source)}
    for c, i, t, m, src in zip(batch.cascade.tolist(), batch.index.tolist(), batch.t.tolist(), batch.m.tolist(),
                               batch.source):
        if i == 0:
            casc = cascades[c]
            value = encode(Tweet(msg=casc.msg or casc.cid, t=t, m=m, tweet_id=c + 1, info=casc.cid))
        else:
            value = encode(Retweet(t=t, m=m, tweet_id=c + 1))
        out.append(Record(name, value, keys[src]))
    t_end = float(batch.t[-1]) if len(batch) else 0.0
    for src in batch.eos:
        out.append(Record(name, encode(Eos(t=t_end, info="end of replay")), src.encode()))
    return out


def generator(replay: Stream, dataset: Dataset) -> Stream:
    """The generator's graph: replay batches in, ``tweets`` record batches out."""
    return replay.map(lambda b: tweet_records(dataset, b), stream_name="generator")
