"""The pipeline on a real Kafka broker and a real Dask cluster: equivalence with the backtest,
the dashboard's Kafka feed, the alerts command. Every test uses its own topic and group prefixes.

Faults (kill -9, SIGTERM, rebalances, broker and Dask outages) are in ``test_faults.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

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


def test_dashboard_kafka_feed_reads_the_topics_and_the_lag(kafka_bootstrap, scheduler, small, caplog):
    """The dashboard's Kafka feed and the alerts command read what a run on the broker wrote. The run
    learns the marks' law (marks="learnt"): the estimator publishes the law it learnt from the final
    series on ``marks`` (created compacted), and the learner takes it."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from estimators import MarkLaw
    from tweetoscope.dashboard import KafkaFeed

    s = settings_for(kafka_bootstrap, scheduler, marks="learnt", prior_min_cascades=10)
    feed = KafkaFeed(s)
    try:
        assert feed.poll().messages == [] and "No pipeline to read" in feed.status  # nothing there yet
        with caplog.at_level("INFO", logger="tweetoscope"):
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
    # the marks' law
    laws = list(read_topic(s, "marks"))
    assert laws and all(m.cascades >= 10 for m in laws)
    law = MarkLaw(tuple(laws[-1].body), laws[-1].tail, laws[-1].alpha, laws[-1].mu)
    assert law != s.mark_law and law.mean > 0
    res = ConfigResource(ConfigResource.Type.TOPIC, s.topic_prefix + "marks")
    admin = AdminClient(s.kafka_config())  # kept referenced until the result is in
    config = admin.describe_configs([res])[res].result(timeout=30)
    assert config["cleanup.policy"].value == "compact"
    assert any(m.startswith("learner: marks' law from") for m in caplog.messages)
