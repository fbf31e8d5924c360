"""The pipeline on a real Kafka broker and a real Dask cluster.

Equivalence with the backtest, stage processes killed with kill -9 and restarted,
SIGTERM draining and committing. Every test uses its own topic and group prefixes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from helpers import start_stage, wait_until

from streams.datasets import load_dataset, write_jsonl
from tweetoscope.alerts import read_topic
from tweetoscope.backtest import fit_window
from tweetoscope.config import Settings
from tweetoscope.kafka_mode import run_kafka

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.jsonl"
    write_jsonl(path, load_dataset(ROOT / "data" / "sample").cascades[:40])
    return path


def settings_for(kafka_bootstrap, scheduler, **kw):
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    base = dict(kafka=kafka_bootstrap, scheduler=scheduler, topic_prefix=prefix, group_prefix=prefix + "g",
                windows=(600, 1200), terminated=1e7, learner_every=10**9, alert_threshold=0.0, partitions=2)
    base.update(kw)
    return Settings(**base)


def expected_forecasts(path, settings):
    d = load_dataset(path)
    out = {}
    for T in settings.windows:
        fits = fit_window(d.cascades, T, settings)
        out.update({(str(i + 1), T): (n_hat, n_true) for i, n_hat, n_true in zip(fits.index, fits.hawkes, fits.n_true)})
    return out


def test_kafka_mode_forecasts_equal_the_backtest(kafka_bootstrap, scheduler, small):
    s = settings_for(kafka_bootstrap, scheduler)
    assert asyncio.run(run_kafka(s, dataset=load_dataset(small), until_done=True)) == 0
    expected = expected_forecasts(small, s)
    stats = {(m.cid, m.T_obs): m for m in read_topic(s, "stats")}
    alerts = {(m.cid, m.T_obs): m for m in read_topic(s, "alerts")}
    samples = {(m.cid, m.T_obs) for m in read_topic(s, "samples")}
    assert set(stats) == set(alerts) == samples == set(expected)
    for key, (n_hat, n_true) in expected.items():
        assert stats[key].n_hat == pytest.approx(n_hat, rel=1e-6)
        assert alerts[key].n_tot == pytest.approx(n_hat, rel=1e-6)
        assert stats[key].n_tot == n_true
    forecasts = {(m.cid, m.T_obs): m for m in read_topic(s, "forecasts")}
    assert set(forecasts) == set(expected)
    assert all(f.alert and f.n_tot == pytest.approx(expected[k][0], rel=1e-6) for k, f in forecasts.items())


def test_dashboard_kafka_feed_reads_the_topics_and_the_lag(kafka_bootstrap, scheduler, small):
    from tweetoscope.dashboard import KafkaFeed

    s = settings_for(kafka_bootstrap, scheduler)
    feed = KafkaFeed(s)
    try:
        assert feed.poll().messages == [] and "No pipeline to read" in feed.status  # nothing there yet
        assert asyncio.run(run_kafka(s, dataset=load_dataset(small), until_done=True)) == 0
        got, deadline = [], time.monotonic() + 60
        while sum(t == "forecasts" for t, _ in got) < len(expected_forecasts(small, s)) and time.monotonic() < deadline:
            polled = feed.poll()
            got += polled.messages
        assert feed.status is None
        assert {(m.cid, m.T_obs) for t, m in got if t == "forecasts"} == set(expected_forecasts(small, s))
        feed._lag_at = 0.0  # measure the lag at the next poll
        lag = feed.poll().lag
        assert lag == {"tweets": 0, "cascade_series": 0, "cascade_properties": 0}  # everything was committed
    finally:
        feed.close()
    # the same alerts for programs (JSON lines) and for people (the top-K table)
    r = subprocess.run([sys.executable, "-m", "tweetoscope", "alerts", "--kafka", s.kafka, "--topic-prefix",
                        s.topic_prefix, "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [orjson.loads(line) for line in r.stdout.splitlines()]
    expected = expected_forecasts(small, s)
    assert sorted((a["cid"], a["T_obs"]) for a in lines) == sorted(expected)  # each once
    from rich.console import Console

    from tweetoscope.alerts import top_table

    latest = {(m.cid, m.T_obs): m for m in read_topic(s, "alerts")}
    console = Console(record=True, width=200)
    console.print(top_table(latest, k=3))
    text = console.export_text()
    largest = max(latest.values(), key=lambda a: a.n_tot)
    assert f"top 3 of {len(expected)} alerts" in text and f"{largest.n_tot:,.0f}" in text


def count_stats(s):
    return Counter((m.cid, m.T_obs) for m in read_topic(s, "stats"))


def run_with_interruption(s, small, victim, how):
    """Start every stage and a paced generator; interrupt ``victim`` mid-stream with ``how``; restart it."""
    procs = {name: start_stage(name, s) for name in ("collector", "estimator", "predictor")}
    procs["generator"] = start_stage("generate", s, str(small), "--speed", "1000")
    try:
        wait_until(lambda: any(True for _ in read_topic(s, "alerts")) or procs["generator"].poll() is not None, 120,
                   "the first alerts", every=0.5)
        assert procs["generator"].poll() is None, "the replay ended before the interruption: not mid-stream"
        procs[victim].send_signal(how)
        code = procs[victim].wait(60)
        procs[victim] = start_stage(victim, s)
        assert procs["generator"].wait(120) == 0, procs["generator"].stderr.read()
        expected = expected_forecasts(small, s)
        wait_until(lambda: set(count_stats(s)) >= set(expected), 180, "a stat for every (cascade, window)",
                   every=0.5)
        return code, expected
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.parametrize("victim", ["collector", "estimator", "predictor"])
def test_kill_9_loses_nothing(kafka_bootstrap, scheduler, small, victim):
    s = settings_for(kafka_bootstrap, scheduler)
    code, expected = run_with_interruption(s, small, victim, signal.SIGKILL)
    assert code == -signal.SIGKILL
    stats = count_stats(s)
    assert set(stats) == set(expected)  # no alert, stat or sample lost ...
    for name in ("alerts", "samples"):
        assert {(m.cid, m.T_obs) for m in read_topic(s, name)} == set(expected)
    by_key = {}
    for m in read_topic(s, "stats"):  # ... and duplicates carry the same values (idempotent on (cid, T_obs))
        by_key.setdefault((m.cid, m.T_obs), set()).add(round(m.n_hat, 6))
    assert all(len(v) == 1 for v in by_key.values())
    for key, (n_hat, _) in expected.items():
        assert next(iter(by_key[key])) == pytest.approx(n_hat, rel=1e-6)
    alerts = Counter((m.cid, m.T_obs) for m in read_topic(s, "alerts"))
    print(f"{victim}: duplicates: {sum(stats.values()) - len(stats)} stats of {len(stats)}, "
          f"{sum(alerts.values()) - len(alerts)} alerts of {len(alerts)}")


def test_sigterm_drains_commits_and_exits_0(kafka_bootstrap, scheduler, small):
    s = settings_for(kafka_bootstrap, scheduler)
    code, expected = run_with_interruption(s, small, "predictor", signal.SIGTERM)
    assert code == 0
    stats = count_stats(s)
    assert set(stats) == set(expected)
    assert sum(stats.values()) == len(stats)  # drained and committed: no join completed twice
