"""Shared helpers of the Kafka benchmarks: a broker started by the project's script, topic loading."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def broker():
    """A Kafka bootstrap address: ``$KAFKA_BOOTSTRAP`` if set, else a broker started (and stopped) here."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    state = tempfile.mkdtemp(prefix="tweetoscope-bench-kafka-")
    out = subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start", "--port", "0", "--dir", state],
                         capture_output=True, text=True, check=True)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "stop", "--dir", state], capture_output=True)


def produce_all(bootstrap: str, records) -> None:
    """Produce ``Record`` objects (topic, key, value) with the project's safe producer defaults."""
    import confluent_kafka as ck

    from streams.kafka import PRODUCER_DEFAULTS

    producer = ck.Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": bootstrap, "linger.ms": 20,
                            "batch.size": 1_000_000})
    for r in records:
        while True:
            try:
                producer.produce(r.topic, r.value, r.key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
