"""Wiring of the stages, in memory (the embedded default) or through Kafka.

    replay ─▶ generator ─▶ tweets ─▶ collector ─▶ cascade_series ─▶ estimator (Dask) ─┐
                                          └────▶ cascade_properties ◀───────────────────┘
    cascade_properties + models ─▶ predictor ─▶ alerts, stats, samples
    samples ─▶ learner (Dask) ─▶ models

Every stage reads ``list[Record]`` batches from topic streams and writes
``list[Record]`` batches to a publisher; only the bus differs between modes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin
from streamz import Stream

from streams.datasets import Dataset
from streams.memory import JsonlFiles, JsonlWriter, MemoryBus
from streams.records import dlq_topic
from streams.replay import ReplaySchedule

from .config import Settings
from .forkserver import start_forkserver
from .generator import generator
from .schemas import CASCADE_SERIES, TOPICS, TWEETS

__all__ = ["ALL_TOPICS", "Stages", "build_stages", "run_embedded", "start_dask", "close_dask"]

logger = logging.getLogger(__name__)

#: Every topic the pipeline writes, dead-letter topics included.
ALL_TOPICS: tuple[str, ...] = tuple(TOPICS) + tuple(dlq_topic(t) for t in
                                                    ("tweets", "cascade_series", "cascade_properties", "models",
                                                     "samples", "marks"))


@dataclass
class Stages:
    """Handles on the running stages (for draining and for metrics)."""

    collector: Stream | None = None
    windows: Stream | None = None
    estimator: Stream | None = None
    predictor: Stream | None = None
    learner: Stream | None = None
    outputs: list[Stream] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        """No Dask work left: no fit, no refit of the prior, no refit of a model."""
        return all(s is None or s.idle for s in (self.estimator, self.learner)) and (
            self.estimator is None or self.estimator.state.idle)

    @property
    def error(self) -> BaseException | None:
        """Why a stage stopped for good (its Dask work failed), if one did."""
        return next((s.error for s in (self.estimator, self.learner) if s is not None and s.error is not None), None)

    def stores(self) -> dict[str, tuple[str, object, bool]]:
        """``{input topic: (stage, state store, barrier)}`` of the stateful stages built (see
        :class:`streams.kafka.KafkaSource`: the estimator's store only accumulates statistics)."""
        out = {}
        if self.windows is not None:
            out["tweets"] = ("collector", self.windows, True)
        if self.estimator is not None:
            out["cascade_series"] = ("estimator", self.estimator.state, False)
        if self.predictor is not None:
            out["cascade_properties"] = ("predictor", self.predictor, True)
        if self.learner is not None:
            out["samples"] = ("learner", self.learner, True)
        return out

    async def drain(self) -> None:
        """Wait until no Dask work is left in any stage (results emitted, refits published)."""
        while not self.idle:
            for s in (self.estimator, self.learner):
                if s is not None:
                    await s.drain()
            if self.estimator is not None:
                await self.estimator.state.drain()


def build_stages(
    topic: Callable[[str], Stream],
    publish: Callable[[Stream], None],
    settings: Settings,
    client,
    *,
    stages: tuple[str, ...] = ("collector", "estimator", "predictor", "learner"),
) -> Stages:
    """Connect the chosen stages: ``topic(name)`` gives the stream of a topic's batches,
    ``publish(stream)`` sends a stream of record batches to the bus. Each stage's module is imported
    here, when built: a collector or an estimator process never loads scikit-learn (2-3 s of start-up)."""
    out = Stages()
    if "collector" in stages:
        from .collector import collector

        out.collector = collector(topic("tweets"), settings)
        publish(out.collector)
        out.windows = _find(out.collector, "collector.windows")
    if "estimator" in stages:
        from .estimator import estimator

        est_out, out.estimator = estimator(topic("cascade_series"), settings, client)
        publish(est_out)
    if "predictor" in stages:
        from . import predictor as _predictor  # noqa: F401  (registers the predict_join node)

        out.predictor = Stream.predict_join(topic("cascade_properties"), topic("models"), settings,
                                            stream_name="predictor")
        publish(out.predictor)
    if "learner" in stages:
        from . import learner as _learner  # noqa: F401  (registers the learn node)

        out.learner = topic("samples").learn(settings, client, marks=topic("marks"), stream_name="learner")
        publish(out.learner)
    return out


def _find(node: Stream, name: str) -> Stream | None:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.name == name:
            return n
        todo.extend(u for u in n.upstreams if u is not None)
    return None


async def start_dask(settings: Settings, *, dashboard: bool = True):
    """An asynchronous Dask client: on ``settings.scheduler`` if given, else on an adaptive local cluster
    whose first ``dask_min_workers`` workers have started.

    Returns ``(client, cluster)`` (``cluster`` is None for an external scheduler). ``dashboard``
    False: the local cluster serves no Dask dashboard (nothing would link to it; its Bokeh
    set-up costs the start 0.3-0.5 s of CPU).
    """
    client, cluster, workers = await open_dask(settings, dashboard=dashboard)
    if workers is not None:
        try:
            await workers
        except BaseException:
            await close_dask(client, cluster)
            raise
    return client, cluster


async def open_dask(settings: Settings, *, dashboard: bool = True):
    """:func:`start_dask` without waiting for the local cluster's workers: returns as soon as its scheduler
    answers, with the workers starting (2 s of imports in the process they fork from, the first
    time); tasks wait at the scheduler until they come.

    Returns ``(client, cluster, workers)``: ``workers`` is a future done when they have started, that
    raises what stopped them (None for an external scheduler).
    """
    import dask
    import distributed.utils
    from distributed import LocalCluster
    from distributed.core import Status

    # Distributed keeps the last 1,000 messages of every batched connection for debugging,
    # task payloads included (all our series): memory would grow with the stream.
    dask.config.set({
        "distributed.admin.low-level-log-length": 10,
        # send a worker only as many tasks as it has threads: a fit never queues behind a
        # running model refit on a busy worker, it waits for the first free one
        "distributed.scheduler.worker-saturation": 1.0,
    })
    cluster = workers = None
    if not settings.scheduler:
        start_forkserver(settings.worker_nice)
        dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
        # The server runs, with its preload: distributed would set its own, which changes nothing then,
        # after importing its optional packages here to see which import (pandas: 0.2 s of this process).
        distributed.utils._forkserver_preload_set = True
        cluster = LocalCluster(n_workers=settings.dask_min_workers, threads_per_worker=1, processes=True,
                               asynchronous=True, dashboard_address=":0", scheduler_kwargs={"dashboard": dashboard},
                               silence_logs=logging.WARNING)
        # Awaiting the cluster starts its scheduler, then its workers, and raises what stopped either.
        workers = asyncio.ensure_future(cluster)
        while cluster.status != Status.running:  # the scheduler is up (distributed waits for it the same way)
            if workers.done():
                workers.result()  # it failed: raise why
            await asyncio.sleep(0.01)
        cluster.adapt(minimum=settings.dask_min_workers, maximum=settings.dask_workers)
    try:
        # by address: a client given the cluster itself would wait for its workers
        client = await _connect(settings.scheduler or cluster.scheduler_address, settings.dask_timeout)
        await client.register_plugin(WarmFits(settings.fit_kwargs()), name="tweetoscope-warm-fits")
    except BaseException:
        if cluster is not None:
            workers.cancel()
            await cluster.close()
        raise
    return client, cluster, workers


async def close_dask(client, cluster) -> None:
    """Close what :func:`start_dask` returned: the client, then the local cluster if there is one."""
    await client.close()
    if cluster is not None:
        await cluster.close()


async def _connect(address, timeout: float):
    """An asynchronous client of the scheduler at ``address``, tried again until ``timeout`` seconds
    have passed: a busy scheduler may not finish the handshake within distributed's connect timeout
    (it then raises a bare ``TimeoutError``). Raises ``TimeoutError`` saying which scheduler."""
    from distributed import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client(address, asynchronous=True)
        except (OSError, TimeoutError) as exc:  # asyncio.TimeoutError is TimeoutError
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Dask scheduler at {address} answered within {timeout:.0f} s: "
                                   f"{exc!r}") from exc
            logger.warning("the Dask scheduler at %s did not answer (%r): trying again", address, exc)
            await asyncio.sleep(1.0)


