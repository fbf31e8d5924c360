"""Predictor stage: joins parameters, sizes and models per ``(cid, T_obs)``.

- ``parameters`` for ``(cid, T_obs)``: the forecast ``n_obs + omega G1 / (1 - n_star)``
  with the current model of that window (``omega = 1`` before the first model), on
  ``forecasts``; an ``alert`` right away if it reaches the threshold — at ``T_obs``,
  not when the cascade ends.
- ``size`` for ``(cid, T_obs)`` once the parameters are known: a ``stat`` (the ARE of
  that forecast) and a ``sample`` for the learner.
- ``models``: the newest version per window is swapped in; alerts carry the version.

The join state is bounded: beyond ``capacity`` entries the oldest is dropped to
``cascade_properties.dlq`` ("join timed out") and its offsets released. An
entry keeps the refs of the input batches it came from until its outputs have
been emitted (at-least-once). Duplicates of a key still in the state are
ignored; consumers are idempotent on ``(cid, T_obs)`` for the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict

import numpy as np
from streamz import Stream

from estimators.correction import predict_omega
from streams.records import Record

from .config import Settings
from .models import load_model
from .schemas import (ALERTS, CASCADE_PROPERTIES, FORECASTS, SAMPLES, STATS, Alert, Forecast, Parameters, Sample,
                      SchemaError, Stat, dlq_record)

__all__ = ["predict_join"]

logger = logging.getLogger(__name__)


class _Entry:
    __slots__ = ("params", "size", "refs", "forecast", "version")

    def __init__(self) -> None:
        self.params: Parameters | None = None
        self.size: object | None = None
        self.refs: list[dict] = []
        self.forecast = 0.0
        self.version = 0


@Stream.register_api()
class predict_join(Stream):
    """Streamz node with two upstreams: ``cascade_properties`` batches and ``models`` batches.

    Emits lists of ``forecasts``, ``alerts``, ``stats``, ``samples`` and dead-letter records.
    ``models`` maps ``T_obs`` to ``(version, model)``.
    """

    def __init__(self, properties: Stream, models: Stream, settings: Settings, **kwargs):
        self.threshold = float(settings.alert_threshold)
        self.capacity = int(settings.join_capacity)
        self.windows = set(settings.windows)
        self.models: dict[int, tuple[int, object]] = {}
        self.state: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self.properties = properties
        self.n_alerts = self.n_stats = self.n_evicted = 0
        Stream.__init__(self, upstreams=[properties, models], **kwargs)

    # --------------------------------------------------------------- models

    def swap_model(self, T_obs: int, version: int, model: object) -> bool:
        """Use ``model`` for ``T_obs`` if it is newer than the current one."""
        current = self.models.get(T_obs)
        if current is not None and current[0] >= version:
            return False
        self.models[T_obs] = (version, model)
        logger.info("model for T_obs=%d now version %d", T_obs, version)
        return True

    def _on_models(self, batch: list[Record], metadata) -> list:
        """Load each model file in a worker thread (a forest takes a while to load; the loop must not
        stall), then swap it in. The batch's refs are held until every file of it is loaded."""
        self._retain_refs(metadata)
        return [asyncio.ensure_future(self._load(batch, metadata))]

    async def _load(self, batch: list[Record], metadata) -> None:
        loop = asyncio.get_running_loop()
        dead = []
        try:
            for r in batch:
                try:
                    if not r.key:
                        raise SchemaError("missing key: the window T_obs")
                    T_obs = int(r.key.decode())
                    version = int(r.headers.get("version", ""))
                    model = await loop.run_in_executor(None, load_model, r.value)
                    self.swap_model(T_obs, version, model)
                except (SchemaError, ValueError) as exc:
                    dead.append(dlq_record(Record(r.topic, b"<model file>", r.key), f"unusable model: {exc}"))
            if dead:
                self._emit(dead, metadata=metadata)
        finally:
            self._release_refs(metadata)

    # --------------------------------------------------------------- properties

    def update(self, x: list[Record], who=None, metadata=None):
        if who is not self.properties:
            return self._on_models(x, metadata)
        out: list[Record] = []
        finished: list[_Entry] = []
        fresh: dict[int, list[tuple[tuple[str, int], _Entry]]] = defaultdict(list)
        touched: dict[tuple[str, int], None] = {}
        for r in x:
            try:
                d = CASCADE_PROPERTIES.decode(r.value)
                T_obs = d.T_obs if d.T_obs is not None else int((r.key or b"").decode())
            except (SchemaError, ValueError) as exc:
                out.append(dlq_record(r, str(exc)))
                continue
            key = (d.cid, T_obs)
            touched[key] = None
            entry = self.state.get(key)
            if entry is None:
                entry = self.state[key] = _Entry()
            if type(d) is Parameters:
                if entry.params is not None:
                    continue  # duplicate
                entry.params = d
                fresh[T_obs].append((key, entry))
            else:
                if entry.size is not None:
                    continue  # duplicate
                entry.size = d
            if metadata and (not entry.refs or entry.refs[-1] is not metadata[-1]):
                entry.refs.extend(metadata)
                self._retain_refs(metadata)
        for T_obs, items in fresh.items():
            self._forecast(T_obs, items, out)
        for key in touched:
            entry = self.state.get(key)
            if entry is not None and entry.params is not None and entry.size is not None:
                del self.state[key]
                self._finish(key, entry, out)
                finished.append(entry)
        while len(self.state) > self.capacity:
            key, entry = self.state.popitem(last=False)
            self.n_evicted += 1
            missing = "parameters" if entry.params is None else "size"
            value = entry.size if entry.size is not None else entry.params
            out.append(dlq_record(CASCADE_PROPERTIES.record(value), f"join timed out: no {missing} for {key}"))
            finished.append(entry)
        result = None
        if out:
            refs = {id(m): m for m in metadata or ()}
            for e in finished:
                for m in e.refs:
                    refs.setdefault(id(m), m)
            result = self._emit(out, metadata=list(refs.values()))
        for e in finished:
            self._release_refs(e.refs)
            e.refs = []
        return result

    def _forecast(self, T_obs: int, items: list, out: list[Record]) -> None:
        params = np.array([e.params.params for _, e in items], dtype=np.float64)  # p, beta, n_star, G1
        n_obs = np.array([e.params.n_obs for _, e in items], dtype=np.float64)
        version, model = self.models.get(T_obs, (0, None))
        if model is None:
            omega = np.ones(len(items))
        else:
            omega = predict_omega(model, np.column_stack([params[:, 1:4], n_obs]))
        n_star, G1 = params[:, 2], params[:, 3]
        with np.errstate(divide="ignore"):
            forecast = np.where(n_star < 1, n_obs + omega * G1 / (1.0 - n_star), np.inf)
        for (key, e), n_hat, n, ns, g1 in zip(items, forecast.tolist(), n_obs.tolist(), n_star.tolist(), G1.tolist()):
            e.forecast, e.version = n_hat, version
            alert = n_hat >= self.threshold
            if alert:
                self.n_alerts += 1
                out.append(ALERTS.record(Alert(cid=key[0], msg=e.params.msg, T_obs=T_obs, n_tot=n_hat, n_obs=int(n),
                                               model_version=version)))
            out.append(FORECASTS.record(Forecast(cid=key[0], T_obs=T_obs, n_tot=n_hat if n_hat < np.inf else None,
                                                 n_obs=int(n), n_star=ns, G1=g1, model_version=version, alert=alert,
                                                 msg=e.params.msg)))

    def _finish(self, key: tuple[str, int], e: _Entry, out: list[Record]) -> None:
        cid, T_obs = key
        n_tot = e.size.n_tot
        p, beta, n_star, G1 = e.params.params
        n_obs = e.params.n_obs
        self.n_stats += 1
        out.append(STATS.record(Stat(cid=cid, T_obs=T_obs, ARE=abs(e.forecast - n_tot) / n_tot, n_hat=e.forecast,
                                     n_tot=n_tot, model_version=e.version)))
        if G1 > 0 and n_star < 1:
            omega = (n_tot - n_obs) * (1.0 - n_star) / G1  # the learner's target (estimators.correction.omega_target)
            out.append(SAMPLES.record(Sample(cid=cid, X=(beta, n_star, G1), W=omega, T_obs=T_obs, n_obs=n_obs,
                                             n_tot=n_tot)))
