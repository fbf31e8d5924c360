"""Learner stage: ``samples`` in, ``models`` out; one correction model per window, refitted on Dask.

Samples are kept per window, keyed by cascade (idempotent on ``(cid, T_obs)``:
a duplicate replaces its twin), at most ``learner_max_samples`` per window
(oldest dropped). Every ``learner_every`` new samples of a window the model of
that window is refitted on the Dask cluster (one fit at a time per window) and
published to ``models`` as a skops file whose version is the number of samples
it was trained on.
"""

from __future__ import annotations

import asyncio
import logging
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


def train_model(X: np.ndarray, n_true: np.ndarray, n_obs: np.ndarray, n_estimators: int, seed: int) -> bytes:
    """Fit the correction of one window and return its skops file (runs on a Dask worker)."""
    return dump_model(fit_forest(X, n_true, n_obs, n_estimators=n_estimators, random_state=seed))


@Stream.register_api()
class learn(Stream):
    """Streamz node: ``samples`` record batches in, ``models`` record batches out."""

    def __init__(self, upstream, settings: Settings, client, **kwargs):
        self.client = client
        self.every = int(settings.learner_every)
        self.max_samples = int(settings.learner_max_samples)
        self.trees = int(settings.forest_trees)
        self.seed = int(settings.seed)
        self.samples: dict[int, OrderedDict[str, tuple[list[float], int, int]]] = {}
        self.new: dict[int, int] = {}
        self.versions: dict[int, int] = {}
        self.fitting: dict[int, asyncio.Task] = {}
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
            store.pop(d.cid, None)
            store[d.cid] = (d.X, d.n_obs, d.n_tot)
            if len(store) > self.max_samples:
                store.popitem(last=False)
            self.new[T_obs] = self.new.get(T_obs, 0) + 1
        for T_obs, n in self.new.items():
            if n >= self.every and T_obs not in self.fitting and len(self.samples[T_obs]) >= 2:
                self._refit(T_obs)
        return self._emit(dead, metadata=metadata) if dead else None

    def _refit(self, T_obs: int) -> None:
        store = self.samples[T_obs]
        X = np.array([v[0] for v in store.values()], dtype=np.float64)
        n_obs = np.array([v[1] for v in store.values()], dtype=np.float64)
        n_true = np.array([v[2] for v in store.values()], dtype=np.float64)
        version = len(store) if len(store) > self.versions.get(T_obs, 0) else self.versions.get(T_obs, 0) + 1
        self.new[T_obs] = 0
        future = self.client.submit(train_model, X, n_true, n_obs, self.trees, self.seed, pure=False)
        self.fitting[T_obs] = asyncio.ensure_future(self._publish(T_obs, version, future))

    async def _publish(self, T_obs: int, version: int, future) -> None:
        try:
            data = await future
        except BaseException as exc:
            logger.exception("model fit for T_obs=%d failed", T_obs)
            self.error = exc
            raise
        finally:
            self.fitting.pop(T_obs, None)
        self.versions[T_obs] = version
        logger.info("model for T_obs=%d: version %d (%d bytes)", T_obs, version, len(data))
        self._emit([model_record(T_obs, version, data)])
        if self.new.get(T_obs, 0) >= self.every:
            self._refit(T_obs)

    @property
    def idle(self) -> bool:
        return not self.fitting

    async def drain(self) -> None:
        """Wait for the fits in progress (and the refits they trigger)."""
        while self.fitting:
            await asyncio.gather(*list(self.fitting.values()), return_exceptions=True)
        if self.error is not None:
            raise RuntimeError("a model fit failed") from self.error
