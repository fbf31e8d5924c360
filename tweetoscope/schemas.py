"""Every topic and message of Tweetoscope, declared once.

Topic names and message values are the course's (strict JSON, never Python
reprs), so existing tools interoperate; fields we add are optional, and
unknown fields are ignored. Messages are msgspec structs: decoding validates
types and ranges in one pass and a bad message raises :class:`SchemaError`
with the reason, which the stage writes to ``<topic>.dlq``.

Times are in seconds; ``T_obs`` is an observation window in seconds.

``tweets`` (key = source id)
    ``{"type": "tweet"|"retweet", "msg", "t", "m", "tweet_id", "info"}``; ours:
    ``{"type": "eos", "t"}`` ends a finite replay for that source.
``cascade_series`` (key = cid)
    ``{"type": "serie", "cid", "msg", "T_obs", "tweets": [[t, m], ...]}``, ``t`` relative to
    the original post; extra ``source``, ``start``.
``cascade_properties`` (key = str(T_obs))
    ``{"type": "size", "cid", "n_tot", "t_end"}`` and
    ``{"type": "parameters", "cid", "msg", "n_obs", "n_supp", "params": [p, beta, n_star, G1]}``
    (``[kappa, theta, n_star, G1]`` with the power-law kernel: :func:`estimators.forecast.message_params`);
    extra ``T_obs``, ``source``, ``converged``, ``series`` = ``[n_recent, t_idle, mark_sum]``
    (:func:`estimators.forecast.series_features`, for the correction).
``alerts`` (key = str(T_obs))
    ``{"type": "alert", "cid", "msg", "T_obs", "n_tot"}`` (``n_tot`` is the forecast); extra
    ``n_obs``, ``model_version``.
``stats`` (key = str(T_obs))
    ``{"type": "stat", "cid", "T_obs", "ARE"}``; extra ``n_hat``, ``n_tot``, ``model_version``.
``samples`` (key = str(T_obs))
    ``{"type": "sample", "cid", "X": [beta, n_star, G1], "W": omega}`` (``theta`` for ``beta`` with the power-law kernel); extra ``T_obs``,
    ``n_obs``, ``n_tot``, ``series`` (the learner needs them).
``models`` (key = str(T_obs))
    a skops file, header ``version`` (see :mod:`tweetoscope.models`).
``marks`` (key = ``law``; ours)
    ``{"type": "marks", "cascades", "body", "tail", "alpha", "mu"}``: the marks' law the estimator
    learnt from ``cascades`` complete cascades (``settings.marks == "learnt"``,
    :class:`estimators.MarkLaw`), for the learner's forecast.
``<topic>.dlq``
    ``{"reason", "topic", "partition", "offset", "key", "value"}``; extra ``kind``
    (:data:`DEAD_LETTER_KINDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple, Union

import msgspec
from msgspec import Meta

from streams.records import Record, dlq_topic

__all__ = [
    "SchemaError", "DEAD_LETTER_KINDS", "Topic", "Tweet", "Retweet", "Eos", "Serie", "SerieArrays", "Size", "Parameters", "Alert", "Stat", "Sample",
    "Marks", "DeadLetter", "TWEETS", "CASCADE_SERIES", "CASCADE_PROPERTIES", "ALERTS", "STATS", "SAMPLES", "MODELS",
    "MARKS",
    "TOPICS", "encode", "dlq_record", "MAX_MESSAGE_BYTES", "MAX_VALUE", "MAX_WINDOW",
]

#: Largest magnitude of a number in a message: beyond it a value is refused (a time, count or
#: parameter that large is an error, and keeps the arithmetic downstream finite).
MAX_VALUE = 1e15

Seconds = Annotated[float, Meta(ge=0, le=MAX_VALUE)]
Count = Annotated[float, Meta(ge=0, le=MAX_VALUE)]
#: Longest observation window a message may carry (s).
MAX_WINDOW = 10**9

Window = Annotated[int, Meta(ge=1, le=MAX_WINDOW)]
Id = Annotated[int, Meta(ge=0)]
Positive = Annotated[float, Meta(gt=0, le=MAX_VALUE)]
PositiveInt = Annotated[int, Meta(ge=1, le=int(MAX_VALUE))]
Real = Annotated[float, Meta(ge=-MAX_VALUE, le=MAX_VALUE)]
#: ``[n_recent, t_idle, mark_sum]`` of a window's series (:func:`estimators.forecast.series_features`).
SeriesStats = tuple[Count, Count, Count]

#: Largest message value a stage decodes (bytes): Kafka's default largest message. Bigger ones
#: go to the dead-letter topic unread.
MAX_MESSAGE_BYTES = 2**20
#: Most bytes of a bad record's value kept in its dead letter.
MAX_DEAD_VALUE_BYTES = 64 * 2**10


class SchemaError(ValueError):
    """A message does not follow its topic's schema; the message says why."""


