"""Scale-out on a real broker: two collectors and two predictors in their consumer groups over a
4-partition ``tweets`` topic; and an adaptive local Dask cluster growing under a backlog, shrinking idle."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from helpers import free_port, health_status, start_stage, wait_until
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streams.datasets import load_dataset, write_jsonl
from streams.kafka import read_topic as read_messages
from tweetoscope.alerts import read_topic
from tweetoscope.backtest import fit_window
from tweetoscope.config import Settings
from tweetoscope.kafka_mode import group_id
from tweetoscope.pipeline import start_dask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "scale.jsonl"
    write_jsonl(path, load_dataset(ROOT / "data" / "sample").cascades[:60])
    return path


def settings_for(bootstrap: str, scheduler: str) -> Settings:
    prefix = f"s{uuid.uuid4().hex[:8]}-"
    return Settings(kafka=bootstrap, scheduler=scheduler, topic_prefix=prefix, group_prefix=prefix + "g",
                    windows=(600, 1200), terminated=1e7, learner_every=10**9, alert_threshold=0.0, partitions=4,
                    sources=8)


def expected_keys(path: Path, s: Settings) -> set[tuple[str, int]]:
    d = load_dataset(path)
    return {(str(i + 1), T) for T in s.windows for i in fit_window(d.cascades, T, s).index}


class Stage:
    """One stage process with its health endpoints."""

    def __init__(self, name: str, instance: str, s: Settings, *extra: str):
        self.name, self.instance, self.port = name, instance, free_port()
        self.proc = start_stage(name, s, *extra, instance=instance, health_port=self.port,
                                env={"TWEETOSCOPE_SOURCES": str(s.sources), "TWEETOSCOPE_SESSION_TIMEOUT": "6"})

    def get(self, path: str) -> int:
        return health_status(self.port, path)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """``GET /metrics``, parsed by prometheus_client: ``{(sample name, sorted labels): value}``."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        return {(sm.name, tuple(sorted(sm.labels.items()))): sm.value
                for family in text_string_to_metric_families(text) for sm in family.samples}

    def stop(self, sig=signal.SIGTERM) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def total(stages, names: list[str], sample: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels over the named stages' scrapes."""
    want = set(labels.items())
    return sum(v for name in names for (n, lab), v in stages[name].metrics().items()
               if n == sample and want <= set(lab))


_NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
              KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.GROUP_ID_NOT_FOUND)


