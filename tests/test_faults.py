"""The fault matrix on real processes: each stage a process on the real broker, faults at seeded
random instants, every output topic compared by value with an uninterrupted run of the same input.

``make test`` runs one seed of each case; ``make chaos`` runs more seeds and the long chaos run
(``TWEETOSCOPE_CHAOS_SEEDS``, ``TWEETOSCOPE_CHAOS_SECONDS``). Every case prints its duplicate
counts; the comparison fails on any lost record, any wrong value, any false dead letter, and any
duplicate not first written within one checkpoint interval (plus slack) before a fault.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from faults import ROOT, STAGES, Pipeline, caused_at, compare, dask_scheduler, dask_worker, fault_settings, \
    inject_hostile, models_by_version, reference, samples_in_log_order, unbounded
from helpers import free_port, metric_total, reusable_ports, scrape_metrics, wait_until

from streams.datasets import load_dataset, write_jsonl
from tweetoscope.schemas import ALERTS

SEEDS = [int(s) for s in os.environ.get("TWEETOSCOPE_CHAOS_SEEDS", "0").split(",")]
CHAOS_SECONDS = float(os.environ.get("TWEETOSCOPE_CHAOS_SECONDS", "20"))
SPEED = 6000.0  # event seconds per wall second: the replay lasts about 10 s


def test_a_derived_duplicate_dates_from_the_duplicated_input_it_came_from():
    """The harness's rule, on the case seen in chaos runs: the collector writes series s at 9.98 and
    is killed at 10.00; its restart writes s again, so the estimator fits it twice, and the first
    parameters came at 10.03, after the fault. That duplicate is the series' (bounded in its own
    topic); parameters written twice with no duplicated input in view are still caught."""
    windows = [(10.0, 2.5)]  # a fault at 10 s; a duplicate first written up to 2.5 s before it is bounded
    series = ({"s": 9.98, "u": 9.5}, Counter({"s": 2, "u": 1}))
    params_first, params_counts = {"s": 10.03, "u": 10.04}, Counter({"s": 2, "u": 2})
    assert unbounded(params_counts, params_first, windows) == [("s", None), ("u", None)]  # dated by their own copies
    dated = caused_at(params_first, series)
    assert dated == {"s": 9.98, "u": 10.04}
    assert unbounded(params_counts, dated, windows) == [("u", None)]
    # a chain: forecasts of parameters that were duplicated because their series was
    assert caused_at({"s": 10.05}, (dated, params_counts)) == {"s": 9.98}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "cascades.jsonl"
    write_jsonl(path, load_dataset(ROOT / "data" / "sample").cascades[:60])
    return path


@pytest.fixture(scope="module")
def ref(data, tmp_path_factory, kafka_bootstrap, scheduler):
    return reference(data, fault_settings(kafka_bootstrap, scheduler), tmp_path_factory.mktemp("reference"))


@pytest.fixture
def pipeline(kafka_bootstrap, scheduler, tmp_path):
    run = Pipeline(fault_settings(kafka_bootstrap, scheduler), tmp_path)
    yield run
    run.close()


def finish(run: Pipeline, ref, gen, what: str) -> None:
    """Wait for the generator and for every reference output, stop every stage (exit 0 each), compare."""
    assert gen.proc.wait(240) == 0, gen.tail()
    run.wait_done(ref)
    codes = run.close()
    assert all(code == 0 for code in codes.values()), codes
    report = compare(run, ref)
    print(f"{what}: {report.line()}; faults: {[w for _, w in run.faults]}")
    report.assert_ok()


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_of_each_stage_at_random_instants(pipeline, data, ref, seed):
    """Each stage, the learner included, is killed with SIGKILL at a seeded random instant and
    restarted; the collector a second time right after its restart, while it joins and restores."""
    rng = random.Random(seed)
    run = pipeline
    run.start_all()
    gen = run.generate(data, SPEED)
    victims = rng.sample(STAGES, len(STAGES))
    for victim in victims:
        time.sleep(rng.uniform(1.0, 3.5))  # a random instant of the replay (not a synchronisation)
        run.check_alive()
        run.kill(f"{victim}-1")
        p = run.start(victim)
        if victim == "collector":
            time.sleep(rng.uniform(0.5, 2.5))  # start-up: imports, joining, restoring its state
            run.kill("collector-1")
            p = run.start(victim)
        run.wait_ready(p)
    finish(run, ref, gen, f"kill -9 seed {seed}")
    assert_models_equal_an_uninterrupted_learners(run)


def assert_models_equal_an_uninterrupted_learners(run: Pipeline) -> None:
    """Models by value: for every version, the model the (killed and restarted) learner published is
    the one an uninterrupted learner makes from the same samples."""
    import asyncio

    import numpy as np
    import skops.io as sio
    from distributed import Client
    from streamz import Stream

    from tweetoscope.learner import learn

    async def uninterrupted():
        out = []
        async with Client(run.s.scheduler, asynchronous=True) as client:
            node = learn(Stream(asynchronous=True), run.s, client)
            node.sink(out.extend)
            node.update(samples_in_log_order(run))
            while not node.idle:
                await asyncio.sleep(0.05)
        return {(int(r.key), int(r.headers["version"])): r.value for r in out if r.topic == "models"}

    want, got = asyncio.run(uninterrupted()), models_by_version(run)
    assert set(got) == set(want) and want
    X = np.random.default_rng(0).uniform([1e-4, 0.1, 1, 5, 0, 0, 10], [1e-2, 0.9, 50, 50, 20, 600, 1e5], (20, 7))
    for key in want:
        a, b = (sio.loads(d, trusted=sio.get_untrusted_types(data=d)) for d in (want[key], got[key]))
        np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_instances_joining_and_leaving_hand_their_state_over(pipeline, data, ref):
    """A second collector and a second predictor join mid-stream, then leave; the first collector is
    killed during the rebalance that follows: every value as in one uninterrupted instance."""
    run = pipeline
    run.start_all()
    gen = run.generate(data, SPEED)
    time.sleep(2.0)
    for stage in ("collector", "predictor"):
        run.start(stage, 2)
    run.wait_ready(run.procs["collector-2"])
    run.faults.append((time.time(), "collector-2 and predictor-2 joined"))
    time.sleep(0.3)  # the group rebalances now
    run.kill("collector-1")
    run.wait_ready(run.start("collector"))
    time.sleep(2.0)
    for name in ("collector-2", "predictor-2"):
        run.faults.append((time.time(), f"{name} leaves"))
        assert run.stop(name) == 0, run.procs[name].tail()
    finish(run, ref, gen, "rebalance")


def test_two_instances_of_each_stage_on_four_partitions_give_the_outputs_of_one(kafka_bootstrap, scheduler, data,
                                                                               ref, tmp_path):
    """Scale-out: two instances of every stage, every topic on four partitions, process the same input
    as one instance of each on two partitions (the reference): every output by value, no duplicate at
    all. Their /metrics count every record once over the instances."""
    # eight stage processes start at once on two cores: a session timeout longer than the fault cases' 10 s
    run = Pipeline(fault_settings(kafka_bootstrap, scheduler, partitions=4, session_timeout=20.0), tmp_path)
    try:
        run.start_all(instances=2)
        ports = {stage: [run.procs[f"{stage}-{i}"].port for i in (1, 2)] for stage in STAGES}
        assert metric_total(ports["collector"], "tweetoscope_records_consumed_total", topic="tweets") == 0
        gen = run.generate(data, SPEED)
        assert gen.proc.wait(240) == 0, gen.tail()
        run.wait_done(ref)
        n_tweets = len(run.read("tweets"))
        seen: list = []

        def counted() -> bool:
            seen[:] = [metric_total(ports["collector"], "tweetoscope_records_consumed_total", topic="tweets"),
                       metric_total(ports["collector"], "tweetoscope_consumer_lag_records")]
            return seen == [n_tweets, 0]

        try:
            wait_until(counted, 60, "the collectors' metrics to count every tweet", every=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: (consumed, lag) = {seen}, {n_tweets} tweets; "
                                 f"sessions timed out: {run.session_losses()}") from None
        series = metric_total(ports["collector"], "tweetoscope_records_produced_total", topic="cascade_series")
        assert series == len(run.read("cascade_series"))
        assert metric_total(ports["estimator"], "tweetoscope_records_consumed_total", topic="cascade_series") == series
        assert metric_total(ports["estimator"], "tweetoscope_series_per_task_sum") == series  # each fitted once
        assert metric_total(ports["estimator"], "tweetoscope_fit_task_seconds_count") > 0
        assert metric_total(ports["estimator"], "tweetoscope_dask_tasks_in_flight") == 0
        alerts = [ALERTS.decode(m.value()) for m in run.read("alerts")]
        assert metric_total(ports["predictor"], "tweetoscope_alerts_total") == len(alerts)  # threshold 0
        assert metric_total(ports["predictor"], "tweetoscope_alerts_total", window="600") == sum(
            m.T_obs == 600 for m in alerts)
        assert metric_total(ports["learner"], "tweetoscope_records_consumed_total", topic="samples") == len(
            run.read("samples"))
        versions = [v for port in ports["learner"] for (n, _), v in scrape_metrics(port).items()
                    if n == "tweetoscope_model_version"]
        assert versions and max(versions) >= run.s.learner_every  # the learners published models
        assert all(0 <= v < 120 for port in ports["collector"] for (n, _), v in scrape_metrics(port).items()
                   if n == "tweetoscope_last_commit_age_seconds")
        codes = run.close()
        assert all(code == 0 for code in codes.values()), codes
        report = compare(run, ref, bound=-1.0)  # no fault: any duplicate fails
        print(f"two of each on four partitions: {report.line()}")
        report.assert_ok()
    finally:
        run.close()


def test_broker_stopped_longer_than_the_session_timeout(data, ref, scheduler, tmp_path):
    """The broker is stopped mid-stream for longer than the stages' session timeout, then restarted on
    the same data directory and port: the stages wait (or exit non-zero and are restarted, as an
    orchestrator would), and every value is as in an uninterrupted run."""
    kafka_sh = ROOT / "scripts" / "kafka.sh"
    port, broker_dir = reusable_ports(2), tmp_path / "broker"  # the broker's port and its controller's

    def broker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(kafka_sh), *args, "--dir", str(broker_dir)], capture_output=True, text=True,
                              timeout=300)

    started = broker("start", "--port", str(port), "--controller-port", str(port + 1))
    assert started.returncode == 0, started.stderr
    # stall_timeout: a member stuck outside its group after the outage exits 1 within the test's waits
    run = Pipeline(fault_settings(started.stdout.strip().splitlines()[-1], scheduler, session_timeout=6.0,
                                  stall_timeout=60.0), tmp_path)
    try:
        run.start_all()
        gen = run.generate(data, SPEED)
        time.sleep(3.0)
        run.faults.append((time.time(), "broker stopped"))
        assert broker("stop").returncode == 0
        time.sleep(8.0)  # longer than the session timeout (6 s): the group forgets its members
        assert broker("start", "--port", str(port), "--controller-port", str(port + 1)).returncode == 0
        run.faults.append((time.time(), "broker restarted"))
        run.orchestrated = True  # a stage that gave up (exit non-zero) is restarted, now or later
        run.check_alive()
        if gen.proc.wait(240) != 0:
            gen = run.generate(data, SPEED)  # the generator gave up too: post the input again
        finish(run, ref, gen, "broker outage")
    finally:
        run.close()
        broker("stop")


def test_dask_worker_and_scheduler_killed(data, ref, kafka_bootstrap, tmp_path):
    """A Dask worker is killed with SIGKILL mid-fit, then the scheduler, which is restarted on the same
    address with a new worker: the estimator and the learner resubmit their tasks, nothing is lost."""
    port = free_port()
    sched = dask_scheduler(port)
    workers = [dask_worker(port), dask_worker(port)]
    run = Pipeline(fault_settings(kafka_bootstrap, f"tcp://127.0.0.1:{port}"), tmp_path)
    try:
        run.start_all()
        gen = run.generate(data, SPEED)
        time.sleep(2.0)
        run.faults.append((time.time(), "worker kill -9"))
        workers[0].kill()
        time.sleep(2.0)
        run.faults.append((time.time(), "scheduler kill -9"))
        sched.kill()
        for w in workers:
            w.kill()
        sched.wait(10)
        time.sleep(1.0)
        sched = dask_scheduler(port)
        workers = [dask_worker(port)]
        run.faults.append((time.time(), "scheduler restarted"))
        finish(run, ref, gen, "dask faults")
        assert run.runs["estimator-1"] == run.runs["learner-1"] == 1  # they reconnected, nobody restarted them
        resubmitted = sum(run.procs[n].log.read_text().count("resubmitting") for n in ("estimator-1", "learner-1"))
        print(f"dask faults: {resubmitted} task(s) resubmitted")
    finally:
        run.close()
        for p in (sched, *workers):
            p.kill()


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos_random_stages_killed_and_restarted_under_load(kafka_bootstrap, scheduler, data, ref, tmp_path, seed):
    """Two instances of each stage; every 5 to 20 s (scaled to the run) a random instance is killed with
    SIGKILL or stopped with SIGTERM, and started again; then drain and compare."""
    rng = random.Random(seed)
    run = Pipeline(fault_settings(kafka_bootstrap, scheduler), tmp_path)
    try:
        run.start_all(instances=2)
        gen = run.generate(data, min(SPEED, 60_000 / CHAOS_SECONDS))
        end = time.monotonic() + CHAOS_SECONDS
        scale = CHAOS_SECONDS / 120.0  # the 5-20 s in a two-minute run
        while time.monotonic() < end:
            time.sleep(rng.uniform(5.0, 20.0) * scale)
            run.check_alive()
            name = rng.choice([n for n, p in run.procs.items() if p.stage in STAGES])
            stage, instance = run.procs[name].stage, int(name.rsplit("-", 1)[1])
            if rng.random() < 0.7:
                run.kill(name)
            else:
                run.faults.append((time.time(), f"SIGTERM {name}"))
                assert run.stop(name) == 0, run.procs[name].tail()
            run.wait_ready(run.start(stage, instance))
        finish(run, ref, gen, f"chaos seed {seed}, {len(run.faults)} faults in {CHAOS_SECONDS:.0f} s")
    finally:
        run.close()


def test_sigterm_drains_checkpoints_commits_and_exits_0_and_hostile_records_are_dead_lettered(pipeline, data, ref):
    """SIGTERM mid-stream: each stage drains, checkpoints and commits, exits 0; the restarted stage
    re-reads nothing (no duplicate at all). Hostile records on every input topic, ``models``
    included, each land in its dead-letter topic with their partition and offset; the outputs are
    those of the run without them."""
    run = pipeline
    run.start_all()
    gen = run.generate(data, SPEED)
    time.sleep(2.0)
    injected = inject_hostile(run)
    time.sleep(1.0)
    for stage in STAGES:
        assert run.stop(f"{stage}-1") == 0, run.procs[f"{stage}-1"].tail()
        run.wait_ready(run.start(stage))
    assert gen.proc.wait(240) == 0
    run.wait_done(ref)
    assert all(code == 0 for code in run.close().values())
    report = compare(run, ref, bound=-1.0, injected=injected)  # no fault counts: any duplicate fails
    print(f"SIGTERM and hostile records: {report.line()}")
    report.assert_ok()


def test_a_stage_whose_scheduler_is_gone_for_good_says_so_and_exits_non_zero(kafka_bootstrap, tmp_path):
    """The scheduler is killed and never comes back: the estimator is not ready at once, then exits
    non-zero within a bounded time (the client's reconnection timeout, here 5 s) for an orchestrator
    to restart it; it never hangs."""
    port = free_port()
    sched, worker = dask_scheduler(port), dask_worker(port)
    run = Pipeline(fault_settings(kafka_bootstrap, f"tcp://127.0.0.1:{port}"), tmp_path)
    os.environ["DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"] = "5s"
    try:
        p = run.start("estimator")
        run.wait_ready(p)
        assert p.get("/healthz") == 200
        sched.kill()
        worker.kill()
        wait_until(lambda: p.get("/readyz") == 503 or p.proc.poll() is not None, 30, "not ready", every=0.1)
        started = time.monotonic()
        assert p.proc.wait(60) == 1, p.tail()
        assert time.monotonic() - started < 30
        assert "Dask client gave up" in p.tail()
    finally:
        os.environ.pop("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", None)
        run.close()
        sched.kill()
        worker.kill()
