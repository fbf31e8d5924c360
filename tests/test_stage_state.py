"""Stage state as checkpoints (snapshot, restore, replay) and records that cannot be used (poison pills).

The predictor's join, the learner and the estimator's prior state, driven by hand (``emit``)
with records that carry Kafka offsets; the learner on a real distributed cluster.
"""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
import pytest
import skops.io as sio
from streamz import Stream

from estimators.correction import fit_forest
from streams.records import Record
from tweetoscope.config import Settings
from tweetoscope.estimator import PriorLearner, fit_chunk, pack_series
from tweetoscope.learner import learn
from tweetoscope.models import dump_model, model_record, model_signature
from tweetoscope.predictor import predict_join
from tweetoscope.schemas import CASCADE_PROPERTIES, SAMPLES, TOPICS, Parameters, Sample, SerieArrays, Size, encode

SETTINGS = Settings(windows=(600,), alert_threshold=0.0, join_capacity=1000)


def prop(value, offset, partition=0):
    return Record(CASCADE_PROPERTIES.name, encode(value), b"600", partition=partition, offset=offset)


def params(cid, n_obs=10, G1=5.0):
    return Parameters(cid=cid, n_obs=n_obs, n_supp=3.0, params=(0.01, 1e-3, 0.5, G1), T_obs=600)


def size(cid, n_tot=30):
    return Size(cid=cid, n_tot=n_tot, t_end=1000.0, T_obs=600)


def join():
    props, models = Stream(), Stream()
    node = predict_join(props, models, SETTINGS)
    return props, models, node, node.sink_to_list()


def outputs(out):
    return sorted((r.topic, r.value) for batch in out for r in batch)


def test_join_restored_from_a_snapshot_and_replayed_gives_each_output_once():
    records = [prop(params(f"c{i}"), 2 * i) for i in range(6)] + [prop(size(f"c{i}"), 2 * i + 1) for i in range(6)]
    props, _, ref, ref_out = join()
    props.emit(records)

    props, _, first, out = join()
    props.emit(records[:8])  # six parameters, two sizes: two joins done, four pending
    changes = first.snapshot()
    assert len(first.state) == 4 and len(first.done) == 2
    props2, _, second, out2 = join()
    second.restore(0, [(k, v) for _, k, v in changes])
    assert len(second.state) == 4 and len(second.done) == 2
    props2.emit(records[3:])  # re-read from an older commit
    assert outputs(out + out2) == outputs(ref_out)  # nothing twice, nothing lost
    assert second.n_duplicates == 5


def test_a_duplicate_of_a_finished_join_is_ignored_not_left_waiting():
    props, _, node, out = join()
    props.emit([prop(params("a"), 0), prop(size("a"), 1)])
    props.emit([prop(params("a"), 7)])  # the estimator emitted it again after its own restart
    assert node.state == {} and node.n_duplicates == 1


def test_an_overflowing_forecast_goes_to_the_dlq_and_the_join_goes_on():
    props, _, node, out = join()
    huge = Parameters(cid="x", n_obs=10, n_supp=0.0, params=(0.01, 1e-3, 1 - 1e-12, 1e15), T_obs=600)
    props.emit([prop(huge, 0), prop(params("ok"), 1)])
    dead = [r for batch in out for r in batch if r.topic.endswith(".dlq")]
    assert len(dead) == 0  # 1e15 / 1e-12 is large but finite
    value = encode(params("y")).replace(b"5.0]", b"1e308]")
    props.emit([Record(CASCADE_PROPERTIES.name, value, b"600", partition=0, offset=2)])
    dead = [r for batch in out for r in batch if r.topic.endswith(".dlq")]
    assert len(dead) == 1 and b"Expected `float` <= 1000000000000000.0" in dead[0].value


