"""Predictor stage: joins parameters, sizes and models per ``(cid, T_obs)``.

- ``parameters`` for ``(cid, T_obs)``: the forecast ``n_obs + omega G1 / (1 - n_star)``
  with the current model of that window (``omega = 1`` before the first model), on
  ``forecasts``; an ``alert`` right away if it reaches the threshold — at ``T_obs``,
  not when the cascade ends.
- ``size`` for ``(cid, T_obs)`` once the parameters are known: a ``stat`` (the ARE of
  that forecast) and a ``sample`` for the learner.
- ``models``: the newest version per window is swapped in (after its signature, when a
  key is set, and a trial prediction were checked); alerts carry the version. A model
  file that cannot be used goes to ``models.dlq`` and the current model stays.

The join state is bounded: beyond ``capacity`` entries the oldest is dropped to
``cascade_properties.dlq`` ("join timed out"). Finished joins leave a marker (the
latest ``capacity`` of them), so that a duplicate of a finished join is ignored
rather than waiting for a twin that never comes.

The join state is a :class:`streams.state.StateStore`: on Kafka it is checkpointed to
the predictor's changelog (pending entries and markers, by input partition, each with
the offset of the last record applied to it), and a record read again after a restart
is recognised by its offset and ignored. A record whose forecast is not a finite number
(an overflowing feature) goes to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Collection, Iterable

import msgspec
import numpy as np
from streamz import Stream

from estimators.inference import predict_omega
from estimators.forecast import correction_features, forecast_size, omega_target
from streams.records import Record
from streams.state import Change, latest_entries

from .config import Settings
from .models import check_model, check_usable
from .schemas import (ALERTS, CASCADE_PROPERTIES, FORECASTS, MAX_VALUE, SAMPLES, STATS, Alert, Forecast, Parameters,
                      Sample, SchemaError, Size, Stat, dlq_record)

__all__ = ["predict_join"]

logger = logging.getLogger(__name__)

JoinKey = tuple[str, int]


class _Entry:
    __slots__ = ("params", "size", "forecast", "version", "offset", "partition")

    def __init__(self, partition: int = -1) -> None:
        self.params: Parameters | None = None
        self.size: Size | None = None
        self.forecast = 0.0
        self.version = 0
        self.offset = -1  # input offset of the last record applied (-1: not from Kafka)
        self.partition = partition


class _EntryRecord(msgspec.Struct, array_like=True, tag="j"):
    offset: int
    params: Parameters | None
    size: Size | None
    forecast: float
    version: int


class _DoneRecord(msgspec.Struct, array_like=True, tag="d"):
    offset: int


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(_EntryRecord | _DoneRecord).decode
_decode_key = msgspec.msgpack.Decoder(tuple[str, int]).decode

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
        self.model_key = settings.model_key.encode() if settings.model_key else None
        self.models: dict[int, tuple[int, object]] = {}
        self.state: OrderedDict[JoinKey, _Entry] = OrderedDict()
        self.done: OrderedDict[JoinKey, tuple[int, int]] = OrderedDict()  # finished joins: (partition, offset)
        self.properties = properties
        self.n_alerts = self.n_stats = self.n_evicted = self.n_duplicates = 0
        self._dirty: dict[int, dict[JoinKey, None]] = {}
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
        """Check and load each model file in a worker thread (a forest takes a while to load; the loop
        must not stall), then swap it in. A model the learner made in this process (the record's
        ``message``) is taken as it is, after its trial prediction. The batch's refs are held until
        every model of it is done."""
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
                    if version < 1:
                        raise SchemaError(f"version must be >= 1, got {version}")
                    if r.message is not None:  # made by the learner in this process: no file to load
                        model = await loop.run_in_executor(None, check_usable, r.message)  # tens of ms
                    else:
                        model = await loop.run_in_executor(None, check_model, r.value, r.headers, self.model_key)
                    self.swap_model(T_obs, version, model)
                except (SchemaError, ValueError, UnicodeDecodeError) as exc:
                    logger.warning("models record %d:%d refused: %s", r.partition, r.offset, exc)
                    dead.append(dlq_record(Record(r.topic, b"<model file>", r.key, partition=r.partition,
                                                  offset=r.offset), f"unusable model: {exc}", "model"))
            if dead:
                self._emit(dead, metadata=metadata)
        finally:
            self._release_refs(metadata)

    # --------------------------------------------------------------- properties

    def update(self, x: list[Record], who=None, metadata=None):
        if who is not self.properties:
            return self._on_models(x, metadata)
        out: list[Record] = []
        fresh: dict[int, list[tuple[JoinKey, _Entry]]] = defaultdict(list)
        touched: dict[JoinKey, None] = {}
        for r in x:
            try:
                d = CASCADE_PROPERTIES.decode(r.value)
                T_obs = d.T_obs if d.T_obs is not None else int((r.key or b"").decode())
            except (SchemaError, ValueError) as exc:
                out.append(dlq_record(r, str(exc)))
                continue
            key = (d.cid, T_obs)
            off = r.offset
            entry = self.state.get(key)
            if entry is None:
                done = self.done.get(key)
                if done is not None:  # a finished join: a replay (or a duplicate) of one of its records
                    self.n_duplicates += 1
                    continue
                entry = self.state[key] = _Entry(r.partition)
            elif 0 <= off <= entry.offset:
                self.n_duplicates += 1
                continue  # read again after a restart: already applied
            if type(d) is Parameters:
                if entry.params is not None:
                    self.n_duplicates += 1
                    continue
                entry.params = d
                fresh[T_obs].append((key, entry))
            else:
                if entry.size is not None:
                    self.n_duplicates += 1
                    continue
                entry.size = d
            entry.offset = max(entry.offset, off)
            touched[key] = None
        for T_obs, items in fresh.items():
            self._forecast(T_obs, items, out)
        finished: list[tuple[JoinKey, _Entry]] = []
        for key in touched:
            entry = self.state.get(key)
            if entry is None:
                continue
            if entry.params is not None and entry.size is not None:
                del self.state[key]
                finished.append((key, entry))
                self._mark_done(key, entry)
            self._touch(key, entry.partition)
        if finished:
            self._finish(finished, out)
        while len(self.state) > self.capacity:
            key, entry = self.state.popitem(last=False)
            self.n_evicted += 1
            missing = "parameters" if entry.params is None else "size"
            value = entry.size if entry.size is not None else entry.params
            out.append(dlq_record(CASCADE_PROPERTIES.record(value), f"join timed out: no {missing} for {key}",
                                  "join-timeout"))
            self._mark_done(key, entry)
        return self._emit(out, metadata=metadata) if out else None

    def _mark_done(self, key: JoinKey, entry: _Entry) -> None:
        self.done[key] = (entry.partition, entry.offset)
        self._touch(key, entry.partition)
        while len(self.done) > self.capacity:
            old, (part, _) = self.done.popitem(last=False)
            self._touch(old, part)  # written as a deletion

    def _touch(self, key: JoinKey, partition: int) -> None:
        if partition >= 0:
            self._dirty.setdefault(partition, {})[key] = None

    def _forecast(self, T_obs: int, items: list, out: list[Record]) -> None:
        params = np.array([e.params.params for _, e in items], dtype=np.float64)  # estimators.forecast.message_params
        n_obs = np.array([e.params.n_obs for _, e in items], dtype=np.float64)
        version, model = self.models.get(T_obs, (0, None))
        series = [e.params.series or (np.nan,) * 3 for _, e in items]  # unknown in course-format parameters
        X = correction_features(params, n_obs, series)
        omega = np.ones(len(items)) if model is None else predict_omega(model, X)
        n_star, G1 = params[:, 2], params[:, 3]
        forecast = forecast_size(n_obs, G1, n_star, omega)
        bad = ~(np.isfinite(forecast) | (n_star >= 1))
        for (key, e), n_hat, n, ns, g1, b in zip(items, forecast.tolist(), n_obs.tolist(), n_star.tolist(),
                                                G1.tolist(), bad.tolist()):
            if b:  # an overflowing feature or correction: the record cannot be used
                del self.state[key]
                out.append(dlq_record(CASCADE_PROPERTIES.record(e.params),
                                      f"forecast is not a finite number (n_obs={n}, G1={g1}, n*={ns})", "forecast"))
                self._mark_done(key, e)
                continue
            e.forecast, e.version = n_hat, version
            alert = n_hat >= self.threshold
            if alert:
                self.n_alerts += 1
                out.append(ALERTS.record(Alert(cid=key[0], msg=e.params.msg, T_obs=T_obs, n_tot=n_hat, n_obs=int(n),
                                               model_version=version)))
            out.append(FORECASTS.record(Forecast(cid=key[0], T_obs=T_obs, n_tot=n_hat if n_hat < np.inf else None,
                                                 n_obs=int(n), n_star=ns, G1=g1, model_version=version, alert=alert,
                                                 msg=e.params.msg)))

    def _finish(self, joins: list[tuple[JoinKey, _Entry]], out: list[Record]) -> None:
        """The stat of each completed join and, where its fit allows one, its training sample (the
        targets computed for all the joins at once)."""
        n_tot = np.array([e.size.n_tot for _, e in joins], dtype=np.float64)
        fits = np.array([(e.params.n_obs, *e.params.params[2:]) for _, e in joins], dtype=np.float64).reshape(-1, 3)
        n_obs, n_star, G1 = fits.T
        omega = omega_target(n_tot, n_obs, n_star, G1)
        with np.errstate(invalid="ignore"):
            usable = (G1 > 0) & (n_star < 1) & (np.abs(omega) <= MAX_VALUE)  # False for NaN
        self.n_stats += len(joins)
        for ((cid, T_obs), e), w, ok in zip(joins, omega.tolist(), usable.tolist()):
            n = e.size.n_tot
            out.append(STATS.record(Stat(cid=cid, T_obs=T_obs, ARE=abs(e.forecast - n) / n, n_hat=e.forecast,
                                         n_tot=n, model_version=e.version)))
            if ok:
                _, b, ns, g1 = e.params.params
                out.append(SAMPLES.record(Sample(cid=cid, X=(b, ns, g1), W=w, T_obs=T_obs, n_obs=e.params.n_obs,
                                                 n_tot=n, series=e.params.series)))

    # ------------------------------------------------------------- StateStore

    def snapshot(self, partitions: Collection[int] | None = None) -> list[Change]:
        out: list[Change] = []
        for p in list(self._dirty) if partitions is None else partitions:
            for key in self._dirty.pop(p, {}):
                entry = self.state.get(key)
                if entry is not None:
                    value = _encode(_EntryRecord(entry.offset, entry.params, entry.size, entry.forecast, entry.version))
                elif (done := self.done.get(key)) is not None:
                    value = _encode(_DoneRecord(done[1]))
                else:
                    value = None
                out.append((p, _encode(key), value))
        return out

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        latest = latest_entries(records, _decode_record)
        for raw, rec in sorted(latest.items(), key=lambda kv: kv[1].offset):
            key = _decode_key(raw)
            if isinstance(rec, _DoneRecord):
                self.done[key] = (partition, rec.offset)
                continue
            entry = self.state[key] = _Entry(partition)
            entry.offset, entry.params, entry.size = rec.offset, rec.params, rec.size
            entry.forecast, entry.version = rec.forecast, rec.version
        return sum(1 for e in self.state.values() if e.partition == partition)

    def drop(self, partitions: Collection[int]) -> None:
        parts = set(partitions)
        for key in [k for k, e in self.state.items() if e.partition in parts]:
            del self.state[key]
        for key in [k for k, (p, _) in self.done.items() if p in parts]:
            del self.done[key]
        for p in parts:
            self._dirty.pop(p, None)

    def committed(self, partition: int, offset: int) -> None:
        """Markers are bounded by ``join_capacity``: nothing to prune."""