def group_members(bootstrap: str, group: str) -> dict[str, set[tuple[str, int]]]:
    """Member instance id -> its assigned (topic, partition)s ({} while the group's coordinator moves)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        desc = admin.describe_consumer_groups([group])[group].result(10)
    except KafkaException as exc:
        if exc.args and (exc.args[0].retriable() or exc.args[0].code() in _NOT_READY):
            return {}
        raise
    return {m.group_instance_id or m.member_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
            for m in desc.members}


def start_all(s: Settings) -> dict[str, Stage]:
    stages = {"collector-1": Stage("collector", "collector-1", s), "collector-2": Stage("collector", "collector-2", s),
              "estimator-1": Stage("estimator", "estimator-1", s),
              "predictor-1": Stage("predictor", "predictor-1", s), "predictor-2": Stage("predictor", "predictor-2", s)}
    for st in stages.values():
        wait_until(lambda st=st: st.get("/readyz") == 200 or st.proc.poll() is not None, 120, f"{st.instance} ready",
                   every=0.3)
        assert st.proc.poll() is None, st.proc.stderr.read()
        assert st.get("/healthz") == 200
    return stages


def test_two_collectors_two_predictors_share_the_work_exactly_once(kafka_bootstrap, scheduler, data):
    s = settings_for(kafka_bootstrap, scheduler)
    stages = start_all(s)
    try:
        tweets = s.topic_prefix + "tweets"
        members: dict = {}

        def two_collectors() -> bool:
            members.update(group_members(s.kafka, group_id(s, "collector")))
            return len(members) == 2 and all(members.values())

        wait_until(two_collectors, 60, "two collectors with partitions", every=0.3)
        assigned = [{p for t, p in parts if t == tweets} for parts in members.values()]
        assert all(assigned) and set().union(*assigned) == {0, 1, 2, 3} and not assigned[0] & assigned[1]
        collectors, predictors = ["collector-1", "collector-2"], ["predictor-1", "predictor-2"]
        assert total(stages, collectors, "tweetoscope_records_consumed_total", topic="tweets") == 0
        assert stages["estimator-1"].metrics()[("tweetoscope_fit_task_seconds_count", ())] == 0
        gen = Stage("generate", "generator", s, str(data), "--sources", str(s.sources))
        assert gen.proc.wait(180) == 0, gen.proc.stderr.read()
        expected = expected_keys(data, s)
        wait_until(lambda: set(Counter((m.cid, m.T_obs) for m in read_topic(s, "stats"))) >= expected, 180,
                   "a stat for every (cascade, window)", every=0.3)
        series = Counter((m.cid, m.T_obs) for m in read_topic(s, "cascade_series"))
        stats = Counter((m.cid, m.T_obs) for m in read_topic(s, "stats"))
        assert set(stats) == expected
        assert max(series.values()) == 1 and max(stats.values()) == 1  # steady state: each handled once
        # the metrics moved with the records, each counted once over the instances
        n_tweets = sum(1 for _ in read_messages(s.kafka_config(), s.topic_prefix + "tweets"))  # eos records too
        wait_until(lambda: total(stages, collectors, "tweetoscope_records_consumed_total", topic="tweets") == n_tweets
                   and total(stages, collectors, "tweetoscope_consumer_lag_records", topic="tweets") == 0, 30,
                   "the collectors' metrics to count every tweet", every=0.3)
        n_series = total(stages, collectors, "tweetoscope_records_produced_total", topic="cascade_series")
        assert n_series == sum(series.values())
        est = stages["estimator-1"].metrics()
        assert est[("tweetoscope_records_consumed_total", (("topic", "cascade_series"),))] == n_series
        assert est[("tweetoscope_series_per_task_sum", ())] == n_series  # every series fitted in some task
        assert 0 < est[("tweetoscope_fit_task_seconds_count", ())] == est[("tweetoscope_series_per_task_count", ())]
        assert est[("tweetoscope_dask_tasks_in_flight", (("stage", "estimator"),))] == 0
        n_alerts = sum(1 for _ in read_topic(s, "alerts"))
        assert total(stages, predictors, "tweetoscope_alerts_total") == n_alerts == len(expected)  # threshold 0
        assert total(stages, predictors, "tweetoscope_alerts_total", window="600") == sum(T == 600 for _, T in expected)
        assert total(stages, predictors, "tweetoscope_records_consumed_total", topic="cascade_properties") == (
            total(stages, collectors, "tweetoscope_records_produced_total", topic="cascade_properties")
            + est[("tweetoscope_records_produced_total", (("topic", "cascade_properties"),))])
        assert all(0 <= v < 120 for (n, _), v in stages["collector-1"].metrics().items()
                   if n == "tweetoscope_last_commit_age_seconds")
    finally:
        codes = {name: st.stop() for name, st in stages.items()}
    assert all(code == 0 for code in codes.values()), codes


# A stopped instance handing its partitions (and state) over, compared by value with one
# uninterrupted instance: tests/test_faults.py::test_instances_joining_and_leaving_hand_their_state_over.


def test_adaptive_local_cluster_grows_under_a_backlog_and_shrinks_idle():
    """The pipeline's own cluster (start_dask), allowed 1 to 3 workers."""

    def busy(n: int) -> float:  # pure-Python work: 6M steps take about a quarter of a second here
        x = 0.0
        for i in range(n):
            x += i ** 0.5
        return x

    async def main() -> list[int]:
        client, cluster = await start_dask(Settings(dask_min_workers=1, dask_workers=3))
        counts = [len(cluster.scheduler.workers)]
        try:
            futures = client.map(busy, [6_000_000 + i for i in range(60)], pure=False)  # ~15 s on one worker
            deadline = time.monotonic() + 120
            while len(cluster.scheduler.workers) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                counts.append(len(cluster.scheduler.workers))
            await client.gather(futures)
            del futures
            # every worker, those added by the scale-up too, warmed its fits when it started
            warmed = await client.run(lambda dask_worker: "tweetoscope-warm-fits" in dask_worker.plugins)
            assert len(warmed) == 3 and all(warmed.values()), warmed
            while len(cluster.scheduler.workers) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                counts.append(len(cluster.scheduler.workers))
            return counts
        finally:
            await client.close()
            await cluster.close()

    counts = asyncio.run(main())
    assert counts[0] == 1 and max(counts) == 3 and counts[-1] == 1, counts
