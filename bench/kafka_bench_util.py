"""Shared helpers of the Kafka benchmarks: a broker started by the project's script, topic loading, the
bare consume + decode loop, and a stage run alone in this process until its input is committed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import subprocess
import tempfile
import time
import tracemalloc
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
        shutil.rmtree(state, ignore_errors=True)


def produce_all(bootstrap: str, records, partition_of=None) -> None:
    """Produce ``Record`` objects (topic, key, value) with the project's safe producer defaults;
    ``partition_of(record)`` picks the partition (default: the key's hash, as the product's producers do)."""
    import confluent_kafka as ck

    from streams.kafka import PRODUCER_DEFAULTS

    producer = ck.Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": bootstrap, "linger.ms": 20,
                            "batch.size": 1_000_000})
    for r in records:
        kw = {} if partition_of is None else {"partition": partition_of(r)}
        while True:
            try:
                producer.produce(r.topic, r.value, r.key, **kw)
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


def bare_loop(bootstrap: str, topic: str, n: int, decode, settings: dict | None = None, *, batch=None) -> dict:
    """The baseline of the Kafka benchmarks: a bare ``confluent_kafka.Consumer`` loop that consumes the ``n``
    records of ``topic`` (10,000 at a time) and decodes each value with ``decode``. Timed from its first
    record; it never asks for more than is left (a ``consume()`` asking for more would wait out its whole
    timeout at the end, inside the measured time). ``settings``: librdkafka settings over its defaults
    (e.g. :data:`STAGE_FETCH`). ``batch``: a callable given each consumed list of messages, after ``decode``
    (None: no decode per message, e.g. ``batch`` is a stage's own input path), and the number of records
    consumed so far. Returns records, seconds, ``per_s`` and CPU seconds per 1,000 records (this process,
    librdkafka's threads included)."""
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
        if decode is None:
            seen += sum(m.error() is None for m in msgs)
        else:
            for m in msgs:
                if m.error():
                    continue
                decode(m.value())
                seen += 1
        if batch is not None:
            batch(msgs, seen)
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


async def run_stage(settings, stage: str, topic: str, n: int, client=None, workers=(), memory: bool = False) -> dict:
    """Run ``stage`` alone in this process on its Kafka input ``topic`` (unprefixed name) until the ``n``
    records there are consumed and their offsets committed (every output acknowledged, state checkpointed)."""
    import psutil
    from tornado.ioloop import IOLoop

    from tweetoscope.kafka_mode import KafkaBus
    from tweetoscope.pipeline import build_stages

    bus = KafkaBus(settings, IOLoop.current())
    stages = build_stages(bus.topic, bus.publish, settings, client, stages=(stage,))
    bus.use_stores(stages)
    source = bus.by_topic[topic]
    me = psutil.Process()
    gc.collect()
    if memory:
        tracemalloc.start()
        heap0 = tracemalloc.get_traced_memory()[0]
    bus.start()
    t0 = cpu0 = wcpu0 = None
    while True:
        await asyncio.sleep(0.02)
        if t0 is None and source.n_consumed:
            t0, cpu0, wcpu0 = time.perf_counter(), cpu_seconds(me), cpu_seconds(*workers)
        if source.n_consumed >= n:
            source.request_checkpoint()  # the last one now rather than at the end of the interval
        if sum(source.committed_offsets().values()) >= n:
            break
        if (why := bus.failure(stages, client)) is not None:
            raise SystemExit(f"{stage}: {why}")
    seconds = time.perf_counter() - t0
    cpu, wcpu = cpu_seconds(me) - cpu0, cpu_seconds(*workers) - wcpu0
    res = {"records": n, "seconds": seconds, "per_s": n / seconds, "cpu_s_per_1000": 1000 * cpu / n,
           "outputs": {k: v for k, v in sorted(bus.outputs.produced.items())}}
    if workers:
        res["worker_cpu_s_per_1000"] = 1000 * wcpu / n
    if memory and stage == "collector":
        w = stages.windows
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - heap0
        cascades, events = w.open_cascades, w.events_held
        w.sources.clear()  # what the open cascades alone hold: the heap they leave behind when dropped
        gc.collect()
        state = heap - (tracemalloc.get_traced_memory()[0] - heap0)
        tracemalloc.stop()
        res.update(open_cascades=cascades, events_held=events, heap_bytes=heap, state_bytes=state,
                   heap_kib_per_1000_cascades=heap / 1024 / cascades * 1000,
                   heap_kib_per_1000_events=heap / 1024 / events * 1000,
                   state_bytes_per_event=state / events, state_kib_per_1000_cascades=state / 1024 / cascades * 1000)
    elif memory:
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - heap0
        pending = len(stages.predictor.state)
        stages.predictor.state.clear()  # what the pending joins alone hold
        gc.collect()
        state = heap - (tracemalloc.get_traced_memory()[0] - heap0)
        tracemalloc.stop()
        res.update(pending_joins=pending, heap_bytes=heap, state_bytes=state,
                   heap_kib_per_1000_joins=heap / 1024 / pending * 1000, state_bytes_per_join=state / pending)
    await stages.drain()
    await bus.drain(30)
    for sink in bus.sinks:
        sink.destroy()
    return res
