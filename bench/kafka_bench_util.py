"""Shared helpers of the Kafka benchmarks: a broker started by the project's script, topic loading."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from streams.kafka import CONSUMER_DEFAULTS

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


def cpu_seconds(*procs) -> float:
    """User + system CPU seconds of ``psutil.Process`` objects (gone ones count 0)."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


#: The consumer settings of the stages' sources that change how fast a consumer reads (librdkafka's
#: defaults otherwise): a bare loop with them is the baseline a stage is held to.
STAGE_FETCH = {"fetch.queue.backoff.ms": CONSUMER_DEFAULTS["fetch.queue.backoff.ms"]}


def bare_loop(bootstrap: str, topic: str, n: int, decode, settings: dict | None = None) -> dict:
    """The baseline of the Kafka benchmarks: a bare ``confluent_kafka.Consumer`` loop that consumes the ``n``
    records of ``topic`` (10,000 at a time) and decodes each value with ``decode``. Timed from its first
    record; it never asks for more than is left (a ``consume()`` asking for more would wait out its whole
    timeout at the end, inside the measured time). ``settings``: librdkafka settings over its defaults
    (e.g. :data:`STAGE_FETCH`). Returns records, seconds, ``per_s`` and CPU seconds per 1,000 records
    (this process, librdkafka's threads included)."""
    import confluent_kafka as ck
    import psutil

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False, **(settings or {})})
    c.subscribe([topic])
    me = psutil.Process()
    seen = 0
    t0 = cpu0 = None
    while seen < n:
        msgs = c.consume(min(10_000, n - seen), timeout=1.0)
        if msgs and t0 is None:
            t0, cpu0 = time.perf_counter(), cpu_seconds(me)
        for m in msgs:
            if m.error():
                continue
            decode(m.value())
            seen += 1
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(me) - cpu0
    c.close()
    return {"records": n, "seconds": seconds, "per_s": n / seconds, "cpu_s_per_1000": 1000 * cpu / n}


def wait_ready(port: int, child, what: str) -> None:
    """Wait until the stage process ``child`` (a ``subprocess.Popen``) answers ``/readyz`` on ``port``
    (joined its consumer group); exit the benchmark if it exits first."""
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return
        except OSError:
            if child.poll() is not None:
                raise SystemExit(f"the {what} process exited {child.returncode}") from None
            time.sleep(0.2)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a stage's health port)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
