"""Helpers shared by the tests: polling for a condition, free ports, pipeline stages as processes."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, *, every: float = 0.05) -> Any:
    """Poll ``condition`` every ``every`` seconds until it is truthy (returned) or ``timeout`` seconds
    passed (AssertionError)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)  # polling an observable condition
    return value


def health_status(port: int | None, path: str) -> int:
    """HTTP status of a stage's health endpoint ``path`` on ``port`` (0 if nothing answers)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a server to listen on soon: below the ephemeral
    range (:func:`reusable_ports`), where no outgoing connection takes it meanwhile (one port the
    kernel handed out, then released, was taken by a Dask connection before a stage's health
    server bound it)."""
    return reusable_ports(1)


def reusable_ports(n: int = 2) -> int:
    """The first of ``n`` consecutive TCP ports free on 127.0.0.1 now, below the kernel's ephemeral range:
    a server restarted on them later (a broker, whose controller listens on the next port) does not
    find one taken by some client's outgoing connection meanwhile."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(max(1024, low - 12_000), low - n)
        socks = []
        try:
            for port in range(first, first + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free ports below the ephemeral range")


def start_stage(name: str, s, *extra: str, instance: str | None = None, health_port: int | None = None,
                env: dict[str, str] | None = None) -> subprocess.Popen:
    """``tweetoscope NAME --kafka ... --topic-prefix ...`` for the settings ``s`` (threshold 0: every window
    alerts), with the pipeline stages on ``s.scheduler`` as ``instance`` (default ``NAME-1``)."""
    env = {**os.environ, "TWEETOSCOPE_GROUP_PREFIX": s.group_prefix, "TWEETOSCOPE_TERMINATED": str(s.terminated),
           "TWEETOSCOPE_LEARNER_EVERY": str(s.learner_every), "TWEETOSCOPE_ALERT_THRESHOLD": "0",
           "TWEETOSCOPE_WINDOWS": ",".join(map(str, s.windows)), "TWEETOSCOPE_PARTITIONS": str(s.partitions),
           **(env or {})}
    cmd = [sys.executable, "-m", "tweetoscope", name, "--kafka", s.kafka, "--topic-prefix", s.topic_prefix, *extra]
    if name in ("collector", "estimator", "predictor", "learner"):
        cmd += ["--scheduler", s.scheduler, "--instance-id", instance or f"{name}-1"]
        if health_port:
            cmd += ["--health-port", str(health_port)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def scrape_metrics(port: int) -> dict[tuple[str, tuple], float]:
    """A stage's ``GET /metrics`` on ``port``, parsed by prometheus_client: ``{(sample name, sorted labels): value}``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {(sm.name, tuple(sorted(sm.labels.items()))): sm.value
            for family in text_string_to_metric_families(text) for sm in family.samples}


def metric_total(ports: list[int], sample: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels over the stages scraped on ``ports``."""
    want = set(labels.items())
    return sum(v for port in ports for (n, lab), v in scrape_metrics(port).items() if n == sample and want <= set(lab))
