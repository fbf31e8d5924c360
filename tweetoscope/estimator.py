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

__all__ = ["FitTask", "FitResult", "decode_series", "fit_chunk", "encode_results", "estimator"]


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
class FitResult:
    """A fit of one series, or the reason it failed (``error``)."""

    serie: FitTask
    params: tuple[float, float, float, float] | None  # p, beta, n_star, G1
    n_obs: int
    n_supp: float
    converged: bool
    error: str | None = None


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


def fit_chunk(chunk: list[FitTask], fit_kwargs: dict[str, Any]) -> list[FitResult]:
    """Fit every series of a chunk (runs on a Dask worker). Invalid series come back with ``error``."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for s in chunk:
            try:
                f = fit_cascade(s.times, s.marks, s.T_obs, **fit_kwargs)
            except ValueError as exc:
                out.append(FitResult(s, None, 0, 0.0, False, str(exc)))
                continue
            out.append(FitResult(s, (f.p if f.kernel == "exp" else f.kappa, f.beta, f.n_star, f.G1), f.n_obs,
                                 f.final_size - f.n_obs, f.converged))
    return out


def encode_results(results: list[FitResult]) -> list[Record]:
    out = []
    for r in results:
        s = r.serie
        if r.error is not None:
            value = Serie(cid=s.cid, msg=s.msg, T_obs=s.T_obs, tweets=list(zip(s.times.tolist(), s.marks.tolist())),
                                 source=s.source)
            out.append(dlq_record(Record(CASCADE_SERIES.name, encode(value), s.cid.encode()), r.error))
            continue
        value = Parameters(cid=s.cid, msg=s.msg, n_obs=r.n_obs, n_supp=r.n_supp, params=r.params, T_obs=s.T_obs,
                           converged=r.converged)
        out.append(Record(CASCADE_PROPERTIES.name, encode(value), str(s.T_obs).encode()))
    return out


def estimator(series: Stream, settings: Settings, client) -> tuple[Stream, Stream]:
    """The estimator's graph on a stream of ``cascade_series`` batches.

    Returns the output record stream and the Dask submission node (to drain it).
    """
    fit_kwargs = settings.fit_kwargs()
    decoded = series.map(decode_series, stream_name="estimator.decode")
    submit = decoded.pluck(0).filter(bool).submit_batches(
        client, _Fit(fit_kwargs), chunk_size=settings.fit_chunk, max_in_flight=settings.max_in_flight,
        stream_name="estimator.fit",
    )
    out = submit.map(encode_results)
    return out.union(decoded.pluck(1).filter(bool)), submit


class _Fit:
    """``fit_chunk`` with the fit settings bound (a plain class pickles cheaply for Dask)."""

    def __init__(self, fit_kwargs: dict[str, Any]):
        self.fit_kwargs = fit_kwargs

    def __call__(self, chunk: list[FitTask]) -> list[FitResult]:
        return fit_chunk(chunk, self.fit_kwargs)