@pytest.mark.parametrize("bad", [b"not a skops file", "dict", "signature"])
def test_unusable_models_are_refused_and_the_current_model_stays(bad, tmp_path):
    props, models, node, out = join()
    key = "k3y"
    node.model_key = key.encode()
    if bad == "dict":
        data = sio.dumps({"a": 1})  # only types skops trusts, but not a model
        record = model_record(600, 5, data)
        record.headers["signature"] = model_signature(key.encode(), data)
    elif bad == "signature":
        data = small_model()
        record = model_record(600, 5, data)  # unsigned
    else:
        record = Record("models", bad, b"600", headers={"version": "5"})

    async def go():
        await asyncio.gather(*node.update([record], who=models, metadata=[]))

    asyncio.run(go())
    assert node.models == {}
    (dead,) = [r for batch in out for r in batch]
    assert dead.topic == "models.dlq" and b"unusable model" in dead.value


def small_model() -> bytes:
    return dump_model(in_process_model())


def test_a_signed_model_is_swapped_in():
    props, models, node, out = join()
    node.model_key = b"k3y"
    data = small_model()
    record = model_record(600, 5, data)
    record.headers["signature"] = model_signature(b"k3y", data)

    async def go():
        await asyncio.gather(*node.update([record], who=models, metadata=[]))

    asyncio.run(go())
    assert node.models[600][0] == 5 and out == []


def in_process_model():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(1e-4, 1e-2, 40), rng.uniform(0.1, 0.9, 40), rng.uniform(1, 50, 40),
                         rng.integers(5, 50, 40), rng.integers(0, 5, 40), rng.uniform(0, 600, 40),
                         rng.uniform(10, 1e4, 40)])
    return fit_forest(X, X[:, 3] * 2, n_estimators=5, random_state=0)


@pytest.mark.parametrize("usable", [True, False])
def test_a_model_made_in_process_is_taken_as_it_is_after_its_trial_prediction(usable):
    """The learner in the same process attaches the model object to its record (``message``): the
    predictor takes that object, without loading the file (here not a skops file at all), unless its
    trial prediction fails."""
    props, models, node, out = join()
    made = in_process_model() if usable else {"a": 1}
    record = model_record(600, 5, b"not a skops file", made)

    async def go():
        await asyncio.gather(*node.update([record], who=models, metadata=[]))

    asyncio.run(go())
    if usable:
        assert node.models[600] == (5, made) and node.models[600][1] is made and out == []
    else:
        assert node.models == {}
        (dead,) = [r for batch in out for r in batch]
        assert dead.topic == "models.dlq" and b"not a usable correction model" in dead.value


def test_fit_chunk_dead_letters_any_exception_of_a_fit():
    times = np.array([0.0, 10.0, 20.0, 30.0])
    tasks = [SerieArrays("ok", 600, times, np.full(4, 50.0), source="s"),
             SerieArrays("huge", 600, times, np.array([1e160, 1e180, 1e200, 1e190]), source="s"),
             SerieArrays("nan", 600, times, np.array([1.0, np.nan, 1.0, 1.0]), source="s")]
    with np.errstate(all="raise"):  # a FloatingPointError inside the fit, not a ValueError
        fits = fit_chunk(pack_series(tasks), Settings().fit_kwargs())
    assert 0 not in fits.errors and {1, 2} <= set(fits.errors) | {1}
    assert all(isinstance(v, str) and v for v in fits.errors.values())


def test_a_series_that_cannot_be_fitted_is_dead_lettered_whole_where_it_was_read():
    """``dead_series``: the dead letter holds the serie's message as it was (its start and window
    included) and the partition it was read from, with the reason."""
    from tweetoscope.estimator import dead_series
    from tweetoscope.schemas import CASCADE_SERIES, DeadLetter

    s = SerieArrays("c7", 600, np.array([0.0, 4.5]), np.array([10.0, 3.0]), "text", "s1", 1234.5, False, 3)
    r = dead_series(s, "fit failed: why")
    letter = msgspec.json.decode(r.value, type=DeadLetter)
    assert (r.topic, r.key, letter.partition, letter.reason, letter.kind) == (
        "cascade_series.dlq", b"c7", 3, "fit failed: why", "fit")
    assert CASCADE_SERIES.decode(letter.value.encode()) == s.serie()


