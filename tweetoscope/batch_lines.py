"""The JSONL lines of the batches that the stages make in process, made from their arrays: a replay
batch's tweets (:func:`batch_jsonl`) and the collector's series (:func:`series_jsonl`).

Imported by the process of a :class:`streams.memory.JsonlWriter`, which calls these functions
(:meth:`tweetoscope.generator._Columns.jsonl`, :attr:`tweetoscope.batches.SeriesBatch.jsonl`): it
imports only the message schemas and the line format, so that the writer starts fast.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from streams.jsonl_writer import lines
from streams.records import Record

from .schemas import CASCADE_SERIES, SerieArrays, encode

__all__ = ["batch_jsonl", "tweet_jsonl", "series_jsonl", "serie_record"]


def batch_jsonl(sources: list[str], cascade: np.ndarray, t: np.ndarray, m: np.ndarray, roots: dict[int, bytes],
                eos: bytes) -> bytes:
    """The lines of :meth:`tweetoscope.generator._Columns.jsonl`: those of the tweets (:func:`tweet_jsonl`,
    from the batch's columns, shape (n,) each), then ``eos``, the lines of its ends of stream."""
    return tweet_jsonl(sources, cascade.tolist(), t.tolist(), m.tolist(), roots) + eos


_RETWEET = (b',"m":', b',"tweet_id":', b',"msg":"","info":""}}\n')


def tweet_jsonl(sources: list[str], cs: list[int], ts: list[float], ms: list[float], roots: dict[int, bytes]) -> bytes:
    """The JSONL lines (:func:`streams.memory.lines`) of a batch's tweets, made by the batch: every
    number of a column formatted by one msgspec call, the lines joined in one. ``roots``: the encoded
    value of each original post, by row. Equal, byte for byte, to the lines of its records (tested)."""
    n = len(cs)
    t = encode(ts)[1:-1].split(b",") if n else []
    m = encode(ms)[1:-1].split(b",") if n else []
    ids = encode([c + 1 for c in cs])[1:-1].split(b",") if n else []
    heads = {src: b'{"key":' + encode(src) + b',"value":{"type":"retweet","t":' for src in set(sources)}
    head = [heads[src] for src in sources]
    a, b, z = ([piece] * n for piece in _RETWEET)
    for k, value in roots.items():  # the whole line in its head, the rest of the row empty
        head[k] = b'{"key":' + encode(sources[k]) + b',"value":' + value + b"}\n"
        t[k] = a[k] = m[k] = b[k] = ids[k] = z[k] = b""
    return b"".join(chain.from_iterable(zip(head, t, a, m, b, ids, z)))


def serie_record(s: SerieArrays) -> Record:
    """The ``cascade_series`` record of a serie (key: its cid)."""
    return Record(CASCADE_SERIES.name, encode(s.serie()), s.cid.encode())


def series_jsonl(cids: list[str], T_obs: list[int], msgs: list[str], sources: list[str], starts: list[float],
                 finals: list[bool], offsets: np.ndarray, times: np.ndarray, marks: np.ndarray) -> bytes:
    """The JSONL lines of series given as columns: serie ``i`` holds the events ``offsets[i]:offsets[i + 1]``
    of ``times`` and ``marks`` (offsets of shape (k + 1,), the events' arrays concatenated). The lines of
    their records (:func:`serie_record`), made the same way."""
    o = offsets.tolist()
    return lines([serie_record(SerieArrays(cids[i], T_obs[i], times[o[i]:o[i + 1]], marks[o[i]:o[i + 1]], msgs[i],
                                           sources[i], starts[i], finals[i])) for i in range(len(cids))])
