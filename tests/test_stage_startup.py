"""A stage whose Dask scheduler does not answer at start-up waits for it (up to ``dask_timeout``),
then exits with a message that names the scheduler: real processes, the real broker."""

from __future__ import annotations

import subprocess
import time

from faults import Pipeline, dask_scheduler, dask_worker, fault_settings
from helpers import free_port, wait_until


def test_an_estimator_started_before_its_scheduler_waits_for_it(kafka_bootstrap, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")  # each attempt gives up after 1 s
    port = free_port()
    run = Pipeline(fault_settings(kafka_bootstrap, f"tcp://127.0.0.1:{port}", dask_timeout=120.0), tmp_path)
    procs: list[subprocess.Popen] = []
    try:
        p = run.start("estimator")
        wait_until(lambda: "did not answer" in p.log.read_text() or p.proc.poll() is not None, 60,
                   "the estimator's first failed attempt")
        assert p.proc.poll() is None, p.tail()
        procs = [dask_scheduler(port), dask_worker(port)]
        run.wait_ready(p)
        assert run.stop("estimator-1") == 0, p.tail()
    finally:
        run.close()
        for q in procs:
            q.kill()


def test_an_estimator_whose_scheduler_never_answers_exits_2_naming_it(kafka_bootstrap, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    port = free_port()  # nothing listens there
    run = Pipeline(fault_settings(kafka_bootstrap, f"tcp://127.0.0.1:{port}", dask_timeout=3.0), tmp_path)
    try:
        p = run.start("estimator")
        started = time.monotonic()
        assert p.proc.wait(60) == 2, p.tail()
        assert time.monotonic() - started < 30
        assert f"error: no Dask scheduler at tcp://127.0.0.1:{port} answered within 3 s" in p.tail(), p.tail()
    finally:
        run.close()