def test_prior_state_is_restored_per_partition():
    s = Settings(prior_min_cascades=3, learner_every=1, marks="pareto")  # the prior alone (the law: below)
    a = PriorLearner(s)
    rng = np.random.default_rng(1)
    from tweetoscope.estimator import PackedFits

    n = 16  # fit_prior needs 10 inside the bounds
    chunk = [SerieArrays(f"c{i}", 9000, np.sort(rng.uniform(0, 100, 20)), np.full(20, 10.0), source="s", final=True,
                         partition=i % 2)
             for i in range(n)]
    fits = PackedFits(np.column_stack([rng.uniform(0.005, 0.02, n), rng.uniform(1e-4, 1e-3, n), np.full(n, 0.5),
                                       np.ones(n)]), np.full(n, 20), np.zeros(n), np.ones(n, bool), np.zeros((n, 3)), {})
    assert a.encode((chunk, fits)) == []  # final series produce no record
    a.encode((chunk[:2], PackedFits(fits.params[:2], fits.n_obs[:2], fits.n_supp[:2], fits.converged[:2],
                                    fits.series[:2], {})))
    assert a.n_fits == n  # replayed finals replace their twins
    changes = a.snapshot()
    assert sorted(p for p, _, _ in changes) == [0, 1] and a.snapshot() == []
    b = PriorLearner(s)
    for p in (0, 1):
        b.restore(p, [(k, v) for q, k, v in changes if q == p])
    assert b.n_fits == n and b.updates == 0  # refitted once, when the next chunk is packed
    assert b.pack(chunk[:1]).prior == a.prior != s.prior and b.prior == a.prior and b.updates == 1
    b.drop([1])
    assert b.n_fits == n // 2


def test_the_marks_law_is_learnt_as_soon_as_enough_marks_are_in():
    """A first refit with too few marks keeps the settings' law; the refit after the sample first holds
    MIN_MARKS learns it, however far the next learner_every boundary."""
    from estimators import MarkLaw
    from tweetoscope.estimator import PackedFits
    from tweetoscope.models import MIN_MARKS
    from tweetoscope.schemas import MARKS

    s = Settings(prior_min_cascades=3, learner_every=10**9, marks="learnt")
    a = PriorLearner(s)
    rng = np.random.default_rng(3)
    n, k = 16, MIN_MARKS // 10  # 16 cascades of MIN_MARKS / 10 events: the law is learnable from the 10th
    marks = [np.exp(rng.normal(5.0, 1.5, k)) for _ in range(n)]
    chunk = [SerieArrays(f"c{i}", 9000, np.sort(rng.uniform(0, 100, k)), marks[i], source="s", final=True, partition=0)
             for i in range(n)]
    fits = PackedFits(np.column_stack([rng.uniform(1e-4, 5e-4, n), rng.uniform(1e-4, 1e-3, n), np.full(n, 0.5),
                                       np.ones(n)]), np.full(n, k), np.zeros(n), np.ones(n, bool), np.zeros((n, 3)), {})

    def part(lo, hi):
        return chunk[lo:hi], PackedFits(fits.params[lo:hi], fits.n_obs[lo:hi], fits.n_supp[lo:hi],
                                        fits.converged[lo:hi], fits.series[lo:hi], {})

    assert a.encode(part(0, 5)) == [] and a.updates == 1 and a.mark_law == s.mark_law  # 500 marks: too few
    assert a.encode(part(5, 8)) == [] and a.updates == 1  # 800: no refit (learner_every is far)
    (rec,) = a.encode(part(8, 12))  # 1,200: learnable now, refitted at once
    assert a.updates == 2 and rec.topic == "marks" and MARKS.decode(rec.value).cascades == 12
    assert a.mark_law == MarkLaw.fit(np.concatenate(marks[:12])) != s.mark_law
    assert a.encode(part(12, 16)) == [] and a.updates == 2  # not again


