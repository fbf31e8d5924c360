"""The metrics' counting rules, in process (the stages' /metrics on the real broker:
tests/test_faults.py::test_two_instances_of_each_stage_on_four_partitions_give_the_outputs_of_one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from prometheus_client.parser import text_string_to_metric_families
from tornado.ioloop import IOLoop

from streams.records import Record
from tweetoscope.config import Settings
from tweetoscope.kafka_mode import KafkaBus
from tweetoscope.metrics import METRIC_NAMES, OutputCounter, StageMetrics
from tweetoscope.pipeline import Stages
from tweetoscope.schemas import ALERTS, DEAD_LETTER_KINDS, TWEETS, Alert, dlq_record


ROOT = Path(__file__).resolve().parents[1]


def base_name(sample: str) -> str:
    return re.sub(r"_(total|bucket|sum|count|created)$", "", sample)


def samples(metrics: StageMetrics) -> dict[tuple[str, tuple], float]:
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_dead_letters_are_counted_by_input_topic_and_kind_and_alerts_by_window():
    counter = OutputCounter()
    bad = Record(TWEETS.name, b"{", b"s1", partition=0, offset=3)
    batch = [dlq_record(bad, "not JSON"), dlq_record(bad, "cascade '1' is over its event limit", "rejected-event"),
             dlq_record(bad, "not JSON"), ALERTS.record(Alert(cid="1", T_obs=600, n_tot=50.0)),
             ALERTS.record(Alert(cid="2", T_obs=1200, n_tot=80.0)), ALERTS.record(Alert(cid="3", T_obs=600, n_tot=9.0))]
    assert counter(batch) is batch
    assert batch[1].headers == {"kind": "rejected-event"} and "rejected-event" in DEAD_LETTER_KINDS
    bus = KafkaBus(Settings(kafka="127.0.0.1:1"), IOLoop.current())  # never connects: no source, no sink
    got = samples(StageMetrics(bus, Stages(), counter))
    assert got[("tweetoscope_dead_letters_total", (("reason", "invalid"), ("topic", "tweets")))] == 2
    assert got[("tweetoscope_dead_letters_total", (("reason", "rejected-event"), ("topic", "tweets")))] == 1
    assert got[("tweetoscope_records_produced_total", (("topic", "tweets.dlq"),))] == 3
    assert got[("tweetoscope_alerts_total", (("window", "600"),))] == 2
    assert got[("tweetoscope_alerts_total", (("window", "1200"),))] == 1
    assert got[("tweetoscope_produce_failures_total", ())] == 0
    assert not any(name.startswith("tweetoscope_open_cascades") for name, _ in got)  # no collector here
    assert {base_name(name) for name, _ in got} <= set(METRIC_NAMES)


def test_the_grafana_dashboard_and_the_scrape_settings_name_what_the_stages_export():
    dash = json.loads((ROOT / "dask-k8s" / "monitoring" / "grafana-dashboard.json").read_text())
    used = {base_name(m) for p in dash["panels"] for t in p["targets"] for m in re.findall(r"tweetoscope_\w+", t["expr"])}
    assert used and used <= set(METRIC_NAMES), used - set(METRIC_NAMES)
    port = dict(line.split("=", 1) for line in (ROOT / "dask-k8s" / "base" / "config.env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))["TWEETOSCOPE_HEALTH_PORT"]
    for stage in ("collector", "estimator", "predictor", "learner"):
        pod = yaml.safe_load((ROOT / "dask-k8s" / "base" / f"{stage}.yaml").read_text())["spec"]["template"]
        assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": port,
                                                  "prometheus.io/path": "/metrics"}
    prom = yaml.safe_load((ROOT / "dask-k8s" / "monitoring" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert sorted(t.split(":")[0] for t in targets) == sorted(n for n, s in compose.items() if "instance-id" in
                                                              " ".join(s.get("command", [])))
