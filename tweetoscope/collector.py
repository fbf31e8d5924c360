"""Collector stage: ``tweets`` in, ``cascade_series`` and ``cascade_properties`` (sizes) out.

Tweets are grouped into cascades per source and cut at the observation
windows on event time (:mod:`streams.window`); malformed messages and events
that cannot be placed go to ``tweets.dlq`` with the reason.

When a cascade ends, besides its sizes, the collector sends the whole cascade as a
*final* serie (``"final": true``, ``T_obs`` = its last event + ``terminated``, rounded
up) when ``settings.empirical_prior`` is on: the estimator learns the prior on
``(p, beta)`` from these complete cascades (:func:`tweetoscope.estimator.empirical_prior`).
"""

from __future__ import annotations

import math
from functools import partial

from streamz import Stream

from streams.records import Record
from streams.window import CascadeEnded, Events, Rejected, WindowClosed

from .batch_lines import serie_record
from .batches import DecodedTweets, SeriesBatch
from .config import Settings
from .schemas import CASCADE_PROPERTIES, TWEETS, Eos, SchemaError, SerieArrays, Size, Tweet, dlq_record, encode

__all__ = ["decode_tweets", "encode_outputs", "final_T_obs", "collector"]


def decode_tweets(batch: list[Record]) -> tuple[Events, list[Record]]:
    """Validated events of a ``tweets`` batch (with where each was read), and the dead letters of the invalid ones."""
    if type(batch) is DecodedTweets:
        return batch.events, []
    decode = TWEETS.decode
    rows, eos, eos_partition, dead = [], [], [], []
    names: dict[bytes, str] = {}  # source keys repeat: each decoded once per batch
    for r in batch:
        k = r.key
        if k is None:
            dead.append(dlq_record(r, "missing key: the source id"))
            continue
        try:
            d = decode(r.value)
        except SchemaError as exc:
            dead.append(dlq_record(r, str(exc)))
            continue
        src = names.get(k)
        if src is None:
            src = names[k] = k.decode("utf-8", "replace")
        kind = type(d)
        if kind is Eos:
            eos.append(src)
            eos_partition.append(r.partition)
            continue
        rows.append((src, str(d.tweet_id), d.t, d.m, kind is Tweet, d.msg, r, r.partition, r.offset))
    if not rows:
        return Events([], [], [], [], [], [], [], eos, [], [], eos_partition), dead
    source, key, t, m, root, info, origin, partition, offset = map(list, zip(*rows))
    return Events(source, key, t, m, root, info, origin, eos, partition, offset, eos_partition), dead


def final_T_obs(t_end: float, terminated: float) -> int:
    """``T_obs`` of a final serie: the cascade's last event (s after its start) plus ``terminated``, rounded up."""
    return max(math.ceil(t_end + terminated), 1)


def encode_outputs(items: list, terminated: float | None = None,
                   min_size: int = 2) -> tuple[SeriesBatch, list[Record]]:
    """The windower's outputs: its series (one per emitted window), as a :class:`SeriesBatch`, and the
    records of the rest: sizes (one per emitted window) and dead letters.

    With ``terminated`` (s), every ended cascade of at least ``min_size`` events is also sent
    whole as a final serie. A serie whose message might not decode (:meth:`SerieArrays.decodes`) is
    encoded now, among the rest, and its consumer refuses it as it would one read from Kafka.
    """
    series, out = [], []

    def serie(s: SerieArrays) -> None:
        if s.decodes():
            series.append(s)
        else:
            out.append(serie_record(s))

    for it in items:
        if type(it) is WindowClosed:
            serie(SerieArrays(it.key, it.T_obs, it.times, it.marks, it.info, it.source, it.start))
        elif type(it) is CascadeEnded:
            for T in it.windows:
                value = Size(cid=it.key, n_tot=it.size, t_end=it.t_end, T_obs=T, source=it.source)
                out.append(Record(CASCADE_PROPERTIES.name, encode(value), str(T).encode()))
            if terminated is not None and it.size >= min_size:
                serie(SerieArrays(it.key, final_T_obs(it.t_end, terminated), it.times, it.marks, it.info, it.source,
                                  it.start, True))
        elif type(it) is Rejected:
            origin = it.origin
            if type(origin) is tuple:  # (record, k) of a DecodedTweets batch: its record, made now
                origin = origin[0](origin[1])
            elif not isinstance(origin, Record):  # held across a restart: only where it was read is known
                origin = Record(TWEETS.name, b"", partition=origin.partition, offset=origin.offset)
            out.append(dlq_record(origin, it.reason, "rejected-event"))
    return SeriesBatch(series), out


def collector(tweets: Stream, settings: Settings) -> Stream:
    """The collector's graph on a stream of ``tweets`` batches; returns the stream of output record batches."""
    decoded = tweets.map(decode_tweets, stream_name="collector.decode")
    windows = decoded.pluck(0).cascade_windows(
        settings.windows, settings.terminated, min_size=settings.min_cascade_size,
        max_events=settings.max_cascade_events, max_clock_jump=settings.max_clock_jump,
        stream_name="collector.windows",
    )
    final = settings.terminated if settings.empirical_prior and settings.kernel == "exp" else None
    out = windows.map(partial(encode_outputs, terminated=final, min_size=max(settings.min_cascade_size, 2)))
    dead = decoded.pluck(1).filter(bool)
    # The series' batch goes first: a cascade's series encoded among the rest (over the size bound)
    # are its later ones, so that each key's series keep their order.
    return out.pluck(0).filter(len).union(out.pluck(1), dead)
