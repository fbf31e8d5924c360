"""Fault injection on real processes: the pipeline's stages as separate processes on a real broker.

A :class:`Pipeline` starts ``tweetoscope collector|estimator|predictor|learner`` processes
(each with its health port, its log in a file) and a paced ``tweetoscope generate``, kills
and restarts them, and reads every output topic back. :func:`compare` checks the outputs
*by value* against a reference, an uninterrupted embedded run of the same input
(:func:`reference`): nothing lost, every value equal, forecasts equal to the reference
parameters corrected by the very model version each forecast says it used, and every
duplicate first written within one checkpoint interval (plus slack) before a fault (a record
derived from a duplicated input, e.g. the parameters of a series the collector wrote twice,
dates from that input's first copy: :func:`caused_at`). A member
whose group session timed out (the machine or the broker stalled: it logs that it lost its
partitions without committing) is a fault too, with the session timeout added to its bound;
the report counts them.

Used by ``tests/test_faults.py`` (one seed of each case in ``make test``) and by
``make chaos`` (more seeds, longer runs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import skops.io as sio

from helpers import free_port, health_status, wait_until
from estimators.correction import predict_omega
from estimators.forecast import correction_features
from streams.datasets import load_dataset
from streams.kafka import TopicReader, committed_offsets, end_offsets
from streams.memory import read_jsonl_topic
from tweetoscope.config import Settings
from tweetoscope.kafka_mode import group_id

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("collector", "estimator", "predictor", "learner")
#: Seconds added to the checkpoint interval in the duplicate bound: the commit after a checkpoint,
#: the producer's linger and the poll that feeds the last batch.
SLACK = 1.5
#: What librdkafka logs when a static member whose session timed out (the machine or the broker
#: stalled longer than ``session_timeout``) is fenced by its own rejoin: fatal for that consumer,
#: so the stage exits non-zero, as it should, for its orchestrator to restart it. The harness
#: restarts such a stage even when the test is not ``orchestrated`` (any other exit still fails).
FENCED = "Static consumer fenced by other consumer with same group.instance.id"


def fault_settings(bootstrap: str, scheduler: str, **kw: Any) -> Settings:
    """Settings of a fault run: own topics and groups, every window alerts, models learnt on the way."""
    prefix = f"f{uuid.uuid4().hex[:8]}-"
    base = dict(kafka=bootstrap, scheduler=scheduler, topic_prefix=prefix, group_prefix="faults",
                windows=(600, 1200), terminated=3600.0, alert_threshold=0.0, partitions=2, sources=4,
                stagger=300.0, empirical_prior=False, learner_every=15, learner_interval=0.0, learner_trees=10,
                checkpoint_interval=1.0, session_timeout=10.0, batch_size=500,
                marks="pareto")  # model versions equal version for version only under a fixed law (docs/pipeline.md)
    base.update(kw)
    return Settings(**base)


def dask_scheduler(port: int) -> subprocess.Popen:
    """A real Dask scheduler process on ``127.0.0.1:port`` (``dask scheduler``), for faults on it."""
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                             str(port), "--dashboard-address", ":0"], stderr=subprocess.DEVNULL)


def dask_worker(port: int) -> subprocess.Popen:
    """A real one-thread Dask worker process (no nanny) of the scheduler on ``127.0.0.1:port``."""
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                             "--nthreads", "1", "--no-nanny", "--no-dashboard"], stderr=subprocess.DEVNULL)


def stage_env(s: Settings) -> dict[str, str]:
    """The environment that gives a stage process the settings ``s`` (besides its flags)."""
    names = ("group_prefix", "marks", "terminated", "alert_threshold", "partitions", "sources", "stagger",
             "empirical_prior", "learner_every", "learner_interval", "learner_trees", "checkpoint_interval",
             "session_timeout", "batch_size", "stall_timeout", "dask_timeout", "max_clock_jump", "model_key",
             "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_user", "kafka_secret")
    env = {**os.environ, "TWEETOSCOPE_WINDOWS": ",".join(map(str, s.windows)), "PYTHONUNBUFFERED": "1",
           "TWEETOSCOPE_LOG_LEVEL": os.environ.get("TWEETOSCOPE_LOG_LEVEL", "INFO")}  # the logs tell what a stage did
    for name in names:
        value = getattr(s, name)
        if value is not None:
            env[f"TWEETOSCOPE_{name.upper()}"] = str(value)
    return env


@dataclass
class Proc:
    """One stage (or generator) process; its stderr goes to ``log``."""

    name: str
    stage: str
    proc: subprocess.Popen
    log: Path
    port: int | None = None
    should_run: bool = True

    def get(self, path: str) -> int:
        return health_status(self.port, path)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@dataclass
class Pipeline:
    """The stages of one pipeline as processes; kills, restarts and faults are recorded in ``events``."""

    s: Settings
    dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    faults: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), what)
    runs: Counter = field(default_factory=Counter)
    #: Restart a stage that exited non-zero, as an orchestrator would (else: fail at once).
    orchestrated: bool = False
    #: Stages that exited after being :data:`FENCED` ``(time.time() of their exit, what)``.
    fenced: list[tuple[float, str]] = field(default_factory=list)

    def start(self, stage: str, instance: int = 1, *extra: str) -> Proc:
        name = f"{stage}-{instance}"
        self.runs[name] += 1
        log = self.dir / f"{name}.{self.runs[name]}.log"
        cmd = [sys.executable, "-m", "tweetoscope", stage, "--kafka", self.s.kafka, "--topic-prefix",
               self.s.topic_prefix, *extra]
        port = None
        if stage in STAGES:
            port = free_port()
            cmd += ["--instance-id", name, "--health-port", str(port)]
            if stage in ("estimator", "learner"):
                cmd += ["--scheduler", self.s.scheduler]
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, env=stage_env(self.s), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        p = self.procs[name] = Proc(name, stage, proc, log, port)
        return p

    def start_all(self, instances: int = 1) -> None:
        for stage in STAGES:
            for i in range(1, instances + 1):
                self.start(stage, i)
        for p in list(self.procs.values()):
            self.wait_ready(p)

    def wait_ready(self, p: Proc, timeout: float = 120) -> None:
        wait_until(lambda: p.get("/readyz") == 200 or p.proc.poll() is not None, timeout, f"{p.name} ready",
                   every=0.2)
        assert p.proc.poll() is None, f"{p.name} exited {p.proc.returncode}:\n{p.tail()}"

    def generate(self, data: Path, speed: float) -> Proc:
        name = "generator"
        log = self.dir / "generator.log"
        cmd = [sys.executable, "-m", "tweetoscope", "generate", str(data), "--kafka", self.s.kafka, "--topic-prefix",
               self.s.topic_prefix, "--speed", str(speed), "--sources", str(self.s.sources)]
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, env=stage_env(self.s), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        p = self.procs[name] = Proc(name, "generate", proc, log)
        # its start-up (imports, topics) done and the stream flowing: the faults that follow hit a live stream
        tweets = [self.s.topic_prefix + "tweets"]
        wait_until(lambda: proc.poll() is not None or sum(end_offsets(self.s.kafka_config(), tweets).values()) > 0,
                   120, "the generator posting tweets", every=0.1)
        assert proc.poll() in (None, 0), f"the generator exited {proc.returncode}:\n{p.tail()}"
        return p

    def kill(self, name: str) -> None:
        """``kill -9``: no drain, no commit."""
        p = self.procs[name]
        self.faults.append((time.time(), f"kill -9 {name}"))
        p.should_run = False
        p.proc.kill()
        p.proc.wait(30)

    def stop(self, name: str, timeout: float = 90) -> int | None:
        """SIGTERM; the exit code (None if it had to be killed)."""
        p = self.procs[name]
        p.should_run = False
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
        try:
            return p.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(10)
            return None

    def session_losses(self) -> list[tuple[float, str]]:
        """Partitions a member lost without committing (its session timed out: the machine or the
        broker stalled for ``session_timeout``), read from the stages' logs: faults too, though no
        test caused them. ``(time.time() when logged, log line)``."""
        out = []
        for log in sorted(self.dir.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if " lost [" in line and "without committing" in line:
                    when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    out.append((when, f"{log.stem}: {line[24:]}"))
        return out

    def check_alive(self) -> None:
        """Fail at once (with its log) if a process that should run has exited; ``orchestrated``:
        restart it instead if it exited non-zero (a stage that cannot go on exits non-zero); a
        stage :data:`FENCED` after a session timeout is restarted in every test."""
        for p in list(self.procs.values()):
            if p.should_run and p.stage in STAGES and p.proc.poll() is not None:
                fenced = p.proc.returncode != 0 and FENCED in p.log.read_text(errors="replace")
                if not (fenced or self.orchestrated and p.proc.returncode != 0):
                    raise AssertionError(f"{p.name} exited {p.proc.returncode}:\n{p.tail()}")
                if fenced:  # it wrote until its exit, up to a session timeout after its session died
                    self.fenced.append((p.log.stat().st_mtime, f"{p.name} fenced, exited {p.proc.returncode}"))
                self.faults.append((time.time(), f"{p.name} exited {p.proc.returncode}, restarted"))
                self.start(p.stage, int(p.name.rsplit("-", 1)[1]))

    def close(self) -> dict[str, int | None]:
        """SIGTERM every process still running; their exit codes."""
        codes = {}
        for name, p in self.procs.items():
            if p.proc.poll() is None:
                codes[name] = self.stop(name)
        return codes

    # ----------------------------------------------------------- reading back

    def read(self, topic: str) -> list[Any]:
        """Every message of ``topic`` (prefix added) as read by the project's one topic reader."""
        with TopicReader(self.s.kafka_config(), self.s.topic_prefix + topic) as reader:
            return reader.read_to_end(timeout=120)

    def committed(self, stage: str, topic: str) -> dict[int, int]:
        return committed_offsets(self.s.kafka_config(), group_id(self.s, stage), self.s.topic_prefix + topic)

    def done(self, ref: Reference) -> bool:
        """Every reference (cascade, window) has its stat, and every model version the reference has."""
        self.check_alive()
        stats = {(m["cid"], m["T_obs"]) for m in values(self.read("stats"))}
        versions = {(int(m.key()), int(dict(m.headers())["version"])) for m in self.read("models")}
        self.missing = (sorted(set(ref.stats) - stats)[:10], sorted(ref.final_versions - versions))
        return stats >= set(ref.stats) and versions >= ref.final_versions

    missing: tuple = ()

    def wait_done(self, ref: Reference, timeout: float = 240) -> None:
        try:
            wait_until(lambda: self.done(ref), timeout, "every stat and model of the reference", every=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; missing (stats, model versions): {self.missing}") from None


def values(messages: list) -> list[dict]:
    return [orjson.loads(m.value()) for m in messages if m.value()]


# ------------------------------------------------------------------ reference


@dataclass
class Reference:
    """The outputs of an uninterrupted embedded run of the same input, by key."""

    series: dict[tuple[str, int, bool], list]
    sizes: dict[tuple[str, int], tuple[int, float]]
    params: dict[tuple[str, int], dict]
    samples: dict[tuple[str, int], tuple]
    stats: dict[tuple[str, int], int]
    dead: Counter
    final_versions: set[tuple[int, int]]


def reference(data: Path, s: Settings, out_dir: Path) -> Reference:
    """Run the same input through the stages wired in memory, without faults (and without models: they
    depend on timing; forecasts are checked against each model version separately)."""
    from tweetoscope.pipeline import run_embedded

    settings = s.replace(kafka=None, learner_every=10**9)
    asyncio.run(run_embedded(load_dataset(data), settings, out_dir))
    topic = {name: [r["value"] for r in read_jsonl_topic(out_dir / f"{name}.jsonl")]
             for name in ("cascade_series", "cascade_properties", "samples", "stats", "tweets.dlq")}
    series = {(v["cid"], v["T_obs"], v.get("final", False)): v["tweets"] for v in topic["cascade_series"]}
    sizes = {(v["cid"], v["T_obs"]): (v["n_tot"], v["t_end"]) for v in topic["cascade_properties"]
             if v["type"] == "size"}
    params = {(v["cid"], v["T_obs"]): v for v in topic["cascade_properties"] if v["type"] == "parameters"}
    samples = {(v["cid"], v["T_obs"]): _sample(v) for v in topic["samples"]}
    stats = {(v["cid"], v["T_obs"]): v["n_tot"] for v in topic["stats"]}
    per_window = Counter(T for _, T in samples)
    final = {(T, n // s.learner_every * s.learner_every) for T, n in per_window.items() if n >= s.learner_every}
    dead = Counter(v["reason"] for v in topic["tweets.dlq"])
    return Reference(series, sizes, params, samples, stats, dead, final)


def _sample(v: dict) -> tuple:
    return (tuple(v["X"]), v["W"], v["n_obs"], v["n_tot"])


# ------------------------------------------------------------------ comparison


@dataclass
class Report:
    """What a faulty run wrote compared with the reference: counts per topic."""

    lost: dict[str, int] = field(default_factory=dict)
    wrong: dict[str, list] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    unbounded: dict[str, list] = field(default_factory=dict)  # duplicates first written long before any fault
    losses: list[str] = field(default_factory=list)  # partitions lost by a session timeout (see Pipeline)
    records: dict[str, int] = field(default_factory=dict)

    def assert_ok(self) -> None:
        assert not any(self.lost.values()), f"lost: {self.lost}"
        assert not any(self.wrong.values()), f"wrong values: { {k: v[:5] for k, v in self.wrong.items() if v} }"
        assert not any(self.unbounded.values()), \
            f"duplicates beyond the bound (key, seconds to the next fault): " \
            f"{ {k: v[:5] for k, v in self.unbounded.items() if v} }; sessions timed out: {self.losses}"

    def line(self) -> str:
        dups = ", ".join(f"{t} {n}/{self.records.get(t, 0)}" for t, n in self.duplicates.items() if n)
        lost = f"; sessions timed out: {len(self.losses)}" if self.losses else ""
        return f"duplicates: {dups or 'none'}{lost}"


#: Records no stage can use, for every input topic (key, value): they must all end in ``<topic>.dlq``.
HOSTILE: dict[str, list[tuple[bytes | None, bytes]]] = {
    "tweets": [(b"s0", b"\xff\xfe not JSON"), (None, b'{"type": "tweet", "msg": "a", "t": 1, "m": 1, "tweet_id": 9}'),
               (b"s1", b'{"type": "tweet", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"), (b"s2", b""),
               (b"s3", b'{"type": "tweet", "msg": "a", "t": NaN, "m": 1, "tweet_id": 9}'),
               (b"s0", b'{"type": "retweet", "t": 1e400, "m": 1, "tweet_id": 1}'),
               (b"s1", b'{"type": "tweet", "msg": "far", "t": 1e12, "m": 1, "tweet_id": 999999}')],
    "cascade_series": [(b"x", b'{"type": "serie", "cid": "x", "T_obs": 600, "tweets": [[0, 1e160], [1, 1e200]]}'),
                       (b"y", b"[" * 5000), (b"z", b'{"type": "serie"}'), (b"w", b"")],
    "cascade_properties": [(b"600", b'{"type": "parameters", "cid": "q", "n_obs": 5, "n_supp": 1, '
                                     b'"params": [0.1, 0.001, 0.5, 1e308]}'),
                           (b"600", b'{"type": "size", "cid": "q", "n_tot": 0, "t_end": 1}'), (b"1200", b"\x00")],
    "samples": [(b"600", b'{"type": "sample", "cid": "q", "X": [0.001, 0.5, 3], "W": 1, "n_obs": 3, "n_tot": 0}'),
                (b"600", b'{"type": "sample", "cid": "q", "X": "no", "W": 1}'), (b"1200", b"{" * 4000)],
    "models": [(b"600", b"not a skops file"), (b"1200", b"")],
}


def inject_hostile(run: Pipeline) -> dict[str, set[tuple[int, int]]]:
    """Produce :data:`HOSTILE` to the pipeline's input topics; where each landed, by topic."""
    import confluent_kafka as ck

    producer = ck.Producer(run.s.kafka_config())
    landed: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for topic, records in HOSTILE.items():
        for key, value in records:
            headers = {"version": "3"} if topic == "models" else None
            producer.produce(run.s.topic_prefix + topic, value, key, headers=headers,
                             on_delivery=lambda err, m, topic=topic: landed[topic].add((m.partition(), m.offset())))
    assert producer.flush(30) == 0
    run.faults.append((time.time(), "hostile records"))
    return dict(landed)


def caused_at(first_seen: dict[Any, float], *causes: tuple[dict[Any, float], Counter]) -> dict[Any, float]:
    """When each record's duplicate may have been caused (s since the epoch): when its first copy was
    written, or, if a record it is derived from (``causes``: first times and counts by the same key)
    was itself duplicated, when that one's first copy was, if sooner. A stage that reads an input
    twice writes its output twice, and the first output may come after the fault that made the
    input's duplicate (a fit of a series written just before its collector was killed); the input's
    duplicate is bounded in its own topic."""
    out = dict(first_seen)
    for key, t in first_seen.items():
        for cause_first, cause_counts in causes:
            if cause_counts.get(key, 0) > 1:
                t = min(t, cause_first[key])
        out[key] = t
    return out


def unbounded(counts: Counter, first_seen: dict[Any, float], windows: list[tuple[float, float]]) -> list:
    """The duplicated keys of ``counts`` first caused (``first_seen``, s since the epoch) outside every
    fault's window ``(when, how long before it)``, each with the seconds to the next fault (None: none)."""
    late = []
    for key, n in counts.items():
        if n > 1:
            t = first_seen[key]
            if not any(0 <= f - t <= b for f, b in windows):
                ahead = [f - t for f, _ in windows if f >= t]  # the next fault, seconds after it
                late.append((key, round(min(ahead), 2) if ahead else None))
    return late


def compare(run: Pipeline, ref: Reference, *, bound: float | None = None,
            injected: dict[str, set[tuple[int, int]]] | None = None) -> Report:
    """Every output topic of ``run`` against ``ref``, by value (see the module). ``injected``: the
    hostile records written to each input topic, which must all be in its dead-letter topic."""
    rep = Report()
    injected = injected or {}

    def read(topic: str) -> list:
        skip = injected.get(topic, set())
        return [m for m in run.read(topic) if (m.partition(), m.offset()) not in skip]
    bound = run.s.checkpoint_interval + SLACK if bound is None else bound
    # (time, how long before it a duplicate's first copy may have been written): a member whose
    # session timed out kept writing for up to session_timeout before it noticed
    losses = run.session_losses() + run.fenced
    rep.losses = [what for _, what in losses]
    windows = [(t, bound) for t, _ in run.faults] + [(t, bound + run.s.session_timeout) for t, _ in losses]
    # an outage is a fault all along: what was written from a bound before it stopped to its restart
    stopped = {what.removesuffix(" stopped"): t for t, what in run.faults if what.endswith(" stopped")}
    windows += [(t, t - stopped[what.removesuffix(" restarted")] + bound) for t, what in run.faults
                if what.endswith(" restarted") and what.removesuffix(" restarted") in stopped]

    def check_dups(topic: str, first_seen: dict, counts: Counter, *causes: tuple[dict, Counter]) -> dict:
        """Count ``topic``'s duplicates and list those beyond the bound; returns when each record was
        first caused (:func:`caused_at`), for the topics derived from it."""
        first_seen = caused_at(first_seen, *causes)
        rep.duplicates[topic] = sum(n - 1 for n in counts.values())
        rep.records[topic] = sum(counts.values())
        rep.unbounded[topic] = unbounded(counts, first_seen, windows)
        return first_seen

    def ts(m) -> float:
        return m.timestamp()[1] / 1000.0

    # collector: series (windows and final series) and sizes
    counts, first, wrong = Counter(), {}, []
    for m in read("cascade_series"):
        v = orjson.loads(m.value())
        key = (v["cid"], v["T_obs"], v.get("final", False))
        counts[key] += 1
        first.setdefault(key, ts(m))
        if ref.series.get(key) != v["tweets"]:
            wrong.append(key)
    rep.lost["cascade_series"] = len(set(ref.series) - set(counts))
    rep.wrong["cascade_series"] = wrong
    check_dups("cascade_series", first, counts)
    # a window's series causes its parameters (the final series cause nothing the harness reads)
    series = ({k[:2]: t for k, t in first.items() if not k[2]},
              Counter({k[:2]: n for k, n in counts.items() if not k[2]}))

    props = [(m, orjson.loads(m.value())) for m in read("cascade_properties")]
    counts, first, wrong = Counter(), {}, []
    for m, v in props:
        if v["type"] == "size":
            key = (v["cid"], v["T_obs"])
            counts[key] += 1
            first.setdefault(key, ts(m))
            if ref.sizes.get(key) != (v["n_tot"], v["t_end"]):
                wrong.append((key, v["n_tot"], ref.sizes.get(key)))
    rep.lost["sizes"], rep.wrong["sizes"] = len(set(ref.sizes) - set(counts)), wrong
    sizes = check_dups("sizes", first, counts), counts

    # estimator: parameters
    counts, first, wrong = Counter(), {}, []
    for m, v in props:
        if v["type"] == "parameters":
            key = (v["cid"], v["T_obs"])
            counts[key] += 1
            first.setdefault(key, ts(m))
            r = ref.params.get(key)
            if r is None or not np.allclose(v["params"], r["params"], rtol=1e-9) or v["n_obs"] != r["n_obs"]:
                wrong.append(key)
    rep.lost["parameters"], rep.wrong["parameters"] = len(set(ref.params) - set(counts)), wrong
    params = check_dups("parameters", first, counts, series), counts

    # learner: models, one per version; the forecasts use them
    models = {}
    for m in read("models"):
        T, version = int(m.key()), int(dict(m.headers())["version"])
        models.setdefault((T, version), sio.loads(m.value(), trusted=sio.get_untrusted_types(data=m.value())))
    rep.lost["models"] = len(ref.final_versions - set(models))
    rep.wrong["models"] = [k for k in models if k[1] % run.s.learner_every]

    # predictor: forecasts and alerts equal the reference parameters corrected by the model version they name
    def expected(key: tuple[str, int], version: int) -> float | None:
        r = ref.params.get(key)
        if r is None:
            return None
        p, beta, n_star, G1 = r["params"]
        omega = 1.0
        if version:
            model = models.get((key[1], version))
            if model is None:
                return None
            X = correction_features([r["params"]], [r["n_obs"]], [r.get("series") or [np.nan] * 3])
            omega = float(predict_omega(model, X)[0])
        return r["n_obs"] + omega * G1 / (1 - n_star) if n_star < 1 else None

    for topic in ("forecasts", "alerts"):
        counts, first, wrong = Counter(), {}, []
        for m in run.read(topic):
            v = orjson.loads(m.value())
            key = (v["cid"], v["T_obs"])
            counts[key] += 1
            first.setdefault(key, ts(m))
            want = expected(key, v["model_version"])
            if want is None or v["n_tot"] is None or abs(v["n_tot"] - want) > 1e-6 * max(1.0, want):
                wrong.append((key, v["model_version"], v["n_tot"], want))
        rep.lost[topic] = len(set(ref.params) - set(counts))
        rep.wrong[topic] = wrong
        check_dups(topic, first, counts, params)

    counts, first, wrong = Counter(), {}, []
    for m in run.read("stats"):
        v = orjson.loads(m.value())
        key = (v["cid"], v["T_obs"])
        counts[key] += 1
        first.setdefault(key, ts(m))
        want = expected(key, v["model_version"])
        if ref.stats.get(key) != v["n_tot"] or want is None or abs(v["n_hat"] - want) > 1e-6 * max(1.0, want):
            wrong.append(key)
    rep.lost["stats"], rep.wrong["stats"] = len(set(ref.stats) - set(counts)), wrong
    check_dups("stats", first, counts, params, sizes)

    counts, first, wrong = Counter(), {}, []
    for m in read("samples"):
        v = orjson.loads(m.value())
        key = (v["cid"], v["T_obs"])
        counts[key] += 1
        first.setdefault(key, ts(m))
        if ref.samples.get(key) != _sample(v):
            wrong.append(key)
    rep.lost["samples"], rep.wrong["samples"] = len(set(ref.samples) - set(counts)), wrong
    check_dups("samples", first, counts, params, sizes)

    # dead letters: the reference's (late events) and the hostile records, nothing else
    for topic in ("tweets", "cascade_series", "cascade_properties", "samples", "models"):
        dead = values(run.read(topic + ".dlq"))
        hostile = [d for d in dead if (d["partition"], d["offset"]) in injected.get(topic, ())]
        rest = Counter(d["reason"] for d in dead if (d["partition"], d["offset"]) not in injected.get(topic, ()))
        want = ref.dead if topic == "tweets" else Counter()
        rep.wrong[topic + ".dlq"] = sorted(set(rest) - set(want))
        rep.lost[topic + ".dlq"] = len(set(want) - set(rest)) + len(
            injected.get(topic, set()) - {(d["partition"], d["offset"]) for d in hostile})
        rep.wrong[topic + ".dlq"] += [d for d in hostile if not d["reason"]]
    return rep


def models_by_version(run: Pipeline) -> dict[tuple[int, int], bytes]:
    """The model files of ``run`` by (window, version), first copy of each."""
    out: dict[tuple[int, int], bytes] = {}
    for m in run.read("models"):
        out.setdefault((int(m.key()), int(dict(m.headers())["version"])), m.value())
    return out


def samples_in_log_order(run: Pipeline) -> list:
    """The ``samples`` records as a learner reads them (per partition, in log order)."""
    from streams.kafka.source import _to_records

    records = _to_records(run.read("samples"), {})[0]  # on Kafka's topic name
    return sorted(records, key=lambda r: r.partition)  # stable: each partition's log order kept
