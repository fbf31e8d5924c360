"""Prometheus metrics of a stage process, served on its health port at ``GET /metrics``.

Most figures are read from the stages' own counters when Prometheus scrapes (a custom
collector, as Dask's scheduler and workers do): nothing is added to the hot path but a
count of the records each stage emits and two histograms per finished Dask task.

============================================  =======  ===============================================
name                                          type     labels, meaning
============================================  =======  ===============================================
``tweetoscope_records_consumed_total``        counter  ``topic``: records read from the topic
``tweetoscope_records_produced_total``        counter  ``topic``: records emitted to the topic
``tweetoscope_produce_failures_total``        counter  records the broker refused for good
``tweetoscope_consumer_lag_records``          gauge    ``topic``, ``partition``: high watermark - position
``tweetoscope_last_commit_age_seconds``       gauge    ``topic``: since the last successful commit
``tweetoscope_last_checkpoint_age_seconds``   gauge    ``topic``: since the last acknowledged checkpoint
``tweetoscope_batches_in_flight``             gauge    ``topic``: batches emitted, not done yet
``tweetoscope_open_cascades``                 gauge    collector: cascades held in memory
``tweetoscope_events_held``                   gauge    collector: their events
``tweetoscope_dask_tasks_in_flight``          gauge    ``stage``: fit tasks (estimator), refits (learner)
``tweetoscope_fit_task_seconds``              hist.    estimator: submission to result of a fit task
``tweetoscope_series_per_task``               hist.    estimator: series packed in a task
``tweetoscope_dead_letters_total``            counter  ``topic`` (the input), ``reason`` (its kind,
                                                       :data:`tweetoscope.schemas.DEAD_LETTER_KINDS`)
``tweetoscope_alerts_total``                  counter  ``window`` (T_obs, s): alerts raised
``tweetoscope_model_version``                 gauge    ``window``: version of the model in use
                                                       (predictor) or last published (learner)
``tweetoscope_prior_updates_total``           counter  estimator: refits of the empirical prior
``tweetoscope_join_entries``                  gauge    predictor: joins waiting for their twin
============================================  =======  ===============================================

A stage whose part is not in this process simply has no sample of that metric.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.records import Record

if TYPE_CHECKING:
    from .kafka_mode import KafkaBus
    from .pipeline import Stages

__all__ = ["StageMetrics", "OutputCounter", "CONTENT_TYPE", "METRIC_NAMES"]

#: Every metric a stage may export (counters without their ``_total`` suffix, histograms without theirs).
METRIC_NAMES = (
    "tweetoscope_records_consumed", "tweetoscope_records_produced", "tweetoscope_produce_failures",
    "tweetoscope_consumer_lag_records", "tweetoscope_last_commit_age_seconds", "tweetoscope_last_checkpoint_age_seconds",
    "tweetoscope_batches_in_flight", "tweetoscope_open_cascades", "tweetoscope_events_held",
    "tweetoscope_dask_tasks_in_flight", "tweetoscope_fit_task_seconds", "tweetoscope_series_per_task",
    "tweetoscope_dead_letters", "tweetoscope_alerts", "tweetoscope_model_version", "tweetoscope_prior_updates",
    "tweetoscope_join_entries",
)

#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_DLQ = ".dlq"


class OutputCounter:
    """Counts the records of each batch a stage emits: by topic, dead letters by input topic and kind,
    alerts by window. Use as ``stream.map(counter)`` (returns the batch unchanged)."""

    def __init__(self) -> None:
        self.produced: Counter[str] = Counter()
        self.dead: Counter[tuple[str, str]] = Counter()
        self.alerts: Counter[str] = Counter()

    def __call__(self, batch: list[Record]) -> list[Record]:
        topics = Counter(r.topic for r in batch)
        self.produced.update(topics)
        if any(t.endswith(_DLQ) for t in topics):
            self.dead.update((r.topic[:-len(_DLQ)], r.headers.get("kind", "invalid"))
                             for r in batch if r.topic.endswith(_DLQ))
        if "alerts" in topics:
            self.alerts.update((r.key or b"").decode("ascii", "replace") for r in batch if r.topic == "alerts")
        return batch


class StageMetrics(Collector):
    """The metrics of one stage process (see the module's table), in their own registry."""

    def __init__(self, bus: KafkaBus, stages: Stages, outputs: OutputCounter,
                 strip: Callable[[str], str] = lambda t: t):
        self.bus, self.stages, self.outputs, self.strip = bus, stages, outputs, strip
        self.registry = CollectorRegistry(auto_describe=False)
        self.fit_seconds = Histogram(
            "tweetoscope_fit_task_seconds", "Seconds from the submission of a fit task to its result",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=self.registry)
        self.series_per_task = Histogram(
            "tweetoscope_series_per_task", "Series packed in one fit task",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384), registry=self.registry)
        if stages.estimator is not None:
            stages.estimator.on_task = self.observe_task
        self.registry.register(self)

    def observe_task(self, seconds: float, items: int) -> None:
        """One fit task's latency (seconds) and its number of series."""
        self.fit_seconds.observe(seconds)
        self.series_per_task.observe(items)

    def exposition(self) -> bytes:
        """The text exposition of every metric (what ``GET /metrics`` returns)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        consumed = CounterMetricFamily("tweetoscope_records_consumed", "Records read from a topic", labels=["topic"])
        lag = GaugeMetricFamily("tweetoscope_consumer_lag_records",
                                "Records not consumed yet: high watermark minus position", labels=["topic", "partition"])
        commit = GaugeMetricFamily("tweetoscope_last_commit_age_seconds", "Seconds since the last successful commit",
                                   labels=["topic"])
        checkpoint = GaugeMetricFamily("tweetoscope_last_checkpoint_age_seconds",
                                       "Seconds since the last acknowledged state checkpoint", labels=["topic"])
        inflight = GaugeMetricFamily("tweetoscope_batches_in_flight", "Batches emitted and not done yet",
                                     labels=["topic"])
        for source in self.bus.sources:
            topic = self.strip(source.topics[0])
            consumed.add_metric([topic], source.n_consumed)
            inflight.add_metric([topic], source.n_inflight)
            for (t, partition), n in sorted(source.lag().items()):
                lag.add_metric([self.strip(t), str(partition)], n)
            if source.last_commit is not None:
                commit.add_metric([topic], now - source.last_commit)
            if source.last_checkpoint is not None:
                checkpoint.add_metric([topic], now - source.last_checkpoint)
        yield from (consumed, lag, commit, checkpoint, inflight)

        out = self.outputs
        produced = CounterMetricFamily("tweetoscope_records_produced", "Records emitted to a topic", labels=["topic"])
        for topic, n in sorted(out.produced.items()):
            produced.add_metric([topic], n)
        dead = CounterMetricFamily("tweetoscope_dead_letters", "Records sent to a dead-letter topic",
                                   labels=["topic", "reason"])
        for (topic, kind), n in sorted(out.dead.items()):
            dead.add_metric([topic, kind], n)
        alerts = CounterMetricFamily("tweetoscope_alerts", "Alerts raised", labels=["window"])
        for window, n in sorted(out.alerts.items()):
            alerts.add_metric([window], n)
        failures = CounterMetricFamily("tweetoscope_produce_failures", "Records the broker refused for good")
        failures.add_metric([], sum(sink.n_failed for sink in self.bus.sinks))
        yield from (produced, dead, alerts, failures)

        st = self.stages
        tasks = GaugeMetricFamily("tweetoscope_dask_tasks_in_flight", "Dask tasks submitted, result not in yet",
                                  labels=["stage"])
        if st.windows is not None:
            yield GaugeMetricFamily("tweetoscope_open_cascades", "Cascades held in memory by the collector",
                                    value=st.windows.open_cascades)
            yield GaugeMetricFamily("tweetoscope_events_held", "Events of the open cascades held in memory",
                                    value=st.windows.events_held)
        if st.estimator is not None:
            tasks.add_metric(["estimator"], st.estimator.in_flight)
            prior = CounterMetricFamily("tweetoscope_prior_updates", "Refits of the estimator's empirical prior")
            prior.add_metric([], st.estimator.state.updates)
            yield prior
        versions = GaugeMetricFamily("tweetoscope_model_version", "Version of the correction model in use "
                                     "(predictor) or last published (learner)", labels=["stage", "window"])
        if st.predictor is not None:
            for window, (version, _) in sorted(st.predictor.models.items()):
                versions.add_metric(["predictor", str(window)], version)
            yield GaugeMetricFamily("tweetoscope_join_entries", "Joins of the predictor waiting for their twin",
                                    value=len(st.predictor.state))
        if st.learner is not None:
            tasks.add_metric(["learner"], len(st.learner.fitting))
            for window, version in sorted(st.learner.versions.items()):
                versions.add_metric(["learner", str(window)], version)
        yield from (tasks, versions)
