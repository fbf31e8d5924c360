"""Hostile input, fuzzed with hypothesis: every decoder and every stage input.

Random and non-UTF-8 bytes, tombstones (empty values), huge strings, deep nesting, NaN /
Infinity / 1e400, negative and far-future times, unknown types, wrong field types, on every
topic, ``models`` included. A decoder either returns a valid message or raises
``SchemaError``; a stage dead-letters every bad record with its reason and its original
partition and offset, goes on, and processes the valid records around it as if the bad
ones were not there. (The same on the real broker with the stages as processes: test_faults.)
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import orjson
import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamz import Stream

from streams.records import Record
from tweetoscope.collector import collector
from tweetoscope.config import Settings
from tweetoscope.estimator import decode_series, fit_chunk, pack_series
from tweetoscope.learner import learn
from tweetoscope.models import check_model, load_model
from tweetoscope.predictor import predict_join
from tweetoscope.schemas import TOPICS, SchemaError, Tweet, encode

FIELDS = ["type", "msg", "t", "m", "tweet_id", "info", "cid", "T_obs", "tweets", "n_tot", "t_end", "n_obs",
          "n_supp", "params", "X", "W", "final", "source", "start"]
TYPES = ["tweet", "retweet", "eos", "serie", "size", "parameters", "alert", "stat", "sample", "forecast", "?"]

numbers = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1e12, 1e15, 1e16, 1e160, 1e308, -1e308]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30), st.sampled_from(TYPES))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=6)),
    max_leaves=20)


def _literal(v) -> bytes:
    """JSON text of ``v``, with the non-standard literals a hostile producer may write."""
    if isinstance(v, float) and not math.isfinite(v):
        return b"NaN" if v != v else (b"Infinity" if v > 0 else b"-Infinity")
    if isinstance(v, dict):
        return b"{" + b",".join(orjson.dumps(str(k)) + b":" + _literal(x) for k, x in v.items()) + b"}"
    if isinstance(v, list):
        return b"[" + b",".join(_literal(x) for x in v) + b"]"
    if isinstance(v, int) and abs(v) > 2**63:
        return str(v).encode()
    return orjson.dumps(v)


hostile_values = st.one_of(
    st.binary(max_size=200),  # random and non-UTF-8 bytes, b"" stands for a tombstone
    json_values.map(_literal),
    st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=8).map(_literal),
    st.integers(500, 5000).map(lambda n: b'{"type": "tweet", "x": ' + b"[" * n + b"]" * n + b"}"),  # deep nesting
    st.integers(2**20, 2**20 + 10).map(lambda n: b'{"type": "tweet", "msg": "' + b"x" * n + b'"}'),  # huge
    st.sampled_from([b'{"type": "tweet", "msg": "a", "t": 1e400, "m": 1, "tweet_id": 1}',
                     b'{"type": "retweet", "t": -5, "m": 1, "tweet_id": 1}',
                     b'{"type": "tweet", "msg": 3, "t": 1, "m": 1, "tweet_id": "x"}',
                     b'{"type": "serie", "cid": "1", "T_obs": 600, "tweets": [[0, 1e160], [1, 1e200]]}',
                     b'{"type": "parameters", "cid": "1", "n_obs": 5, "n_supp": 1, "params": [0.1, 0.001, 0.5, 1e308]}',
                     b'{"type": "sample", "cid": "1", "X": [0.001, 0.5, 3], "W": 1, "n_obs": 3, "n_tot": 0}',
                     b'{"type": "size", "cid": "1", "n_tot": 0, "t_end": 1}', b"null", b"[]", b"{}"]),
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(raw=hostile_values)
def test_every_decoder_returns_a_message_or_a_schema_error(raw):
    for name, topic in TOPICS.items():
        if name == "models":
            continue
        try:
            topic.decode(raw)
        except SchemaError:
            pass


@FUZZ
@given(raw=hostile_values)
def test_a_models_record_is_a_usable_model_or_a_schema_error(raw):
    with pytest.raises(SchemaError):
        check_model(raw, {}, None)


def test_model_files_are_loaded_one_at_a_time_across_threads(monkeypatch):
    """The predictor checks each models batch in a thread of its own: two loads at once imported
    scikit-learn from two threads, which can deadlock (a chaos run's predictor stopped with
    ``_DeadlockError``). ``load_model`` is replaced by a stand-in (a mock: no real import shows the
    race on demand) that waits, with a bound, for a second loader to be inside with it."""
    import threading

    import tweetoscope.models as models

    inside = threading.Barrier(2, timeout=2.0)
    overlapped: list[bool] = []

    def stand_in(data: bytes) -> object:
        try:
            inside.wait()
            overlapped.append(True)
        except threading.BrokenBarrierError:
            overlapped.append(False)
        raise SchemaError("stand-in")

    monkeypatch.setattr(models, "load_model", stand_in)

    def check() -> None:
        with pytest.raises(SchemaError, match="stand-in"):
            check_model(b"file", {}, None)

    threads = [threading.Thread(target=check) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlapped) == 2 and not any(overlapped), overlapped


def test_the_background_import_of_the_model_loaders_takes_the_loading_lock():
    """A Kafka predictor imports skops (and scikit-learn) in a background thread while a model's check
    may import them in another: both under one lock, else the two imports race (a chaos run's
    predictor stopped with "partially initialized module"). While the lock is held, the background
    import waits; released, it ends."""
    import threading

    import tweetoscope.models as models

    with models._LOADING:
        t = threading.Thread(target=models.import_model_loaders)
        t.start()
        t.join(timeout=0.5)  # the modules are imported already: only the lock can hold it
        assert t.is_alive()
    t.join(timeout=30)
    assert not t.is_alive()


class Custom:
    """A type no model file may hold."""

    def __init__(self):
        self.x = 1


def test_a_skops_file_with_an_untrusted_type_is_refused():
    data = sio.dumps({"model": Custom()})
    with pytest.raises(SchemaError, match="untrusted types.*Custom"):
        load_model(data)


def hostile_records(topic: str, values: list[bytes], offset0: int = 1000) -> list[Record]:
    keys = [None, b"\xff\xfe", b"600", b"s0", b"x" * 300]
    return [Record(topic, v, keys[i % len(keys)], partition=0, offset=offset0 + i) for i, v in enumerate(values)]


def tweets(offset0: int = 0) -> list[Record]:
    """A small valid cascade of source s0."""
    rows = [Tweet(msg="hello", t=0.0, m=100.0, tweet_id=1)] + [
        {"type": "retweet", "t": float(t), "m": 10.0, "tweet_id": 1} for t in (5, 30, 90, 400, 700, 1300)]
    return [Record("tweets", encode(r), b"s0", partition=0, offset=offset0 + i) for i, r in enumerate(rows)]


S = Settings(windows=(600, 1200), terminated=3600.0, max_clock_jump=86_400.0)


def run_collector(batches: list[list[Record]]) -> list[Record]:
    src = Stream()
    out = collector(src, S).sink_to_list()
    for b in batches:
        src.emit(b)
    src.emit([Record("tweets", b'{"type": "eos"}', b"s0", partition=0, offset=99_999)])
    return [r for batch in out for r in batch]


@FUZZ
@given(values=st.lists(hostile_values, min_size=1, max_size=6))
def test_the_collector_dead_letters_hostile_tweets_and_goes_on(values):
    good = tweets()
    bad = hostile_records("tweets", [v for v in values if not _valid_tweet(v)])
    want = run_collector([good[:3], good[3:]])
    got = run_collector([good[:3] + bad, good[3:]])
    dead = [orjson.loads(r.value) for r in got if r.topic == "tweets.dlq"]
    assert sorted(d["offset"] for d in dead) == [r.offset for r in bad]
    assert all(d["reason"] and d["partition"] == 0 for d in dead)
    assert [r for r in got if r.topic != "tweets.dlq"] == [r for r in want if r.topic != "tweets.dlq"]


def _valid_tweet(raw: bytes) -> bool:
    try:
        TOPICS["tweets"].decode(raw)
        return True
    except SchemaError:
        return False


def test_a_far_future_tweet_neither_ends_the_open_cascades_nor_is_lost():
    good = tweets()
    far = Record("tweets", encode(Tweet(msg="x", t=1e12, m=1.0, tweet_id=77)), b"s0", partition=0, offset=500)
    want = run_collector([good[:3], good[3:]])
    got = run_collector([good[:3] + [far], good[3:]])
    (dead,) = [orjson.loads(r.value) for r in got if r.topic == "tweets.dlq"]
    assert dead["offset"] == 500 and "ahead of its source's clock" in dead["reason"]
    assert [r for r in got if r.topic != "tweets.dlq"] == want


@FUZZ
@given(values=st.lists(hostile_values, min_size=1, max_size=6))
def test_the_estimator_decoder_dead_letters_what_it_cannot_fit(values):
    records = hostile_records("cascade_series", values)
    series, dead = decode_series(records)
    assert len(series) + len(dead) == len(records)
    assert {orjson.loads(d.value)["offset"] for d in dead} <= {r.offset for r in records}
    if series:  # schema-valid series: the fit never raises, whatever they hold
        fits = fit_chunk(pack_series(series), S.fit_kwargs())
        assert fits.params.shape == (len(series), 4)


@FUZZ
@given(values=st.lists(hostile_values, min_size=1, max_size=6))
def test_the_predictor_dead_letters_hostile_properties(values):
    props, models = Stream(), Stream()
    node = predict_join(props, models, S)
    out = node.sink_to_list()
    bad = [v for v in values if not _valid(TOPICS["cascade_properties"], v)]
    props.emit(hostile_records("cascade_properties", bad))
    dead = [orjson.loads(r.value) for batch in out for r in batch if r.topic == "cascade_properties.dlq"]
    assert sorted(d["offset"] for d in dead) == list(range(1000, 1000 + len(bad)))


def _valid(topic, raw: bytes) -> bool:
    try:
        topic.decode(raw)
        return True
    except SchemaError:
        return False


@FUZZ
@given(values=st.lists(hostile_values, min_size=1, max_size=6))
def test_the_learner_dead_letters_hostile_samples(values):
    src = Stream()
    node = learn(src, S.replace(learner_every=10**6), client=None)
    out = node.sink_to_list()
    bad = [v for v in values if not _valid(TOPICS["samples"], v)]
    src.emit(hostile_records("samples", bad))
    dead = [orjson.loads(r.value) for batch in out for r in batch if r.topic == "samples.dlq"]
    assert sorted(d["offset"] for d in dead) == list(range(1000, 1000 + len(bad)))


@settings(max_examples=25, deadline=None)
@given(values=st.lists(hostile_values, min_size=1, max_size=4))
def test_the_predictor_dead_letters_hostile_model_files(values):
    props, models = Stream(), Stream()
    node = predict_join(props, models, S)
    out = node.sink_to_list()
    records = hostile_records("models", values)
    for r in records:
        r.headers = {"version": "3"}

    async def go():
        await asyncio.gather(*node.update(records, who=models, metadata=[]))

    asyncio.run(go())
    dead = [orjson.loads(r.value) for batch in out for r in batch]
    assert node.models == {} and sorted(d["offset"] for d in dead) == [r.offset for r in records]


def test_dead_letters_of_huge_values_are_cut():
    (r,) = hostile_records("tweets", [b"x" * (3 * 2**20)])
    from tweetoscope.schemas import dlq_record

    d = orjson.loads(dlq_record(r, "too big").value)
    assert len(d["value"]) == 64 * 2**10 and "cut to its first" in d["reason"]
    assert np.isfinite(len(d["key"] or ""))