class Tweet(msgspec.Struct, tag_field="type", tag="tweet"):
    msg: str
    t: Seconds
    m: Count
    tweet_id: Id
    info: str = ""


class Retweet(msgspec.Struct, tag_field="type", tag="retweet"):
    t: Seconds
    m: Count
    tweet_id: Id
    msg: str = ""
    info: str = ""


class Eos(msgspec.Struct, tag_field="type", tag="eos"):
    t: Seconds | None = None
    info: str = ""


class Serie(msgspec.Struct, tag_field="type", tag="serie"):
    cid: str
    T_obs: Window
    tweets: Annotated[list[tuple[Seconds, Count]], Meta(min_length=1)]
    msg: str = ""
    source: str = ""
    start: float = 0.0
    final: bool = False


class SerieArrays(NamedTuple):
    """A ``cascade_series`` message with its events as arrays: ``times`` (relative to the start, s) and
    ``marks``, float64 of shape (n,) each, the pairs of :attr:`Serie.tweets`. The collector makes them in
    process (:class:`tweetoscope.batches.SeriesBatch`); the estimator in the same process fits them
    without a message encoded and decoded in between, and decodes the messages it reads from Kafka into
    them (with ``partition``, where each was read)."""

    cid: str
    T_obs: int
    times: Any
    marks: Any
    msg: str = ""
    source: str = ""
    start: float = 0.0
    final: bool = False
    partition: int = -1  # the input partition it was read from (-1: made in this process)

    def serie(self) -> Serie:
        """The message."""
        return Serie(cid=self.cid, T_obs=self.T_obs, tweets=list(zip(self.times.tolist(), self.marks.tolist())),
                     msg=self.msg, source=self.source, start=self.start, final=self.final)

    def decodes(self) -> bool:
        """Whether the message certainly passes :data:`CASCADE_SERIES`'s decoding, told without encoding
        it, for arrays made from decoded ``tweets`` (their values within the schema's bounds): a window
        in bounds, events at or after the start, and a size bound under :data:`MAX_MESSAGE_BYTES` (each
        pair of numbers at most 53 bytes, each character of a string at most 6). False may be a
        message that would pass: it is then encoded and decoded as any other."""
        n = self.times.size
        return (1 <= self.T_obs <= MAX_WINDOW and n > 0 and self.times[0] >= 0
                and 160 + 53 * n + 6 * (len(self.cid) + len(self.msg) + len(self.source)) <= MAX_MESSAGE_BYTES)


class Size(msgspec.Struct, tag_field="type", tag="size"):
    cid: str
    n_tot: PositiveInt
    t_end: Seconds
    T_obs: Window | None = None
    source: str = ""


class Parameters(msgspec.Struct, tag_field="type", tag="parameters"):
    cid: str
    n_obs: PositiveInt
    n_supp: Real | None
    params: tuple[Count, Positive, Count, Count]
    msg: str = ""
    T_obs: Window | None = None
    converged: bool = True
    series: SeriesStats | None = None


class Alert(msgspec.Struct, tag_field="type", tag="alert"):
    cid: str
    T_obs: Window
    n_tot: float
    msg: str = ""
    n_obs: int = 0
    model_version: int = 0


class Forecast(msgspec.Struct, tag_field="type", tag="forecast"):
    """Every window's forecast, alert or not (ours, not the course's): what the dashboard shows.

    ``n_tot``: forecast final size (``inf`` if supercritical, written as null); ``n_star``,
    ``G1``: the fit's branching factor and expected first generation (for the uncertainty band);
    ``alert``: whether it reached the threshold.
    """

    cid: str
    T_obs: Window
    n_tot: float | None
    n_obs: int
    n_star: float
    G1: float
    model_version: int = 0
    alert: bool = False
    msg: str = ""


class Stat(msgspec.Struct, tag_field="type", tag="stat"):
    cid: str
    T_obs: Window
    ARE: float
    n_hat: float | None = None
    n_tot: int | None = None
    model_version: int = 0


class Sample(msgspec.Struct, tag_field="type", tag="sample"):
    cid: str
    X: tuple[Positive, Count, Count]
    W: Real
    T_obs: Window | None = None
    n_obs: PositiveInt | None = None
    n_tot: PositiveInt | None = None
    series: SeriesStats | None = None


class Marks(msgspec.Struct, tag_field="type", tag="marks"):
    """The marks' law: ``body`` atoms (followers) of total mass ``1 - tail`` and a Pareto(``alpha``, ``mu``)
    tail of mass ``tail`` (:class:`estimators.MarkLaw`), learnt from ``cascades`` complete cascades."""

    cascades: Annotated[int, Meta(ge=0)]
    body: Annotated[list[Count], Meta(max_length=4096)]
    tail: Annotated[float, Meta(gt=0, le=1)]
    alpha: Annotated[float, Meta(gt=2, le=1000)]
    mu: Positive


