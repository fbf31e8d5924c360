"""Learner stage: ``samples`` in, ``models`` out; one correction model per window, refitted on Dask.

Samples are kept per window, keyed by cascade (idempotent on ``(cid, T_obs)``: a
duplicate replaces its twin), the latest ``learner_max_samples`` per window. Every
``learner_every`` distinct samples of a window (a *boundary*), the training set is
taken as it stands and queued for a refit whose model version is the number of
distinct samples seen so far: a version's model depends only on the samples up to it,
so a restarted or rebalanced learner publishes the same model for the same version.
Refits run on the Dask cluster one at a time per window (windows side by side, as
a group of learners with a window each runs them; at low priority, so that fits of
cascades waiting for a worker go first), no sooner than ``learner_interval`` seconds
after the previous refit of the same window; at most :data:`MAX_PENDING` refits wait
per window (beyond, the oldest waiting one is skipped). The forest's loss and leaf
size are chosen by inner cross-validation at every :data:`SELECT_EVERY`-th boundary;
the others reuse that choice (10x cheaper). Models go to ``models`` as skops files
(signed with ``model_key`` when it is set). The model's own forecast (its ``"base"`` trend) is
computed under the marks' law: the settings' Pareto law, or with ``settings.marks == "learnt"``
the latest law the estimator published on ``marks`` (read from its beginning on every start).

On Kafka the learner is a consumer-group member of ``samples`` (keyed by window, so
windows spread over learners) and its state — the samples, the counts, the choice and
the refits whose model is not acknowledged yet — is a :class:`streams.state.StateStore`
checkpointed to its changelog: a restart does not re-read the ``samples`` topic, and a
refit queued (or fitted, its model not yet acknowledged) before a crash is published after it. A refit that raises is logged and dead-lettered
to ``samples.dlq`` (that version is skipped); a Dask cluster lost for longer than
``dask_timeout`` stops the stage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from streamz import RefCounter, Stream

from estimators.marks import COURSE_MARKS, MarkLaw
from streams.dask import DaskUnavailable, resilient_result
from streams.records import Record
from streams.state import Change, latest_entries

from .config import Settings
from .models import dump_model, fit_correction, model_record, model_signature
from .schemas import MARKS, SAMPLES, Sample, SchemaError, dlq_record

if TYPE_CHECKING:
    from estimators.inference import CompiledOmega

__all__ = ["learn", "train_model", "SELECT_EVERY", "MAX_PENDING"]

logger = logging.getLogger(__name__)


#: Every this many boundaries of a window (the first included), a refit selects the forest's
#: loss and leaf size by inner cross-validation; the others reuse the last choice.
SELECT_EVERY = 10
#: Refits waiting per window, at most.
MAX_PENDING = 4


def train_model(X: np.ndarray, n_true: np.ndarray, n_estimators: int, seed: int,
                choice: tuple[str, int, str] | None = None,
                mark_law: MarkLaw = COURSE_MARKS) -> tuple[bytes, tuple[str, int, str], CompiledOmega]:
    """Fit the correction of one window (:func:`tweetoscope.models.fit_correction`); its skops file,
    the ``(loss, leaf, trend)`` used and the model compiled (runs on a Dask worker: the compiled model
    comes back pickled, for a predictor in the learner's process, which then needs neither skops nor
    scikit-learn).

    ``X``: the samples' :func:`estimators.forecast.correction_features` (shape (n, 7)), ``n_true``
    shape (n,); ``choice`` None: select the candidate, else fit that one; ``mark_law``: the marks'
    law of the model's own forecast.
    """
    model = fit_correction(X, n_true, n_estimators=n_estimators, seed=seed, mark_law=mark_law, choice=choice)
    return dump_model(model), (model.loss, model.min_samples_leaf, model.trend), model.compile()


def _sample_row(d: Sample) -> tuple[float, ...]:
    """A sample as the learner keeps it: ``(b, n_star, G1, n_obs, n_tot, n_recent, t_idle, mark_sum)``,
    the series' statistics NaN when the sample did not carry them."""
    return (*d.X, d.n_obs, d.n_tot, *(d.series or (math.nan,) * 3))


