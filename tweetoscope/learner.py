"""Learner stage: ``samples`` in, ``models`` out; one correction model per window, refitted on Dask.

Samples are kept per window, keyed by cascade (idempotent on ``(cid, T_obs)``:
a duplicate replaces its twin), the latest ``learner_max_samples`` per window.
Once a window has ``learner_every`` new samples and its last refit started at
least ``learner_interval`` seconds ago, its model is refitted on the Dask
cluster (one fit at a time, at low priority, so that fits of cascades keep the
rest of the cluster; ``learner_trees`` trees, and the forest's loss and leaf
size chosen by inner cross-validation only every :data:`SELECT_EVERY` refits,
keep a refit under a second on 2,000 samples) and published to
``models`` as a skops file whose version counts the samples seen so far.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict

import numpy as np
from streamz import Stream

from estimators.correction import fit_forest
from streams.records import Record

from .config import Settings
from .models import dump_model, model_record
from .schemas import SAMPLES, SchemaError, dlq_record

__all__ = ["learn", "train_model"]

logger = logging.getLogger(__name__)


#: A refit selects the forest's loss and leaf size by inner cross-validation every this many
#: refits of a window (the first included); the others reuse the last choice (10x cheaper).
SELECT_EVERY = 10


def train_model(X: np.ndarray, n_true: np.ndarray, n_obs: np.ndarray, n_estimators: int, seed: int,
                choice: tuple[str, int, str] | None = None, alpha: float = 2.4,
                mu: float = 10.0) -> tuple[bytes, tuple[str, int, str]]:
    """Fit the correction of one window; its skops file and the ``(loss, leaf, trend)`` used (runs on a Dask worker).

    ``X`` = ``[beta, n_star, G1]`` (shape (n, 3)) of the samples, ``n_true`` and ``n_obs``
    shape (n,). ``choice`` None selects among :data:`estimators.correction.CANDIDATES` by
    3-fold inner cross-validation on at most 500 of the samples; otherwise that candidate
    is fitted directly. ``alpha``, ``mu``: the marks' law of the model's own forecast.
    """
    kw = {} if choice is None else {"candidates": (choice,)}
    model = fit_forest(np.column_stack([X, n_obs]), n_true, n_estimators=n_estimators, random_state=seed, cv=3,
                       select_max=500, alpha=alpha, mu=mu, **kw)
    return dump_model(model), (model.loss, model.min_samples_leaf, model.trend)


@Stream.register_api()
class learn(Stream):
    """Streamz node: ``samples`` record batches in, ``models`` record batches out."""

    def __init__(self, upstream, settings: Settings, client, **kwargs):
        self.client = client
        self.every = int(settings.learner_every)
        self.max_samples = int(settings.learner_max_samples)
        self.interval = float(settings.learner_interval)
        self.trees = int(settings.learner_trees)
        self.last_fit: dict[int, float] = {}
        self.n_fits: dict[int, int] = {}
        self.choice: dict[int, tuple[str, int, str]] = {}
        self.alpha, self.mu = float(settings.alpha), float(settings.mu)
        self.seen: dict[int, int] = {}
        self.seed = int(settings.seed)
        self.samples: dict[int, OrderedDict[str, tuple[list[float], int, int]]] = {}
        self.new: dict[int, int] = {}
        self.versions: dict[int, int] = {}
        self.fitting: dict[int, asyncio.Task] = {}
        self.timers: dict[int, object] = {}
        self.draining = False
        self.error: BaseException | None = None
        Stream.__init__(self, upstream, ensure_io_loop=True, **kwargs)

    def update(self, x: list[Record], who=None, metadata=None):
        if self.error is not None:
            raise RuntimeError("a model fit failed earlier") from self.error
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
            store = self.samples.setdefault(T_obs, OrderedDict())
            if store.pop(d.cid, None) is None:
                self.seen[T_obs] = self.seen.get(T_obs, 0) + 1
            store[d.cid] = (d.X, d.n_obs, d.n_tot)
            if len(store) > self.max_samples:
                store.popitem(last=False)
            self.new[T_obs] = self.new.get(T_obs, 0) + 1
        for T_obs in list(self.new):
            self._maybe_refit(T_obs)
        return self._emit(dead, metadata=metadata) if dead else None

    def _maybe_refit(self, T_obs: int) -> None:
        if self.draining:
            return
        if self.fitting or self.new.get(T_obs, 0) < self.every or len(self.samples[T_obs]) < 2:
            return  # one refit at a time, all windows together: the fits keep the rest of the cluster
        if time.monotonic() - self.last_fit.get(T_obs, -math.inf) >= self.interval:
            self._refit(T_obs)
        elif T_obs not in self.timers:
            wait = self.interval - (time.monotonic() - self.last_fit[T_obs])
            self.timers[T_obs] = self.loop.call_later(wait, self._timer, T_obs)

    def _timer(self, T_obs: int) -> None:
        self.timers.pop(T_obs, None)
        self._maybe_refit(T_obs)

    def _refit(self, T_obs: int) -> None:
        store = self.samples[T_obs]
        X = np.array([v[0] for v in store.values()], dtype=np.float64)
        n_obs = np.array([v[1] for v in store.values()], dtype=np.float64)
        n_true = np.array([v[2] for v in store.values()], dtype=np.float64)
        version = self.seen[T_obs]
        self.new[T_obs] = 0
        self.last_fit[T_obs] = time.monotonic()
        n_fits = self.n_fits[T_obs] = self.n_fits.get(T_obs, 0) + 1
        choice = None if (n_fits - 1) % SELECT_EVERY == 0 else self.choice.get(T_obs)
        future = self.client.submit(train_model, X, n_true, n_obs, self.trees, self.seed, choice, self.alpha,
                                    self.mu, pure=False, priority=-10)
        self.fitting[T_obs] = asyncio.ensure_future(self._publish(T_obs, version, future))

    async def _publish(self, T_obs: int, version: int, future) -> None:
        try:
            data, self.choice[T_obs] = await future
        except BaseException as exc:
            logger.exception("model fit for T_obs=%d failed", T_obs)
            self.error = exc
            raise
        finally:
            self.fitting.pop(T_obs, None)
        self.versions[T_obs] = version
        logger.info("model for T_obs=%d: version %d (%d bytes)", T_obs, version, len(data))
        self._emit([model_record(T_obs, version, data)])
        for other in sorted(self.new, key=lambda w: self.last_fit.get(w, -math.inf)):
            self._maybe_refit(other)

    @property
    def idle(self) -> bool:
        return not self.fitting and not self.timers

    async def drain(self) -> None:
        """Cancel the refits waiting for their interval and wait for the fits in progress (no new ones)."""
        self.draining = True
        for handle in self.timers.values():
            self.loop.remove_timeout(handle)
        self.timers.clear()
        while self.fitting:
            await asyncio.gather(*list(self.fitting.values()), return_exceptions=True)
        if self.error is not None:
            raise RuntimeError("a model fit failed") from self.error