class WarmFits(WorkerPlugin):
    """Dask worker plugin: fits a small cascade when a worker starts (and on every worker already
    there), so that loading the compiled likelihood (numba) is not paid by the first real fits:
    cold workers put 0.5 s on the p99 alert latency (BENCHMARKS.md); and imports what model refits
    need, so that the first refit is not 3 s late. It also gives the worker the stages' malloc settings
    and one BLAS thread (:mod:`tweetoscope.tuning`)."""

    idempotent = True

    def __init__(self, fit_kwargs: dict):
        self.fit_kwargs = fit_kwargs

    def setup(self, worker) -> None:
        import numpy as np

        from estimators import fit_cascade, series_features

        from .tuning import tune_blas, tune_malloc

        times = np.array([0.0, 10.0, 30.0, 70.0, 150.0])
        fit_cascade(times, np.full(times.size, 100.0), 300.0, **self.fit_kwargs)
        series_features(times, np.full(times.size, 100.0), 300.0)
        import skops.io  # noqa: F401  (and scikit-learn: 3 s that the first model refit would wait for)

        tune_malloc()
        tune_blas()  # after the imports: their BLAS libraries are loaded




@dataclass
class RunSummary:
    """What an embedded run did: records per topic, events replayed, wall seconds."""

    counts: dict[str, int]
    events: int
    seconds: float
    out_dir: str