class DeadLetter(msgspec.Struct):
    """A record that could not be used: ``reason`` (free text) and ``kind``, its class among
    :data:`DEAD_LETTER_KINDS` (the ``reason`` label of ``tweetoscope_dead_letters_total``)."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    kind: str = "invalid"


#: Classes of dead letters: ``invalid`` (undecodable or out of range), ``rejected-event`` (an event the
#: collector cannot place), ``fit`` (a series the fit refused), ``join-timeout`` (a parameters or size
#: record whose twin never came), ``forecast`` (a non-finite forecast), ``model`` (an unusable model
#: file), ``refit`` (a learner refit that failed).
DEAD_LETTER_KINDS = ("invalid", "rejected-event", "fit", "join-timeout", "forecast", "model", "refit")


#: ``encode(message) -> bytes``: strict JSON of a message struct (or of plain JSON-able data).
encode: Callable[[Any], bytes] = msgspec.json.Encoder().encode


def _decoder(kind: Any) -> Callable[[bytes], Any]:
    dec = msgspec.json.Decoder(kind)

    def decode(raw: bytes) -> Any:
        """The message of ``raw``; :class:`SchemaError` for anything a hostile record can raise."""
        if len(raw) > MAX_MESSAGE_BYTES:
            raise SchemaError(f"message of {len(raw):,} bytes exceeds the {MAX_MESSAGE_BYTES:,} bytes a stage reads")
        try:
            return dec.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SchemaError(str(exc)) from None
        except RecursionError:
            raise SchemaError("JSON nested too deeply") from None
        except Exception as exc:  # e.g. MemoryError-like failures of a hostile record
            raise SchemaError(f"cannot decode: {type(exc).__name__}: {exc}") from None

    return decode


def _by_window(value: Any) -> bytes:
    return str(value.T_obs).encode()


@dataclass(frozen=True)
class Topic:
    """A topic: its name, how a message's key is made, and its validating decoder."""

    name: str
    key: Callable[[Any], bytes | None]
    decode: Callable[[bytes], Any]

    @property
    def dlq(self) -> str:
        return dlq_topic(self.name)

    def record(self, value: Any, *, key: bytes | None = None, headers: dict[str, str] | None = None) -> Record:
        """A record of this topic holding ``value`` (JSON), keyed by :attr:`key` unless given."""
        return Record(topic=self.name, value=encode(value), key=self.key(value) if key is None else key,
                      headers=headers or {})


TWEETS = Topic("tweets", key=lambda v: None, decode=_decoder(Union[Tweet, Retweet, Eos]))
CASCADE_SERIES = Topic("cascade_series", key=lambda v: v.cid.encode(), decode=_decoder(Serie))
CASCADE_PROPERTIES = Topic("cascade_properties", key=_by_window, decode=_decoder(Union[Size, Parameters]))
ALERTS = Topic("alerts", key=_by_window, decode=_decoder(Alert))
STATS = Topic("stats", key=_by_window, decode=_decoder(Stat))
FORECASTS = Topic("forecasts", key=_by_window, decode=_decoder(Forecast))
SAMPLES = Topic("samples", key=_by_window, decode=_decoder(Sample))
MODELS = Topic("models", key=_by_window, decode=lambda raw: raw)
MARKS = Topic("marks", key=lambda v: b"law", decode=_decoder(Marks))

TOPICS: dict[str, Topic] = {t.name: t for t in (TWEETS, CASCADE_SERIES, CASCADE_PROPERTIES, ALERTS, STATS, SAMPLES,
                                                MODELS, FORECASTS, MARKS)}


def dlq_record(record: Record, reason: str, kind: str = "invalid") -> Record:
    """The dead-letter record of a bad ``record``: where it came from, its raw value, the reason and its
    ``kind`` (one of :data:`DEAD_LETTER_KINDS`, also in the record's ``kind`` header).

    Values longer than :data:`MAX_DEAD_VALUE_BYTES` are cut (the reason says so); bytes that
    are not UTF-8 are replaced.
    """
    raw = record.value
    if len(raw) > MAX_DEAD_VALUE_BYTES:
        reason = f"{reason} (value of {len(raw):,} bytes cut to its first {MAX_DEAD_VALUE_BYTES:,})"
        raw = raw[:MAX_DEAD_VALUE_BYTES]
    key = record.key[:MAX_DEAD_VALUE_BYTES] if record.key is not None else None
    value = DeadLetter(
        reason=reason, topic=record.topic, partition=record.partition, offset=record.offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
        value=raw.decode("utf-8", "replace"), kind=kind,
    )
    return Record(topic=dlq_topic(record.topic), value=encode(value), key=record.key, headers={"kind": kind})