def _training_set(rows: list[tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (shape (n, 7), :func:`estimators.forecast.correction_features`) and ``n_true`` (n,) of
    :func:`_sample_row` rows (rows of 5, from a checkpoint written before the series' statistics,
    have them NaN)."""
    a = np.full((len(rows), 8), np.nan)
    for i, r in enumerate(rows):
        a[i, :len(r)] = r
    return np.column_stack([a[:, :4], a[:, 5:]]), a[:, 4]


class _Refit(msgspec.Struct, array_like=True):
    """A refit taken at a boundary: the model ``version`` and its training set (rows of :func:`_sample_row`)."""

    version: int
    select: bool
    rows: list[tuple[float, ...]]


class _WindowRecord(msgspec.Struct, array_like=True):
    offset: int
    seen: int
    choice: tuple[str, int, str] | None
    samples: list[tuple[Any, ...]]  # (cid, *_sample_row)
    pending: list[_Refit]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_WindowRecord).decode


@dataclass(eq=False)
class _Window:
    partition: int = -1
    offset: int = -1
    seen: int = 0  # distinct samples seen: the version of the model of the next boundary
    choice: tuple[str, int, str] | None = None
    samples: OrderedDict[str, tuple[float, float, float, int, int]] = field(default_factory=OrderedDict)
    pending: deque[_Refit] = field(default_factory=deque)  # waiting for their turn
    running: _Refit | None = None  # the refit on the cluster now
    unpublished: list[_Refit] = field(default_factory=list)  # fitted, model not acknowledged yet
    last_fit: float = -math.inf  # time.monotonic() of the last refit started


@Stream.register_api()
class learn(Stream):
    """Streamz node: ``samples`` record batches in, ``models`` (and dead-letter) record batches out.

    ``marks``: the stream of ``marks`` record batches (the learnt marks' law), if any."""

    def __init__(self, upstream, settings: Settings, client, marks: Stream | None = None, **kwargs):
        self.client = client
        self.every = int(settings.learner_every)
        self.max_samples = int(settings.learner_max_samples)
        self.interval = float(settings.learner_interval)
        self.trees = int(settings.learner_trees)
        self.mark_law = settings.mark_law
        self.seed = int(settings.seed)
        self.retry_timeout = float(settings.dask_timeout)
        self.model_key = settings.model_key.encode() if settings.model_key else None
        self.windows: dict[int, _Window] = {}
        self.versions: dict[int, int] = {}  # last version published per window
        self.fitting: dict[int, asyncio.Task] = {}  # the refit on the cluster, by window
        self.timer: object | None = None
        self.timer_at = math.inf  # time.monotonic() the timer fires at
        self.draining = False
        self.error: BaseException | None = None
        self.n_failed = 0
        self.n_skipped = 0  # refits skipped because the learner was behind
        self._dirty: dict[int, set[int]] = {}
        self.samples = upstream
        ups = [upstream] if marks is None else [upstream, marks]
        Stream.__init__(self, upstreams=ups, ensure_io_loop=True, **kwargs)

    def _on_marks(self, x: list[Record], metadata=None):
        """Take the latest valid law of a ``marks`` batch; bad records go to ``marks.dlq``."""
        dead = []
        for r in x:
            try:
                d = MARKS.decode(r.value)
                law = MarkLaw(tuple(d.body), d.tail, d.alpha, d.mu)
                if not np.isfinite(law.mean):
                    raise SchemaError(f"the law's mean is {law.mean}")
            except (SchemaError, ValueError) as exc:
                dead.append(dlq_record(r, f"unusable marks' law: {exc}"))
                continue
            if law != self.mark_law:
                self.mark_law = law
                logger.info("learner: marks' law from %d whole cascades: %s", d.cascades, law)
        return self._emit(dead, metadata=metadata) if dead else None

    # ----------------------------------------------------------------- samples

    def update(self, x: list[Record], who=None, metadata=None):
        if who is not None and who is not self.samples:
            return self._on_marks(x, metadata)
        if self.error is not None:
            raise RuntimeError("the learner stopped: the Dask cluster is unavailable") from self.error
        dead = []
        for r in x:
            try:
                d = SAMPLES.decode(r.value)
                if d.n_obs is None or d.n_tot is None:
                    raise SchemaError("a sample for the learner needs n_obs and n_tot")
                T_obs = d.T_obs if d.T_obs is not None else int((r.key or b"").decode())
            except (SchemaError, ValueError) as exc:
                dead.append(dlq_record(r, f"unusable sample: {exc}"))
                continue
            self._add(T_obs, d, r)
        self._maybe_refit()
        return self._emit(dead, metadata=metadata) if dead else None

    def _add(self, T_obs: int, d: Sample, r: Record) -> None:
        w = self.windows.get(T_obs)
        if w is None:
            w = self.windows[T_obs] = _Window(partition=r.partition)
        if 0 <= r.offset <= w.offset:
            return  # read again after a restart: already in the state
        w.offset = max(w.offset, r.offset)
        new = w.samples.pop(d.cid, None) is None
        w.samples[d.cid] = _sample_row(d)
        if len(w.samples) > self.max_samples:
            w.samples.popitem(last=False)
        if new:
            w.seen += 1
            if w.seen % self.every == 0 and len(w.samples) >= 2:
                boundary = w.seen // self.every
                w.pending.append(_Refit(w.seen, (boundary - 1) % SELECT_EVERY == 0, list(w.samples.values())))
                while len(w.pending) > MAX_PENDING:
                    skipped = w.pending.popleft()
                    self.n_skipped += 1
                    logger.info("learner behind: refit of T_obs=%d version %d skipped", T_obs, skipped.version)
        self._touch(T_obs, w)

    # ------------------------------------------------------------------ refits

    def _maybe_refit(self) -> None:
        """Start the next refit of every window with one waiting and none running, each window at most
        every ``learner_interval`` seconds (a timer starts those that must wait)."""
        if self.draining or self.error is not None:
            return
        now, soonest = time.monotonic(), math.inf
        for T_obs, w in self.windows.items():
            if not w.pending or T_obs in self.fitting:
                continue
            if w.last_fit + self.interval > now:
                soonest = min(soonest, w.last_fit + self.interval)
                continue
            refit = w.running = w.pending.popleft()
            w.last_fit = now
            self.fitting[T_obs] = asyncio.ensure_future(self._fit(T_obs, w, refit))
        if soonest < self.timer_at:
            if self.timer is not None:
                self.loop.remove_timeout(self.timer)
            self.timer_at = soonest
            self.timer = self.loop.call_later(soonest - now, self._on_timer)

    def _on_timer(self) -> None:
        self.timer, self.timer_at = None, math.inf
        self._maybe_refit()

    async def _fit(self, T_obs: int, w: _Window, refit: _Refit) -> None:
        X, n_true = _training_set(refit.rows)
        choice = None if refit.select or w.choice is None else w.choice
        args = (train_model, X, n_true, self.trees, self.seed, choice, self.mark_law)

        def submit():
            return self.client.submit(*args, pure=False, priority=-10)

        try:
            data, used, model = await resilient_result(self.client, submit(), submit, retries=1,
                                                retry_timeout=self.retry_timeout)
        except DaskUnavailable as exc:
            logger.error("learner: %s; stopping", exc)
            self.error = exc
            return
        except Exception as exc:  # noqa: BLE001 - a refit that fails is skipped, the stage goes on
            self.n_failed += 1
            logger.exception("refit of T_obs=%d version %d failed; skipped", T_obs, refit.version)
            data = model = None
            reason = f"refit of T_obs={T_obs} at version {refit.version} failed: {type(exc).__name__}: {exc}"
            value = f'{{"T_obs": {T_obs}, "version": {refit.version}}}'.encode()
            self._emit([dlq_record(Record(SAMPLES.name, value, str(T_obs).encode()), reason, "refit")])
        finally:
            del self.fitting[T_obs]  # no other refit of this window starts while it is there
        if self.windows.get(T_obs) is w and w.running is refit:  # still ours
            w.running = None
            if data is not None:
                if refit.select or w.choice is None:
                    w.choice = tuple(used)
                self._publish(T_obs, w, refit, data, model)
            self._touch(T_obs, w)
        self._maybe_refit()

    def _publish(self, T_obs: int, w: _Window, refit: _Refit, data: bytes, model: object) -> None:
        """Emit the model; the refit stays in the state (``unpublished``) until the model is
        acknowledged, so that a crash in between publishes it again (same version, same model)."""
        self.versions[T_obs] = refit.version
        logger.info("model for T_obs=%d: version %d (%d bytes)", T_obs, refit.version, len(data))
        record = model_record(T_obs, refit.version, data, model)
        if self.model_key is not None:
            record.headers["signature"] = model_signature(self.model_key, data)
        w.unpublished.append(refit)

        def acknowledged() -> None:
            if refit in w.unpublished:
                w.unpublished.remove(refit)
                if self.windows.get(T_obs) is w:
                    self._touch(T_obs, w)

        ref = RefCounter(initial=1, cb=acknowledged, loop=self.loop)
        self._emit([record], metadata=[{"ref": ref}])
        ref.release()

    def _touch(self, T_obs: int, w: _Window) -> None:
        if w.partition >= 0:
            self._dirty.setdefault(w.partition, set()).add(T_obs)

    @property
    def idle(self) -> bool:
        return not self.fitting and (self.draining or not any(w.pending for w in self.windows.values()))

    async def drain(self) -> None:
        """Wait for the refits in progress; start no new one (those waiting stay in the state)."""
        self.draining = True
        if self.timer is not None:
            self.loop.remove_timeout(self.timer)
            self.timer, self.timer_at = None, math.inf
        while self.fitting:
            await asyncio.gather(*self.fitting.values(), return_exceptions=True)
        if self.error is not None:
            raise RuntimeError("the learner stopped: the Dask cluster is unavailable") from self.error

    # ------------------------------------------------------------- StateStore

    def snapshot(self, partitions: Collection[int] | None = None) -> list[Change]:
        out: list[Change] = []
        for p in list(self._dirty) if partitions is None else partitions:
            for T_obs in self._dirty.pop(p, set()):
                w = self.windows.get(T_obs)
                if w is None:
                    continue
                value = _WindowRecord(w.offset, w.seen, w.choice, [(cid, *v) for cid, v in w.samples.items()],
                                      w.unpublished + ([w.running] if w.running is not None else [])
                                      + list(w.pending))
                out.append((p, str(T_obs).encode(), _encode(value)))
        return out

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        latest = latest_entries(records, _decode)
        for key, rec in latest.items():
            w = self.windows[int(key)] = _Window(partition=partition, offset=rec.offset, seen=rec.seen,
                                                 choice=tuple(rec.choice) if rec.choice else None)
            w.samples = OrderedDict((s[0], tuple(s[1:])) for s in rec.samples)
            w.pending = deque(rec.pending)
        self.loop.add_callback(self._maybe_refit)  # refits queued before the restart
        return len(latest)

    def drop(self, partitions: Collection[int]) -> None:
        parts = set(partitions)
        for T_obs in [T for T, w in self.windows.items() if w.partition in parts]:
            del self.windows[T_obs]
        for p in parts:
            self._dirty.pop(p, None)

    def committed(self, partition: int, offset: int) -> None:
        pass