async def run_embedded(
    dataset: Dataset,
    settings: Settings,
    out_dir: str | Path,
    *,
    client=None,
    speed: float | None = None,
    initial_models: dict[int, tuple[int, object]] | None = None,
    on_start: Callable[[Stages, MemoryBus], None] | None = None,
    progress: bool = False,
    on_dask: Callable[[object, Stages, MemoryBus], None] | None = None,
    workers: asyncio.Future | None = None,
) -> RunSummary:
    """Replay ``dataset`` through all stages wired in memory; write every topic to ``out_dir/<topic>.jsonl``.

    Returns once the replay is fully processed: every window fitted, every join done and
    every refit published. ``initial_models`` seeds the predictor (``T_obs -> (version, model)``).
    ``on_dask(client, stages, bus)`` is called once the stages are built (the dashboard starts
    there, on the bus); the JSONL files are then flushed every second so that other readers
    (``tweetoscope dashboard --out``) see them grow. ``workers``: the future of the local cluster's
    workers starting (:func:`open_dask`): if they cannot start, the run ends with that error instead
    of waiting for fits that no worker would run.
    """
    from tornado.ioloop import IOLoop

    loop = IOLoop.current()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ALL_TOPICS:
        (out_dir / f"{name}.jsonl").unlink(missing_ok=True)
    # The tweets' and the series' files, whose batches are made in process as arrays, are formatted and
    # written by a child process (it starts meanwhile); the other topics' records are lines already,
    # written here.
    writer, files = JsonlWriter(out_dir), JsonlFiles(out_dir)
    own_dask = client is None
    cluster = None
    if own_dask:
        try:
            client, cluster = await start_dask(settings)
        except BaseException:
            writer.close()
            raise
    bus = MemoryBus()
    for name in ALL_TOPICS:
        bus.topic(name).jsonl_sink(writer if name in (TWEETS.name, CASCADE_SERIES.name) else files)
    replay = flusher = shown = None
    try:
        stages = build_stages(bus.topic, lambda s: s.to_memory(bus), settings, client)
        for T_obs, (version, model) in (initial_models or {}).items():
            stages.predictor.swap_model(T_obs, version, model)
        schedule = ReplaySchedule(dataset, sources=settings.sources, stagger=settings.stagger)
        replay = Stream.from_replay(schedule, batch_size=settings.batch_size, speed=speed, loop=loop,
                                    stream_name="replay")
        generator(replay, dataset).to_memory(bus)
        if on_start is not None:
            on_start(stages, bus)
        if on_dask is not None:
            on_dask(client, stages, bus)
            from tornado.ioloop import PeriodicCallback

            flusher = PeriodicCallback(lambda: (writer.flush(), files.flush()), 1000)
            flusher.start()
        start = time.perf_counter()
        replay.start()
        if progress:
            shown = asyncio.ensure_future(_show_progress(replay, len(schedule)))
        await _unless_failed(workers, replay.done.wait())
        if shown is not None:
            await shown
        if replay.error is not None:  # a stage raised: the run stops with its error
            raise replay.error
        await _unless_failed(workers, stages.drain())
        seconds = time.perf_counter() - start
    finally:
        if shown is not None and not shown.done():
            shown.cancel()
        if replay is not None:
            replay.stop()
        if flusher is not None:
            flusher.stop()
        files.close()
        try:
            writer.close()
        finally:
            if own_dask:
                await close_dask(client, cluster)
    return RunSummary(counts=dict(bus.counts), events=len(schedule), seconds=seconds, out_dir=str(out_dir))


async def _unless_failed(started: asyncio.Future | None, aw: Awaitable):
    """Await ``aw``; if ``started`` (the workers starting) fails first, raise its error instead."""
    task = asyncio.ensure_future(aw)
    if started is not None and not started.done():
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if started is not None and started.done() and not started.cancelled() and started.exception() is not None:
        task.cancel()
        exc = root = started.exception()
        while root.__cause__ is not None:  # distributed's "Nanny failed to start." first
            root = root.__cause__
        why = f"{exc}" if root is exc else f"{exc} ({type(root).__name__}: {root})"
        raise RuntimeError(f"the local Dask cluster's workers could not start: {why}") from exc
    return await task


async def _show_progress(replay, total: int) -> None:
    from tqdm import tqdm

    with tqdm(total=total, desc="replay", unit="event", unit_scale=True, leave=False) as bar:
        while not replay.done.is_set():
            bar.update(min(replay.position, total) - bar.n)
            await asyncio.sleep(0.2)
        bar.update(total - bar.n)


def run_embedded_sync(*args, **kwargs) -> RunSummary:
    """:func:`run_embedded` from synchronous code."""
    return asyncio.run(run_embedded(*args, **kwargs))