def test_the_marks_law_is_learnt_online_emitted_and_restored():
    """With marks="learnt", final series' marks teach the estimator a law: it is bound to the next chunks,
    emitted once on ``marks``, checkpointed with the fits and learnt again alike after a restore;
    the learner takes it from ``marks`` (and dead-letters a bad law)."""
    from estimators import MarkLaw
    from tweetoscope.estimator import PackedFits
    from tweetoscope.schemas import MARKS

    s = Settings(prior_min_cascades=3, learner_every=1000, marks="learnt")
    a = PriorLearner(s)
    rng = np.random.default_rng(2)
    n, k = 16, 400  # 6,400 marks: enough to learn from (tweetoscope.models.MIN_MARKS)
    marks = [np.exp(rng.normal(5.0, 1.5, k)) for _ in range(n)]
    chunk = [SerieArrays(f"c{i}", 9000, np.sort(rng.uniform(0, 100, k)), marks[i], source="s", final=True,
                         partition=i % 2) for i in range(n)]
    fits = PackedFits(np.column_stack([rng.uniform(1e-4, 5e-4, n), rng.uniform(1e-4, 1e-3, n), np.full(n, 0.5),
                                       np.ones(n)]), np.full(n, k), np.zeros(n), np.ones(n, bool), np.zeros((n, 3)), {})
    assert a.pack(chunk[:1]).mark_law == s.mark_law  # nothing learnt yet: the settings' Pareto law
    (rec,) = a.encode((chunk, fits))
    law = MARKS.decode(rec.value)
    assert rec.topic == "marks" and law.cascades == n
    assert a.mark_law == MarkLaw(tuple(law.body), law.tail, law.alpha, law.mu) == MarkLaw.fit(np.concatenate(marks))
    assert a.mark_law != s.mark_law and a.pack(chunk[:1]).mark_law is a.mark_law
    assert a.encode((chunk[:1], PackedFits(fits.params[:1], fits.n_obs[:1], fits.n_supp[:1], fits.converged[:1],
                                           fits.series[:1], {}))) == []  # the same law is not emitted twice
    changes = a.snapshot()
    b = PriorLearner(s)
    for p in (0, 1):
        b.restore(p, [(key, v) for q, key, v in changes if q == p])
    assert sum(m.size for m in b.marks.values()) == n * k + k  # the replayed final's marks counted again
    assert b.pack(chunk[:1]).mark_law == MarkLaw.fit(np.concatenate([*marks, marks[0]]))

    out = []
    src, marks_in = Stream(), Stream()
    node = learn(src, s, client=None, marks=marks_in)
    node.sink(out.extend)
    marks_in.emit([rec])
    assert node.mark_law == a.mark_law and out == []
    marks_in.emit([Record("marks", b'{"type": "marks", "cascades": 3, "body": [], "tail": 1, "alpha": 1.5, "mu": 1}',
                          b"law")])
    assert node.mark_law == a.mark_law and [r.topic for r in out] == ["marks.dlq"]


def sample_records(n, offset0=0, T=600):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        n_obs = int(rng.integers(5, 50))
        value = Sample(cid=f"c{i}", X=(float(rng.uniform(1e-4, 1e-2)), float(rng.uniform(0.1, 0.9)),
                                       float(rng.uniform(1, 50))), W=1.0, T_obs=T, n_obs=n_obs,
                       n_tot=n_obs + int(rng.integers(0, 100)),
                       series=(float(rng.integers(0, 5)), float(rng.uniform(0, 600)), float(rng.uniform(10, 1e4)))
                       if i % 2 else None)  # half of them as course-format samples
        out.append(Record(SAMPLES.name, encode(value), str(T).encode(), partition=0, offset=offset0 + i))
    return out


