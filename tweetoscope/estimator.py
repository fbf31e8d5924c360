"""Estimator stage: ``cascade_series`` in, ``cascade_properties`` (parameters) out, fits on Dask.

Series are decoded here and fitted in chunks on the Dask cluster
(:mod:`streams.dask`); a series that cannot be fitted goes to
``cascade_series.dlq`` with the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from streamz import Stream

from estimators import ConvergenceWarning, fit_cascade
import streams.dask  # noqa: F401  (registers the submit_batches node)
from streams.records import Record

from .config import Settings
from .schemas import CASCADE_PROPERTIES, CASCADE_SERIES, Parameters, SchemaError, Serie, dlq_record, encode

__all__ = ["FitTask", "PackedSeries", "PackedFits", "pack_series", "decode_series", "fit_chunk", "encode_results", "estimator"]


@dataclass(slots=True)
class FitTask:
    """A decoded ``cascade_series`` message: events before ``T_obs`` (times relative to the post, s)."""

    cid: str
    msg: str
    T_obs: int
    times: np.ndarray
    marks: np.ndarray
    source: str


@dataclass(slots=True)
class PackedSeries:
    """A chunk of series as flat arrays (cheap to ship to a worker): series ``i`` has the events
    ``offsets[i]:offsets[i+1]`` of ``times``/``marks`` and the window ``T_obs[i]``."""

    offsets: np.ndarray
    times: np.ndarray
    marks: np.ndarray
    T_obs: np.ndarray


@dataclass(slots=True)
class PackedFits:
    """Fits of a packed chunk: ``params`` (k, 4) = p, beta, n_star, G1; ``n_obs``, ``n_supp``,
    ``converged`` (k,); ``errors`` maps a series' index to why it could not be fitted."""

    params: np.ndarray
    n_obs: np.ndarray
    n_supp: np.ndarray
    converged: np.ndarray
    errors: dict[int, str]


def pack_series(chunk: list[FitTask]) -> PackedSeries:
    sizes = [s.times.size for s in chunk]
    return PackedSeries(
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        times=np.concatenate([s.times for s in chunk]), marks=np.concatenate([s.marks for s in chunk]),
        T_obs=np.array([s.T_obs for s in chunk], dtype=np.float64),
    )


def decode_series(batch: list[Record]) -> tuple[list[FitTask], list[Record]]:
    series, dead = [], []
    for r in batch:
        try:
            d = CASCADE_SERIES.decode(r.value)
        except SchemaError as exc:
            dead.append(dlq_record(r, str(exc)))
            continue
        ev = np.array(d.tweets, dtype=np.float64)
        series.append(FitTask(d.cid, d.msg, d.T_obs, np.ascontiguousarray(ev[:, 0]), np.ascontiguousarray(ev[:, 1]),
                            d.source))
    return series, dead


def fit_chunk(chunk: PackedSeries, fit_kwargs: dict[str, Any]) -> PackedFits:
    """Fit every series of a packed chunk (runs on a Dask worker). Invalid series come back in ``errors``."""
    k = chunk.T_obs.size
    params = np.zeros((k, 4))
    n_obs = np.zeros(k, dtype=np.int64)
    n_supp = np.zeros(k)
    converged = np.zeros(k, dtype=bool)
    errors: dict[int, str] = {}
    o = chunk.offsets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(k):
            try:
                f = fit_cascade(chunk.times[o[i]:o[i + 1]], chunk.marks[o[i]:o[i + 1]], chunk.T_obs[i], **fit_kwargs)
            except ValueError as exc:
                errors[i] = str(exc)
                continue
            params[i] = (f.p if f.kernel == "exp" else f.kappa, f.beta, f.n_star, f.G1)
            n_obs[i], n_supp[i], converged[i] = f.n_obs, f.final_size - f.n_obs, f.converged
    return PackedFits(params, n_obs, n_supp, converged, errors)


def encode_results(done: tuple[list[FitTask], PackedFits]) -> list[Record]:
    """``parameters`` records of a fitted chunk; the series that could not be fitted go to the DLQ."""
    chunk, fits = done
    out = []
    for i, s in enumerate(chunk):
        error = fits.errors.get(i)
        if error is not None:
            value = Serie(cid=s.cid, msg=s.msg, T_obs=s.T_obs, tweets=list(zip(s.times.tolist(), s.marks.tolist())),
                          source=s.source)
            out.append(dlq_record(Record(CASCADE_SERIES.name, encode(value), s.cid.encode()), error))
            continue
        value = Parameters(cid=s.cid, msg=s.msg, n_obs=int(fits.n_obs[i]), n_supp=float(fits.n_supp[i]),
                           params=tuple(fits.params[i].tolist()), T_obs=s.T_obs, converged=bool(fits.converged[i]))
        out.append(Record(CASCADE_PROPERTIES.name, encode(value), str(s.T_obs).encode()))
    return out


def estimator(series: Stream, settings: Settings, client) -> tuple[Stream, Stream]:
    """The estimator's graph on a stream of ``cascade_series`` batches.

    Returns the output record stream and the Dask submission node (to drain it).
    """
    fit_kwargs = settings.fit_kwargs()
    decoded = series.map(decode_series, stream_name="estimator.decode")
    submit = decoded.pluck(0).filter(bool).submit_batches(
        client, _Fit(fit_kwargs), pack=pack_series, chunk_size=settings.fit_chunk, max_in_flight=settings.max_in_flight,
        stream_name="estimator.fit",
    )
    out = submit.map(encode_results)
    return out.union(decoded.pluck(1).filter(bool)), submit


class _Fit:
    """``fit_chunk`` with the fit settings bound (a plain class pickles cheaply for Dask)."""

    def __init__(self, fit_kwargs: dict[str, Any]):
        self.fit_kwargs = fit_kwargs

    def __call__(self, chunk: PackedSeries) -> PackedFits:
        return fit_chunk(chunk, self.fit_kwargs)
