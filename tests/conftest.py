"""Shared fixtures: a real single-node Kafka broker for the session, unique topics per test."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "scripts" / "kafka.sh"


#: The test brokers' JVMs compile with C1 only: a test broker's load is light, and C2's compiler
#: threads took about 40 % of a broker's CPU (23 s against 13.6 s over the kill -9 fault case),
#: time the two cores need for the stages. ``scripts/kafka.sh`` passes ``KAFKA_OPTS`` to the JVM.
os.environ.setdefault("KAFKA_OPTS", "-XX:TieredStopAtLevel=1")

SASL_PORT = free_port()
#: The user of the session broker's SASL listener (scripts/kafka.sh's default KAFKA_SASL_USERS).
SASL_USER, SASL_PASSWORD = "tweetoscope", "tweetoscope-secret"


#: Modules collected first: the fault matrix is the longest (about half the suite on one worker),
#: so started first it ends with the modules the other worker runs meanwhile (``make test`` runs
#: two pytest-xdist workers, ``--dist loadfile --no-loadscope-reorder``: a module's tests stay on
#: one worker, modules go in this order).
FIRST = ("test_faults.py",)
#: Modules collected last: they run stage processes too, so they run once the matrix is (nearly)
#: done rather than beside it on two cores, where together they starved a broker for 7 s.
LAST = ("test_scale_out.py", "test_pipeline_kafka.py", "test_security.py", "test_kafka_nodes.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: (item.path.name not in FIRST) + (item.path.name in LAST))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address (``127.0.0.1:PORT``) of a Kafka broker started by ``scripts/kafka.sh`` for this session
    (PLAINTEXT; it also listens with SASL/PLAIN on :data:`SASL_PORT`)."""
    state = tmp_path_factory.mktemp("kafka")
    started = subprocess.run([str(KAFKA_SH), "start", "--port", "0", "--sasl-port", str(SASL_PORT), "--dir",
                              str(state)], capture_output=True, text=True, timeout=300)
    if started.returncode != 0 or not started.stdout.strip():
        subprocess.run([str(KAFKA_SH), "stop", "--dir", str(state)], capture_output=True, timeout=60)
        pytest.fail(f"scripts/kafka.sh start failed (exit {started.returncode}):\n{started.stderr}", pytrace=False)
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_SH), "stop", "--dir", str(state)], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def kafka_sasl(kafka_bootstrap: str) -> str:
    """Address of the session broker's SASL_PLAINTEXT listener."""
    return f"127.0.0.1:{SASL_PORT}"


@pytest.fixture
def kafka_topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``make(partitions=1, config=None) -> name``: creates a topic whose name no other test uses."""
    from streams.kafka import create_topics

    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]

    def make(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        create_topics(kafka_bootstrap, {name: partitions}, topic_config=config)
        return name

    return make


@pytest.fixture(scope="session")
def scheduler() -> Iterator[str]:
    """Address of a real one-worker, one-thread distributed cluster (worker processes) for the session
    (one per pytest-xdist worker: a worker process costs seconds of CPU to start and warm)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address
