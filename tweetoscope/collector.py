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
from collections.abc import Callable, Sequence
from functools import partial

from streamz import Stream

from streams.records import Record
from streams.window import CascadeEnded, Events, Rejected, WindowClosed

from .config import Settings
from .schemas import (CASCADE_PROPERTIES, CASCADE_SERIES, MAX_MESSAGE_BYTES, MAX_WINDOW, TWEETS, DecodedSerie, Eos,
                      SchemaError, Serie, Size, Tweet, dlq_record, encode)

__all__ = ["DecodedTweets", "decode_tweets", "encode_outputs", "final_T_obs", "collector"]


class DecodedTweets(Sequence[Record]):
    """A ``tweets`` record batch made in the same process by the generator
    (:func:`tweetoscope.generator.tweet_records`), within the schema's bounds, that carries what the
    process needs without making a record per tweet: the :class:`Events` its records decode to
    (:func:`decode_tweets` takes them instead of decoding every record again), a callable
    that makes its lines of JSONL (``jsonl``, for :class:`streams.memory.jsonl_sink`: it calls it in
    its writer's process) and each record on demand
    (:meth:`record`: the origin of an event that is dead-lettered). Iterating it, or indexing it,
    makes its records (a Kafka producer does). A batch read from Kafka, or any other list, is decoded.

    ``events.origin`` holds ``(record, k)`` for its ``k``-th tweet: :func:`encode_outputs` makes the
    record, ``record(k)``, of an event it dead-letters."""

    topic = TWEETS.name

    def __init__(self, events: Events, size: int, records: Callable[[], list[Record]],
                 record: Callable[[int], Record], jsonl: Callable[[], bytes]) -> None:
        self.events = events
        self._size = size
        self._make = records
        self._records: list[Record] | None = None
        self.record = record
        self.jsonl = jsonl

    @property
    def records(self) -> list[Record]:
        """The batch's records (made on first use): its tweets, then an ``eos`` per source that ended."""
        if self._records is None:
            self._records = self._make()
        return self._records

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i):
        return self.records[i]

    def __iter__(self):
        return iter(self.records)


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


def encode_outputs(items: list, terminated: float | None = None, min_size: int = 2) -> list[Record]:
    """Records of the windower's outputs: series, sizes (one per emitted window) and dead letters.

    With ``terminated`` (s), every ended cascade of at least ``min_size`` events is also sent
    whole as a final serie.
    """
    out = []
    for it in items:
        if type(it) is WindowClosed:
            out.append(_series_record(it, it.T_obs))
        elif type(it) is CascadeEnded:
            for T in it.windows:
                value = Size(cid=it.key, n_tot=it.size, t_end=it.t_end, T_obs=T, source=it.source)
                out.append(Record(CASCADE_PROPERTIES.name, encode(value), str(T).encode()))
            if terminated is not None and it.size >= min_size:
                out.append(_series_record(it, final_T_obs(it.t_end, terminated), final=True))
        elif type(it) is Rejected:
            origin = it.origin
            if type(origin) is tuple:  # (record, k) of a DecodedTweets batch: its record, made now
                origin = origin[0](origin[1])
            elif not isinstance(origin, Record):  # held across a restart: only where it was read is known
                origin = Record(TWEETS.name, b"", partition=origin.partition, offset=origin.offset)
            out.append(dlq_record(origin, it.reason, "rejected-event"))
    return out


def _series_record(it: WindowClosed | CascadeEnded, T_obs: int, final: bool = False) -> Record:
    """The ``cascade_series`` record of a window (or of a whole cascade, ``final``), with its
    :class:`DecodedSerie` as the record's ``message`` when the value is one that the estimator's
    decoding accepts: the estimator in this process then takes the arrays instead of decoding the JSON.
    (Marks and absolute times passed the ``tweets`` schema's bounds when they came in; what is left to
    check is the message's size, the window, and events at or after the start.)"""
    value = Serie(cid=it.key, msg=it.info, T_obs=T_obs, tweets=list(zip(it.times.tolist(), it.marks.tolist())),
                  source=it.source, start=it.start, final=final)
    raw = encode(value)
    record = Record(CASCADE_SERIES.name, raw, it.key.encode())
    if len(raw) <= MAX_MESSAGE_BYTES and 1 <= T_obs <= MAX_WINDOW and it.times.size and it.times[0] >= 0:
        record.message = DecodedSerie(value, it.times, it.marks)
    return record


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
    return out.union(dead)