def test_learner_versions_are_deterministic_and_survive_a_restore(scheduler):
    """Models are taken at fixed boundaries (every learner_every distinct samples): the same version
    gives the same model, after a restore and a replay too; a bad sample is dead-lettered."""
    from distributed import Client

    s = Settings(windows=(600,), learner_every=20, learner_interval=0.0, learner_trees=5)
    records = sample_records(65)
    bad = Record(SAMPLES.name, b'{"type": "sample", "cid": "z", "X": [1, 1, 1], "W": 1, "T_obs": 600, '
                               b'"n_obs": 3, "n_tot": 0}', b"600", partition=0, offset=1000)

    async def run(parts):
        """Feed ``parts`` one after the other; before each but the first, restart from a snapshot."""
        collected = []
        async with Client(scheduler, asynchronous=True) as client:
            src = Stream(asynchronous=True)
            node = None
            for part in parts:
                state = node.snapshot() if node is not None else []
                if node is not None:
                    node.destroy()
                node = learn(src, s, client)
                node.sink(collected.extend)
                node.restore(0, [(k, v) for _, k, v in state])
                src.emit(part)
                while not node.idle:
                    await asyncio.sleep(0.05)
        return collected

    ref = asyncio.run(run([records + [bad]]))
    got = asyncio.run(run([records[:30], records[10:] + [bad]]))

    def models(out):
        return {int(r.headers["version"]): r.value for r in out if r.topic == "models"}

    ref_models, got_models = models(ref), models(got)
    assert sorted(ref_models) == [20, 40, 60] == sorted(got_models)
    for v in ref_models:
        a = sio.loads(ref_models[v], trusted=sio.get_untrusted_types(data=ref_models[v]))
        b = sio.loads(got_models[v], trusted=sio.get_untrusted_types(data=got_models[v]))
        X = np.random.default_rng(v).uniform(0.1, 1, (10, 7))
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
    dead = [r for r in ref if r.topic.endswith(".dlq")]
    assert len(dead) == 1 and b"n_tot" in dead[0].value


def test_learner_refits_windows_side_by_side_and_each_window_one_at_a_time(scheduler):
    """Boundaries of two windows start a refit of each at once (as a learner per window would); a
    window's next boundary waits for its refit in progress, then runs; every version is published."""
    from distributed import Client

    s = Settings(windows=(600, 1200), learner_every=20, learner_interval=0.0, learner_trees=5)

    async def run():
        out = []
        async with Client(scheduler, asynchronous=True) as client:
            src = Stream(asynchronous=True)
            node = learn(src, s, client)
            node.sink(out.extend)
            src.emit(sample_records(40, T=600) + sample_records(20, 1000, T=1200))
            started = {T: node.windows[T].running.version for T in node.fitting}
            waiting = {T: [r.version for r in w.pending] for T, w in node.windows.items()}
            while not node.idle:  # a refit that ends starts its window's next one before it is done
                await asyncio.gather(*node.fitting.values())
        return started, waiting, out

    started, waiting, out = asyncio.run(run())
    assert started == {600: 20, 1200: 20}
    assert waiting == {600: [40], 1200: []}
    assert sorted((int(r.key), int(r.headers["version"])) for r in out if r.topic == "models") == \
        [(600, 20), (600, 40), (1200, 20)]


def test_every_topic_decoder_turns_deep_nesting_into_a_schema_error():
    deep = b'{"type": "x", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for name, topic in TOPICS.items():
        if name == "models":
            continue
        with pytest.raises(ValueError):
            topic.decode(deep)


def test_records_compare_and_print_without_their_in_process_message():
    """``Record.message`` rides along in process only: two records equal but for it are equal, its repr
    leaves it out (a series' arrays, a model), and every record gets headers of its own."""
    a = Record("cascade_series", b'{"cid":"1"}', b"1", partition=0, offset=3)
    b = Record("cascade_series", b'{"cid":"1"}', b"1", partition=0, offset=3, message=np.arange(5))
    assert a == b and not a != b
    assert a != Record("cascade_series", b'{"cid":"1"}', b"1", partition=0, offset=4)
    assert "message" not in repr(b) and "offset=3" in repr(b)
    a.headers["x"] = "1"
    assert b.headers == {} and Record("t", b"").headers == {}
