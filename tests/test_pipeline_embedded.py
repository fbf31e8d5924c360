"""The embedded pipeline on a real Dask cluster: equivalence with the backtest, live models, DLQ, CLI."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster
from streamz import Stream

from estimators.correction import fit_forest, predict_omega
from estimators.forecast import forecast_size
from streams.datasets import load_dataset, write_jsonl
from streams.memory import read_jsonl_topic
from streams.records import Record
from tweetoscope.backtest import fit_window
from tweetoscope.cli import main as cli
from tweetoscope.collector import collector
from tweetoscope.config import Settings
from tweetoscope.models import load_model
from tweetoscope.pipeline import run_embedded

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert cli(["simulate", str(out), "--n", "80", "--seed", "3"]) == 0
    return load_dataset(out)


def settings_for(scheduler, **kw):
    base = dict(windows=(600, 1200), terminated=1e7, learner_every=10**9, alert_threshold=0.0, scheduler=scheduler,
                forest_trees=20)
    base.update(kw)
    return Settings(**base)


def by_key(out: Path, topic: str) -> dict:
    return {(r["value"]["cid"], r["value"]["T_obs"]): r["value"] for r in read_jsonl_topic(out / f"{topic}.jsonl")}


@pytest.mark.parametrize("sources", [1, 3])
def test_forecasts_equal_the_backtest(sim, scheduler, tmp_path, sources):
    s = settings_for(scheduler, sources=sources)
    summary = asyncio.run(run_embedded(sim, s, tmp_path))
    stats, alerts = by_key(tmp_path, "stats"), by_key(tmp_path, "alerts")
    expected = {}
    for T in s.windows:
        fits = fit_window(sim.cascades, T, s)
        for i, n_hat, n_true in zip(fits.index, fits.hawkes, fits.n_true):
            expected[(str(i + 1), T)] = (n_hat, n_true)
    assert set(stats) == set(expected) == set(alerts)
    # not bit for bit: the replay puts events on an absolute clock and the collector takes the
    # start back off, which moves times by a rounding error that the optimiser's tolerance keeps
    for key, (n_hat, n_true) in expected.items():
        assert stats[key]["n_hat"] == pytest.approx(n_hat, rel=1e-6)
        assert alerts[key]["n_tot"] == pytest.approx(n_hat, rel=1e-6)
        assert stats[key]["n_tot"] == n_true  # the collector's size is the true final size
        assert stats[key]["ARE"] == pytest.approx(abs(n_hat - n_true) / n_true, rel=1e-6)
    assert summary.counts["tweets"] == sum(c.size for c in sim.cascades) + sources  # + one eos per source
    assert "tweets.dlq" not in summary.counts


@pytest.mark.parametrize("kernel", ["exp", "powerlaw"])
def test_forecasts_with_a_fixed_model_equal_the_offline_correction(sim, scheduler, tmp_path, kernel):
    """The pipeline (estimator, predictor) and the backtest's fits give the same corrected forecast
    under each kernel: one feature vector, one forecast (estimators.forecast)."""
    s = settings_for(scheduler, kernel=kernel)
    models, expected = {}, {}
    for T in s.windows:
        fits = fit_window(sim.cascades, T, s)
        model = fit_forest(fits.X, fits.n_true, n_estimators=20, candidates=(("are", 3, "base"),))
        models[T] = (7, model)
        corrected = forecast_size(fits.n_obs, fits.G1, fits.n_star, predict_omega(model, fits.X))
        expected.update({(str(i + 1), T): n for i, n in zip(fits.index, corrected)})
    asyncio.run(run_embedded(sim, s, tmp_path, initial_models=models))
    alerts = by_key(tmp_path, "alerts")
    assert set(alerts) == set(expected)
    for key, n_hat in expected.items():
        assert alerts[key]["n_tot"] == pytest.approx(n_hat, rel=1e-6)
        assert alerts[key]["model_version"] == 7


def test_learner_publishes_models_that_the_predictor_swaps_in(sim, scheduler, tmp_path):
    """Paced (about 10 s in all) so that models are fitted while cascades still arrive; in a process
    of its own, which never imports scikit-learn nor skops: the learner's models come compiled
    (:class:`estimators.inference.CompiledOmega`), only the Dask workers fit and write them."""
    write_jsonl(tmp_path / "sim.jsonl", sim.cascades)
    script = (
        "import asyncio, sys\n"
        "from streams.datasets import load_dataset\n"
        "from tweetoscope.config import Settings\n"
        "from tweetoscope.pipeline import run_embedded\n"
        "s = Settings(windows=(600, 1200), terminated=3600.0, learner_every=20, alert_threshold=0.0,\n"
        "             scheduler=sys.argv[1], forest_trees=20, stagger=600.0)\n"
        "summary = asyncio.run(run_embedded(load_dataset(sys.argv[2]), s, sys.argv[3], speed=5000))\n"
        "print(summary.counts['models'], sorted(k for k in sys.modules if k.split('.')[0] in ('sklearn', 'skops')))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, scheduler, str(tmp_path / "sim.jsonl"), str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    models = read_jsonl_topic(tmp_path / "out" / "models.jsonl")
    assert r.stdout.split() == [str(len(models)), "[]"] and len(models) >= 2
    for m in models:
        assert m["key"] in ("600", "1200")
        assert int(m["headers"]["version"]) >= 20
        assert hasattr(load_model(m["value"]), "predict")
    versions = [a["value"]["model_version"] for a in read_jsonl_topic(tmp_path / "out" / "alerts.jsonl")]
    assert versions[0] == 0 and max(versions) >= 20  # early alerts uncorrected, later ones with a model


def test_malformed_tweets_go_to_the_dlq_and_valid_ones_are_unaffected():
    s = Settings(windows=(10,), terminated=5)
    src = Stream()
    out = collector(src, s).sink_to_list()
    good = [
        b'{"type": "tweet", "msg": "hello", "t": 100, "m": 50, "tweet_id": 1, "info": ""}',
        b'{"type": "retweet", "msg": "", "t": 103, "m": 5, "tweet_id": 1, "info": ""}',
    ]
    bad = {
        b"{not json": "malformed",
        b'{"type": "retweet", "t": -4, "m": 5, "tweet_id": 1}': ">= 0.0",
        b'{"type": "retweet", "m": 5, "tweet_id": 1}': "missing required field `t`",
        b'{"type": "like", "t": 1, "m": 5, "tweet_id": 1}': "Invalid value 'like'",
        b'{"type": "retweet", "t": 104, "m": 5, "tweet_id": 99}': "unknown",
        b'[1, 2]': "Expected `object`",
    }
    records = [Record("tweets", v, b"s0") for v in good[:1]] + [Record("tweets", v, b"s0") for v in bad]
    records += [Record("tweets", good[1], b"s0"), Record("tweets", good[1], None),
                Record("tweets", b'{"type": "eos"}', b"s0")]
    src.emit(records)
    recs = [r for batch in out for r in batch]
    dead = [r for r in recs if r.topic == "tweets.dlq"]
    import orjson

    letters = [orjson.loads(r.value) for r in dead]
    assert len(dead) == len(bad) + 1
    reason_of = {d["value"]: d["reason"] for d in letters if d["key"] is not None}
    for raw, why in bad.items():
        assert why in reason_of[raw.decode()], (why, reason_of[raw.decode()])
    (no_key,) = [d for d in letters if d["key"] is None]
    assert "missing key" in no_key["reason"] and no_key["topic"] == "tweets"
    series = [orjson.loads(r.value) for r in recs if r.topic == "cascade_series"]
    windows = [m for m in series if not m["final"]]
    assert len(windows) == 1 and windows[0]["tweets"] == [[0.0, 50.0], [3.0, 5.0]]
    # the ended cascade is also sent whole, for the estimator's prior
    (final,) = [m for m in series if m["final"]]
    assert final["tweets"] == [[0.0, 50.0], [3.0, 5.0]] and final["T_obs"] >= 3 + s.terminated


def test_run_command_exits_0_and_writes_every_topic(tmp_path, scheduler):
    d = load_dataset(ROOT / "data" / "sample")
    write_jsonl(tmp_path / "small.jsonl", d.cascades[:30])
    r = subprocess.run(
        [sys.executable, "-m", "tweetoscope", "run", "--data", str(tmp_path / "small.jsonl"), "--out",
         str(tmp_path / "out"), "--scheduler", scheduler, "--learner-every", "1000000", "--no-dashboard"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for topic in ("tweets", "cascade_series", "cascade_properties", "forecasts", "stats", "samples"):
        assert (tmp_path / "out" / f"{topic}.jsonl").stat().st_size > 0
    assert "events replayed" in r.stdout
    stats = [rec["value"] for rec in read_jsonl_topic(tmp_path / "out" / "stats.jsonl")]
    for T_obs in sorted({s["T_obs"] for s in stats}):  # the accuracy table: one row per window, its median ARE
        are = [s["ARE"] for s in stats if s["T_obs"] == T_obs]
        assert re.search(rf"│\s+{T_obs} │\s+{len(are):,} │\s+{np.median(are):,.3f} │", r.stdout), r.stdout
    n = sum(1 for _ in open(tmp_path / "out" / "tweets.jsonl"))
    assert n == sum(c.size for c in d.cascades[:30]) + 1
    assert np.isfinite([rec["value"]["ARE"] for rec in read_jsonl_topic(tmp_path / "out" / "stats.jsonl")]).all()


def test_estimator_learns_its_prior_from_final_series():
    """PriorLearner by hand: final series update the prior (no record), window series are fitted under it."""
    from estimators import fit_cascade, simulate_dataset
    from tweetoscope.collector import final_T_obs
    from tweetoscope.estimator import PriorLearner, complete_fit_kwargs, empirical_prior, fit_chunk
    from tweetoscope.schemas import SerieArrays

    s = Settings(prior_min_cascades=30, learner_every=10, marks="pareto")  # the prior alone
    cascades = simulate_dataset(40, random_state=5)
    state = PriorLearner(s)
    finals = [SerieArrays(str(i), final_T_obs(float(c.times[-1]), s.terminated), c.times, c.marks, source="s",
                          final=True)
              for i, c in enumerate(cascades)]
    packed = state.pack(finals)
    assert packed.prior == s.prior and packed.final.all()
    assert state.encode((finals, fit_chunk(packed, s.fit_kwargs()))) == []  # final series give no record
    full = [fit_cascade(f.times, f.marks, f.T_obs, **complete_fit_kwargs(s)) for f in finals]
    expected = empirical_prior(np.array([f.p for f in full]), np.array([f.beta for f in full]),
                               np.array([c.size for c in cascades]), s)
    assert state.prior == expected and expected != s.prior
    c = cascades[0]
    window = SerieArrays("0", 600, c.times[c.times < 600], c.marks[c.times < 600], source="s")
    packed = state.pack([window])
    assert packed.prior is state.prior
    (rec,) = state.encode(([window], fit_chunk(packed, s.fit_kwargs())))
    import orjson

    ref = fit_cascade(c.times, c.marks, 600, **{**s.fit_kwargs(), "prior": expected})
    assert orjson.loads(rec.value)["params"] == pytest.approx([ref.p, ref.beta, ref.n_star, ref.G1], rel=1e-9)


def test_the_marks_sample_of_a_chunk_is_that_of_its_series_offered_one_by_one():
    """The estimator offers a chunk's final marks to each partition's sample one run of consecutive
    series of a partition at a time: the sample is the one that offering each series alone gives (the
    same draws in the same order), across the sample's filling and its replacements."""
    from tweetoscope.estimator import MARK_SAMPLE, PriorLearner
    from tweetoscope.schemas import SerieArrays

    rng = np.random.default_rng(4)
    s = Settings(marks="learnt", prior_min_cascades=10**9)  # no refit: the sample alone
    chunk = [SerieArrays(str(i), 0.0, np.zeros(n), rng.pareto(2.0, n), source="s", final=True, partition=int(p))
             for i, (n, p) in enumerate(zip(rng.integers(1, 3000, 60), rng.integers(0, 3, 60) // 2))]
    grouped = PriorLearner(s)
    for part in (chunk[:25], chunk[25:]):
        grouped._offer_marks(part)
    alone = PriorLearner(s)
    for t in chunk:
        alone._sample_marks(t.partition, t.marks)
    assert grouped.marks_seen == alone.marks_seen and max(alone.marks_seen.values()) > 2 * MARK_SAMPLE
    for p in alone.marks:
        np.testing.assert_array_equal(grouped.marks[p], alone.marks[p])


def test_the_prior_is_refitted_on_a_dask_worker_as_it_would_be_here(scheduler):
    """With a client, a refit of the prior runs on a worker, off the stage's event loop: until it is
    back, chunks are packed under the prior in use; then the prior is that of the same refit done in
    this process. (The marks' law, learnt in the same task: the learnt-prior embedded test below.)"""
    from distributed import Client

    from estimators import simulate_dataset
    from tweetoscope.collector import final_T_obs
    from tweetoscope.estimator import PriorLearner, fit_chunk
    from tweetoscope.schemas import SerieArrays

    s = Settings(prior_min_cascades=30, learner_every=1000, marks="pareto")
    cascades = simulate_dataset(40, random_state=5)
    finals = [SerieArrays(str(i), final_T_obs(float(c.times[-1]), s.terminated), c.times, c.marks, source="s",
                          final=True)
              for i, c in enumerate(cascades)]
    here = PriorLearner(s)
    fits = fit_chunk(here.pack(finals), s.fit_kwargs())
    assert here.encode((finals, fits)) == [] and here.updates == 1  # refitted here, before encode returns

    async def main():
        async with Client(scheduler, asynchronous=True) as client:
            emitted = []
            remote = PriorLearner(s, client, emit=emitted.append)
            assert remote.encode((finals, fits)) == []
            assert not remote.idle and remote.prior == s.prior  # running on the worker; the course prior meanwhile
            assert remote.pack(finals[:1]).prior == s.prior
            await remote.drain()
            return remote, emitted

    remote, emitted = asyncio.run(main())
    assert remote.idle and remote.updates == here.updates == 1
    assert remote.prior == here.prior != s.prior and emitted == []


def test_the_embedded_pipeline_fits_under_the_learnt_prior_and_marks_law(sim, scheduler, tmp_path, caplog):
    """Cascades end one after the other; once 30 have ended, the estimator learns the prior and
    (marks="learnt") the marks' law from them, publishes the law on ``marks`` and fits later
    windows under both; the learner takes the law from ``marks``.

    Paced replay (an hour between cascade starts, 50,000 event seconds per second): the
    fits of the whole cascades come back long before the windows of cascade 50 close.
    """
    import re

    from estimators import LogNormalPrior, MarkLaw

    s = settings_for(scheduler, terminated=600.0, stagger=3600.0, prior_min_cascades=30, marks="learnt")
    with caplog.at_level("INFO", logger="tweetoscope"):
        asyncio.run(run_embedded(sim, s, tmp_path, speed=50_000))
    learnt = [m for m in caplog.messages if m.startswith("prior on (p, beta) learnt from")]
    assert len(learnt) == 1  # learner_every is huge: learnt once, at 30 whole cascades
    prior = LogNormalPrior(**{k: float(v) for k, v in re.findall(r"(\w+)=(?:np\.float64\()?([-0-9.e]+)", learnt[0])})
    (law,) = [r["value"] for r in read_jsonl_topic(tmp_path / "marks.jsonl")]
    law = MarkLaw(tuple(law["body"]), law["tail"], law["alpha"], law["mu"])
    assert law != s.mark_law
    assert any(m.startswith("learner: marks' law from 30 whole cascades") for m in caplog.messages)
    params = {(r["value"]["cid"], r["value"]["T_obs"]): r["value"]
              for r in read_jsonl_topic(tmp_path / "cascade_properties.jsonl") if r["value"]["type"] == "parameters"}
    course = {T: fit_window(sim.cascades, T, s) for T in s.windows}
    under = {T: fit_window(sim.cascades, T, s, prior=prior, mark_law=law) for T in s.windows}
    early = late = moved = 0
    for T in s.windows:
        for j, i in enumerate(course[T].index):
            got = params[(str(i + 1), T)]
            p, _, n_star, G1 = got["params"]
            n_hat = got["n_obs"] + G1 / (1 - n_star)
            if i < 20:  # windows closed before 30 cascades had ended: the course prior and law
                assert n_hat == pytest.approx(course[T].hawkes[j], rel=1e-6)
                assert n_star / p == pytest.approx(s.mark_law.mean, rel=1e-9)
                early += 1
            elif i >= 50:  # long after: the learnt prior and law
                assert n_hat == pytest.approx(under[T].hawkes[j], rel=1e-6)
                assert n_star / p == pytest.approx(law.mean, rel=1e-9)
                moved += n_hat != pytest.approx(course[T].hawkes[j], rel=1e-3)
                late += 1
    assert early > 20 and late > 20 and moved > late / 2  # prior and law changed most forecasts


def test_the_jsonl_sink_writes_every_record_as_read_jsonl_topic_reads_it(tmp_path):
    """Keys seen before, new, None or not UTF-8; headers; binary values (base64): each batch's lines
    read back as the records were, a batch of several topics too (each to its own file, in order)."""
    import orjson

    from streams.memory import BINARY, jsonl_sink

    batch = [Record("t", b'{"i": 1}', b"s0"), Record("t", b'{"i": 2}', b"s0"), Record("t", b'{"i": 3}', None),
             Record("t", b'{"i": 4}', "é".encode()), Record("t", b'{"i": 5}', b"s0", {"version": "7"}),
             Record("t", b"\x00\xff", b"600", {**BINARY, "version": "3"}), Record("t", b'{"i": 6}', b"s0")]
    src = Stream()
    sink = jsonl_sink(src, tmp_path)
    src.emit(batch)
    src.emit(batch[::-1])
    mixed = [Record(topic, r.value, r.key, r.headers) for topic, r in zip("uvuuvvu", batch)]  # two topics at once
    src.emit(mixed)
    sink.close()
    for topic in "uv":
        mine = [r for r in mixed if r.topic == topic]
        back = read_jsonl_topic(tmp_path / f"{topic}.jsonl")
        assert [(g["key"], g["value"], g.get("headers", {})) for g in back] == [
            (None if r.key is None else r.key.decode(), r.value if r.headers.get("content-type") else orjson.loads(r.value),
             r.headers) for r in mine]
    got = read_jsonl_topic(tmp_path / "t.jsonl")
    want = batch + batch[::-1]
    assert [g["key"] for g in got] == [None if r.key is None else r.key.decode() for r in want]
    assert [g["value"] for g in got[:5]] == [{"i": 1}, {"i": 2}, {"i": 3}, {"i": 4}, {"i": 5}]
    assert got[5]["value"] == b"\x00\xff" and got[5]["headers"]["version"] == "3"
    assert [g.get("headers", {}) for g in got] == [r.headers for r in want]


def _lines_of(values: np.ndarray, step: int = 1) -> bytes:
    return b"".join(b'{"key":null,"value":{"i":%d}}\n' % i for i in values.tolist()[::step])


def _fail() -> bytes:
    raise ValueError("no lines today")


def test_the_jsonl_writer_writes_bytes_and_calls_in_order_from_its_child_process(tmp_path):
    """Lines given as bytes and as calls (a partial of a module-level function, numpy arrays among its
    arguments, called in the child) land in order, per topic; a lambda is refused (it cannot be sent);
    a flush makes them visible while it runs; the files are complete when close returns."""
    from functools import partial

    import psutil

    from streams.memory import JsonlWriter

    w = JsonlWriter(tmp_path)
    w.write("a", b'{"key":null,"value":{"i":-1}}\n')
    w.write("a", partial(_lines_of, np.arange(3)))
    w.write("b", partial(_lines_of, np.arange(4).reshape(2, 2)[:, 0], 1))
    with pytest.raises(TypeError, match="module-level function"):
        w.write("b", lambda: b"")
    w.flush()
    w.write("a", b'{"key":null,"value":{"i":9}}\n')
    assert w.pid != os.getpid() and psutil.pid_exists(w.pid)
    w.close()
    w.close()  # idempotent
    assert [r["value"]["i"] for r in read_jsonl_topic(tmp_path / "a.jsonl")] == [-1, 0, 1, 2, 9]
    assert [r["value"]["i"] for r in read_jsonl_topic(tmp_path / "b.jsonl")] == [0, 2]
    with pytest.raises(RuntimeError, match="closed"):
        w.write("a", b"")


def test_a_failing_jsonl_writer_raises_its_error_instead_of_losing_lines(tmp_path):
    """The child's error (here a callable that raises) ends it, and a later call of the parent raises it:
    neither stalls nor drops lines silently."""
    from streams.memory import JsonlWriter

    w = JsonlWriter(tmp_path)
    w.write("a", _fail)
    with pytest.raises(RuntimeError, match="no lines today"):
        for _ in range(10_000):  # until the sender has seen the child gone
            w.write("a", b'{"key":null,"value":{}}\n')
        w.close()
    w.close()  # closed already: nothing more to raise


def test_the_generators_batches_carry_the_events_the_collector_would_decode(sim):
    """In process the collector takes the generator's events instead of decoding each record: they are
    the events decoding would give, field by field (sources, cascade ids, times, marks, roots, messages,
    ends of stream; each origin names its record, made on demand); the batch's own JSONL lines are
    those of its records, byte for byte; a value out of the schema's bounds sends the batch through
    the decoder."""
    import dataclasses

    from streams.memory import lines
    from streams.replay import ReplayBatch, ReplaySchedule
    from tweetoscope.batches import DecodedTweets
    from tweetoscope.collector import decode_tweets
    from tweetoscope.generator import cascade_ids, tweet_records

    schedule = ReplaySchedule(sim, sources=3, stagger=10.0)
    n = len(schedule)
    cids = cascade_ids(sim)
    for lo in range(0, n, 700):
        hi = min(lo + 700, n)
        records = tweet_records(sim, schedule.batch(lo, hi, last=hi == n))
        assert type(records) is DecodedTweets
        fast, dead = decode_tweets(records)
        shared = tweet_records(sim, schedule.batch(lo, hi, last=hi == n), cids).events  # cids made once
        assert shared.key == fast.key and dataclasses.replace(shared, origin=fast.origin) == fast
        assert records.jsonl() == lines(records.records)  # before the records are made, and equal to theirs
        slow, slow_dead = decode_tweets(list(records))
        assert dead == slow_dead == [] and len(records) == len(list(records))
        for f in dataclasses.fields(slow):
            if f.name == "origin":
                assert [record(k) for record, k in fast.origin] == list(slow.origin)
                assert all(record is records.record for record, _ in fast.origin)
                continue
            assert list(getattr(fast, f.name)) == list(getattr(slow, f.name)), f.name
    assert fast.eos and sorted(fast.eos) == ["s0", "s1", "s2"]
    for t, m in ((1.0, 1e16), (-1.0, 5.0), (float("nan"), 5.0)):
        bad = ReplayBatch(np.array([0, 0]), np.array([0, 1]), np.array([0.5, t]), np.array([3.0, m]), ["s0", "s0"])
        records = tweet_records(sim, bad)
        assert type(records) is list
        events, dead = decode_tweets(records)
        assert len(events) == 1 and len(dead) == 1


def test_a_generated_batchs_jsonl_is_its_records_lines_for_odd_values():
    """The generator's batch writes its own JSONL (one msgspec call per column): byte for byte the
    lines of its records, for messages and cascade ids in any script, quotes and control characters,
    times and marks from 0 to the schema's bound (integral, tiny, 17 digits), ids of any length,
    batches with no tweet (only ends of stream) and with original posts only."""
    from streams.datasets import Cascade, Dataset
    from streams.memory import lines
    from streams.replay import ReplayBatch
    from tweetoscope.batches import DecodedTweets
    from tweetoscope.generator import tweet_records

    rng = np.random.default_rng(3)
    msgs = ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline\x01", "日本語のツイート 🚀", "é" * 300]
    cascades = [Cascade(cid=f"c{i}é" if i % 3 else str(10**20 + i), times=np.array([0.0]), marks=np.array([1.0]),
                        msg=msgs[i % len(msgs)]) for i in range(40)]
    dataset = Dataset("odd", cascades)
    t = np.concatenate([[0.0, 1e15, 1e-7, 123456789.12345678, 5.0], rng.uniform(0, 1e9, 195)])
    m = np.concatenate([[0.0, 1e15, 3.0, 1e-300, 0.1 + 0.2], rng.lognormal(5, 3, 195)])
    index = rng.integers(0, 3, 200)
    sources = [["s0", "ß1", 'q"2'][k % 3] for k in range(200)]
    for cut in (slice(0, 200), slice(0, 0), slice(0, 1)):
        batch = ReplayBatch(rng.integers(0, 40, 200)[cut], index[cut], t[cut], m[cut], sources[cut], eos=("s0", 'q"2'))
        records = tweet_records(dataset, batch)
        assert type(records) is DecodedTweets
        assert records.jsonl() == lines(list(records))
    roots = ReplayBatch(np.arange(40), np.zeros(40, dtype=int), t[:40], m[:40], sources[:40])
    records = tweet_records(dataset, roots)
    assert records.jsonl() == lines(list(records))


def test_the_collectors_series_carry_the_arrays_the_estimator_would_decode(sim):
    """In process the estimator takes the collector's arrays instead of decoding each series: they are
    what decoding the batch's records gives, field by field; the batch's JSONL lines (made from columns,
    in a writer's process) are its records' lines, byte for byte; a series that decoding might refuse is
    encoded at once, beside the batch (and goes to the dead-letter topic as it would from Kafka)."""
    from streams.memory import lines
    from streams.replay import ReplaySchedule
    from streams.window import WindowClosed
    from tweetoscope.batches import SeriesBatch
    from tweetoscope.collector import collector, encode_outputs
    from tweetoscope.estimator import decode_series
    from tweetoscope.generator import tweet_records
    from tweetoscope.schemas import MAX_MESSAGE_BYTES

    settings = Settings(windows=(600, 1200), terminated=1e4, empirical_prior=True)
    tweets = Stream()
    batches = collector(tweets, settings).filter(lambda b: type(b) is SeriesBatch).sink_to_list()
    schedule = ReplaySchedule(sim, sources=2, stagger=10.0)
    n = len(schedule)
    for lo in range(0, n, 500):
        tweets.emit(tweet_records(sim, schedule.batch(lo, min(lo + 500, n), last=lo + 500 >= n)))
    assert sum(map(len, batches)) > 100 and any(s.final for b in batches for s in b.arrays)
    for batch in batches:
        assert batch.jsonl() == lines(list(batch))
        fast, dead = decode_series(batch)
        slow, slow_dead = decode_series(list(batch))
        assert dead == slow_dead == [] and len(fast) == len(slow) == len(batch)
        for f, s in zip(fast, slow):
            assert f[:2] + f[4:] == s[:2] + s[4:]  # all but the arrays: cid, T_obs, msg, source, start, final, partition
            assert f.times.dtype == s.times.dtype == np.float64
            np.testing.assert_array_equal(f.times, s.times)
            np.testing.assert_array_equal(f.marks, s.marks)
    # what decoding refuses: an event before the start, a message beyond the size a stage reads
    early = WindowClosed("s0", "c1", "m", 600, 10.0, np.array([-1.0, 5.0]), np.array([1.0, 2.0]))
    many = np.arange(MAX_MESSAGE_BYTES // 8, dtype=np.float64) * 1.000001
    huge = WindowClosed("s0", "c2", "m", 600, 10.0, many, many)
    valid = WindowClosed("s0", "c1", "m", 600, 10.0, np.array([0.0, 5.0]), np.array([1.0, 2.0]))
    batch, rest = encode_outputs([early, valid, huge])
    assert [s.cid for s in batch.arrays] == ["c1"] and [r.key for r in rest] == [b"c1", b"c2"]
    tasks, dead = decode_series(rest)
    assert tasks == [] and len(dead) == 2 and {r.topic for r in dead} == {"cascade_series.dlq"}


def test_a_series_batchs_size_bound_and_lines_hold_for_odd_values():
    """A series batch decides without encoding that a serie decodes (:meth:`SerieArrays.decodes`): never
    for a message over the size a stage reads, for the longest numbers and strings that escape most;
    and it makes its JSONL lines from columns, byte for byte those of its records."""
    from streams.memory import lines
    from tweetoscope.batches import SeriesBatch
    from tweetoscope.schemas import CASCADE_SERIES, MAX_MESSAGE_BYTES, MAX_VALUE, SerieArrays, encode

    rng = np.random.default_rng(4)
    odd = ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline\x01", "日本語 🚀", "\x00" * 50]
    worst = np.full(1, 2.2250738585072014e-308) * rng.uniform(1, 2, 1)
    for n in (1, 1000, 19_000, 19_500, 19_700, 20_000):
        t = np.sort(rng.uniform(0, 1, n)) * 1.2345678901234567e-300
        t[-1] = MAX_VALUE * 0.98765432109876543
        for text in odd:
            s = SerieArrays(text or "c", 10**9, t, np.full(n, 1.2345678901234567e14) + worst, text, text,
                            1.2345678901234567e-300, True)
            size = len(encode(s.serie()))
            assert not (s.decodes() and size > MAX_MESSAGE_BYTES), (n, text, size)
            if s.decodes():
                CASCADE_SERIES.decode(encode(s.serie()))
    assert SerieArrays("c", 600, t[:1000], t[:1000]).decodes()  # the bound does not refuse ordinary series
    arrays = [SerieArrays(odd[k % len(odd)] + str(k), 1 + k * 997, np.sort(rng.uniform(0, 1e9, k % 7 + 1)),
                          rng.lognormal(5, 3, k % 7 + 1), odd[k % 5], odd[k % 3], float(k) * 1e-3, k % 2 == 0)
              for k in range(60)]
    batch = SeriesBatch(arrays)
    assert batch.jsonl() == lines(list(batch)) and len(batch) == 60


def test_a_stage_that_raises_stops_the_embedded_run_with_its_error(sim, scheduler, tmp_path, monkeypatch):
    """An error in a stage ends the run with that error instead of leaving it waiting for a replay that
    stopped (it hung for ever). The error is injected into the generator (a stand-in for any stage's bug:
    no real input makes our stages raise)."""
    import tweetoscope.generator as generator

    real, calls = generator.tweet_records, []

    def failing(dataset, batch, cids=None):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure in a stage")
        return real(dataset, batch, cids)

    monkeypatch.setattr(generator, "tweet_records", failing)

    async def run():
        return await asyncio.wait_for(run_embedded(sim, settings_for(scheduler, batch_size=200), tmp_path), 120)

    with pytest.raises(RuntimeError, match="injected failure in a stage"):
        asyncio.run(run())
