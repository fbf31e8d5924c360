"""Estimator stage: ``cascade_series`` in, ``cascade_properties`` (parameters) out, fits on Dask.

Series are decoded here and fitted in chunks on the Dask cluster
(:mod:`streams.dask`); a series that cannot be fitted goes to
``cascade_series.dlq`` with the reason.

Window series are fitted by MAP. With ``settings.empirical_prior`` the prior is learnt
from the collector's *final* series (whole cascades, fitted by maximum likelihood): once
``prior_min_cascades`` of them are in, and again after every ``learner_every`` more, the
prior becomes :func:`empirical_prior` of the last ``learner_max_samples``; until then it
is the configured (course) prior. Refits run on a Dask worker (:func:`learn_prior`), off the
stage's event loop: chunks packed meanwhile are fitted under the prior in use. With
``settings.marks == "learnt"`` the marks' law is learnt at the same moments from a uniform
sample (:data:`MARK_SAMPLE` per input partition) of the final series' marks
(:func:`tweetoscope.models.learn_mark_law`), and once more as soon as that sample first holds
enough marks to learn from (:data:`tweetoscope.models.MIN_MARKS`); every fit, and the prior,
then use it, and each new law goes to the ``marks`` topic for the learner. Final series
produce no other record.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from typing import Any

import msgspec
import numpy as np
from streamz import Stream

from estimators import ConvergenceWarning, LogNormalPrior, MarkLaw, fit_cascade, message_params
from estimators.forecast import series_features_packed
from estimators.prior import fit_prior
import streams.dask  # noqa: F401  (registers the submit_batches node)
from streams.dask import resilient_result
from streams.records import Record
from streams.state import Change, latest_entries

from .batch_lines import serie_record
from .batches import SeriesBatch
from .config import Settings
from .models import MIN_MARKS, learn_mark_law
from .schemas import (CASCADE_PROPERTIES, CASCADE_SERIES, MARKS, MAX_VALUE, Marks, Parameters, SchemaError,
                      SerieArrays, dlq_record, encode)

__all__ = ["PackedSeries", "PackedFits", "pack_series", "decode_series", "fit_chunk", "encode_results",
           "complete_fit_kwargs", "empirical_prior", "learn_prior", "PriorLearner", "estimator", "MARK_SAMPLE"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PackedSeries:
    """A chunk of series as flat arrays (cheap to ship to a worker): series ``i`` has the events
    ``offsets[i]:offsets[i+1]`` of ``times``/``marks``, the window ``T_obs[i]`` and ``final[i]``
    (a whole cascade, fitted by maximum likelihood). ``prior``: the prior of the MAP fits,
    ``mark_law``: the marks' law of every fit (``None``: the ones in the fit settings)."""

    offsets: np.ndarray
    times: np.ndarray
    marks: np.ndarray
    T_obs: np.ndarray
    final: np.ndarray
    prior: LogNormalPrior | None = None
    mark_law: MarkLaw | None = None


@dataclass(slots=True)
class PackedFits:
    """Fits of a packed chunk: ``params`` (k, 4) = :func:`estimators.forecast.message_params`; ``n_obs``, ``n_supp``,
    ``converged`` (k,); ``series`` (k, 3) = :func:`estimators.forecast.series_features_packed`; ``errors`` maps a
    series' index to why it could not be fitted."""

    params: np.ndarray
    n_obs: np.ndarray
    n_supp: np.ndarray
    converged: np.ndarray
    series: np.ndarray
    errors: dict[int, str]


def pack_series(chunk: list[SerieArrays], prior: LogNormalPrior | None = None,
                mark_law: MarkLaw | None = None) -> PackedSeries:
    sizes = [s.times.size for s in chunk]
    return PackedSeries(
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        times=np.concatenate([s.times for s in chunk]), marks=np.concatenate([s.marks for s in chunk]),
        T_obs=np.array([s.T_obs for s in chunk], dtype=np.float64), final=np.array([s.final for s in chunk], dtype=bool),
        prior=prior, mark_law=mark_law,
    )


def decode_series(batch: Sequence[Record]) -> tuple[list[SerieArrays], list[Record]]:
    """The series of a ``cascade_series`` batch, and the dead letters of the records that do not decode.
    A batch made by the collector in this process (a :class:`tweetoscope.batches.SeriesBatch`) carries
    its series as arrays: taken as they are (equal to what decoding gives; the list is the caller's)."""
    if type(batch) is SeriesBatch:
        return list(batch.arrays), []
    series, dead = [], []
    for r in batch:
        try:
            d = CASCADE_SERIES.decode(r.value)
        except SchemaError as exc:
            dead.append(dlq_record(r, str(exc)))
            continue
        ev = np.array(d.tweets, dtype=np.float64)
        series.append(SerieArrays(d.cid, d.T_obs, np.ascontiguousarray(ev[:, 0]), np.ascontiguousarray(ev[:, 1]),
                                  d.msg, d.source, d.start, d.final, r.partition))
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
    if chunk.mark_law is not None:
        fit_kwargs = {**fit_kwargs, "mark_law": chunk.mark_law}
    window_kw = fit_kwargs if chunk.prior is None or fit_kwargs.get("kernel", "exp") != "exp" else {
        **fit_kwargs, "prior": chunk.prior}
    final_kw = {**fit_kwargs, "kernel": "exp", "prior": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(k):
            try:
                f = fit_cascade(chunk.times[o[i]:o[i + 1]], chunk.marks[o[i]:o[i + 1]], chunk.T_obs[i],
                                **(final_kw if chunk.final[i] else window_kw))
            except Exception as exc:  # noqa: BLE001 - whatever a hostile series makes the fit raise
                errors[i] = str(exc) if isinstance(exc, ValueError) else f"fit failed: {type(exc).__name__}: {exc}"
                continue
            params[i] = message_params(f)
            n_obs[i], n_supp[i], converged[i] = f.n_obs, f.final_size - f.n_obs, f.converged
    series = series_features_packed(chunk.times, chunk.marks, o, chunk.T_obs)  # those of the errors unused
    return PackedFits(params, n_obs, n_supp, converged, series, errors)




def encode_results(done: tuple[list[SerieArrays], PackedFits]) -> list[Record]:
    """``parameters`` records of a fitted chunk; the series that could not be fitted (or whose fit is
    not finite) go to the DLQ with the reason."""
    chunk, fits = done
    out = []
    params = np.asarray(fits.params, dtype=np.float64).reshape(len(chunk), 4)
    series = np.asarray(fits.series, dtype=np.float64).reshape(len(chunk), 3)
    with np.errstate(invalid="ignore"):  # checked for the whole chunk at once (NaN compares False)
        usable = ((np.abs(params) <= MAX_VALUE) & (params >= 0)).all(axis=1) & (params[:, 1] > 0)
        stats_ok = ((series >= 0) & (series <= MAX_VALUE)).all(axis=1)
    for i, (s, p, ok, st, st_ok, n_obs, n_supp, conv) in enumerate(zip(
            chunk, params.tolist(), usable.tolist(), series.tolist(), stats_ok.tolist(), fits.n_obs.tolist(),
            fits.n_supp.tolist(), fits.converged.tolist())):
        error = fits.errors.get(i)
        if error is None and not ok:
            error = f"fit gave parameters out of range: {p}"
        if error is not None:
            out.append(dead_series(s, error))
            continue
        value = Parameters(cid=s.cid, msg=s.msg, n_obs=int(n_obs), n_supp=n_supp if abs(n_supp) <= MAX_VALUE else None,
                           params=tuple(p), T_obs=s.T_obs, converged=bool(conv), series=tuple(st) if st_ok else None)
        out.append(Record(CASCADE_PROPERTIES.name, encode(value), str(s.T_obs).encode()))
    return out


def dead_series(s: SerieArrays, reason: str) -> Record:
    """The ``cascade_series.dlq`` record of a series that could not be fitted: its message, where it was read."""
    r = serie_record(s)
    r.partition = s.partition
    return dlq_record(r, reason, "fit")


def complete_fit_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of :func:`estimators.fit_cascade` for a whole cascade: exponential kernel, no prior."""
    return {**settings.fit_kwargs(), "kernel": "exp", "prior": None, "max_n_star": settings.max_n_star}


def empirical_prior(p: np.ndarray, beta: np.ndarray, sizes: np.ndarray, settings: Settings,
                    mark_law: MarkLaw | None = None) -> LogNormalPrior:
    """The prior on ``(p, beta)`` learnt from complete cascades (:func:`estimators.prior.fit_prior`).

    ``p``, ``beta``: maximum-likelihood estimates on whole cascades
    (:func:`complete_fit_kwargs`), ``sizes``: their final sizes, shape (n,) each. The
    smallest size is taken as the sample's selection threshold; ``mark_law`` (default the
    settings') is the law the estimates were fitted under. The settings' prior with fewer than
    ``prior_min_cascades`` usable estimates.
    """
    p, beta, sizes = (np.asarray(a, dtype=np.float64) for a in (p, beta, sizes))
    ok = np.isfinite(p) & np.isfinite(beta)
    if not settings.empirical_prior or ok.sum() < settings.prior_min_cascades:
        return settings.prior
    try:
        return fit_prior(p[ok], beta[ok], mark_law=mark_law or settings.mark_law, max_n_star=settings.max_n_star,
                         min_size=float(np.min(sizes[ok])))
    except ValueError:  # too many estimates on the bounds
        return settings.prior


def learn_prior(fits: np.ndarray, marks: np.ndarray | None, settings: Settings,
                mark_law: MarkLaw) -> tuple[LogNormalPrior, MarkLaw]:
    """The prior and the marks' law learnt from whole cascades (a refit of :class:`PriorLearner`;
    runs on a Dask worker).

    ``fits``: shape (n, 3), each row ``(p, beta, size)`` of a whole cascade's maximum-likelihood
    fit; ``marks``: a sample of the marks (followers) of whole cascades, or None to keep
    ``mark_law``, the law in use. Returns ``(prior, law)``: the law learnt from ``marks``
    (:func:`tweetoscope.models.learn_mark_law`) and :func:`empirical_prior` under it.
    """
    law = mark_law if marks is None else learn_mark_law(marks, settings.mark_law)
    fits = np.asarray(fits, dtype=np.float64).reshape(-1, 3)
    return empirical_prior(fits[:, 0], fits[:, 1], fits[:, 2], settings, law), law


class PriorLearner:
    """The estimator's state: the fits of whole cascades and the prior learnt from them.

    ``pack`` binds the current prior to each chunk of series; ``encode`` turns fitted
    chunks into records and keeps the final fits (``p``, ``beta``, size) by cascade id
    (a replayed final serie replaces its twin), at most ``learner_max_samples`` per input
    partition, refitting the prior after every ``learner_every`` new ones.

    With ``settings.marks == "learnt"`` it also keeps a uniform sample of the final series'
    marks, at most :data:`MARK_SAMPLE` per input partition (reservoir sampling, so that each
    event counts alike), learns the marks' law from it at each refit of the prior (before
    the prior, which is fitted under it), binds it to each chunk, and emits each new law as a
    ``marks`` record.

    It is a :class:`streams.state.StateStore` (without a barrier: it only accumulates
    statistics): each partition's fits and marks are checkpointed to the estimator's
    changelog, so that a restarted estimator, or the one that takes a partition over, starts
    from the prior and the marks' law learnt so far instead of the course's. A crash may lose
    the final series of the last checkpoint interval from these samples, never an output.
    """

    def __init__(self, settings: Settings, client=None, emit: Callable[[list[Record]], Any] | None = None):
        self.settings = settings
        self.client = client     # refits on its cluster (else here, synchronously)
        self.emit = emit         # where new laws go at once (else: with the next encode's output)
        self._refit_task: asyncio.Task | None = None
        self._marks_at_refit = 0  # marks in the sample at the last refit
        self._refit_again = False
        self.fits: dict[int, OrderedDict[str, tuple[float, float, int]]] = {}
        self.prior: LogNormalPrior = settings.prior
        self.new = 0
        self.updates = 0
        self._dirty: set[int] = set()
        self._stale = False  # fits restored since the last refit
        self.learn_marks = settings.marks == "learnt"
        self.mark_law: MarkLaw = settings.mark_law
        self.marks: dict[int, np.ndarray] = {}   # partition -> sample of marks (followers)
        self.marks_seen: dict[int, int] = {}     # partition -> marks offered to its sample
        self._rng = np.random.default_rng(settings.seed)
        self._law_records: list[Record] = []     # new laws not emitted yet

    def pack(self, chunk: list[SerieArrays]) -> PackedSeries:
        """The chunk with the prior to fit it under (refitted first if fits were restored meanwhile)."""
        if self._stale:
            self._stale = False
            if self.n_fits >= self.settings.prior_min_cascades:
                self.refit()
        return pack_series(chunk, self.prior if self.settings.empirical_prior else None,
                           self.mark_law if self.learn_marks else None)

    @property
    def n_fits(self) -> int:
        return sum(len(f) for f in self.fits.values())

    def encode(self, done: tuple[list[SerieArrays], PackedFits]) -> list[Record]:
        chunk, fits = done
        finals = [i for i, s in enumerate(chunk) if s.final and i not in fits.errors]
        for i in finals:
            s = chunk[i]
            store = self.fits.setdefault(s.partition, OrderedDict())
            store.pop(s.cid, None)
            store[s.cid] = (float(fits.params[i, 0]), float(fits.params[i, 1]), s.times.size)
            while len(store) > self.settings.learner_max_samples:
                store.popitem(last=False)
            if s.partition >= 0:
                self._dirty.add(s.partition)
        if self.learn_marks:
            self._offer_marks([chunk[i] for i in finals])
        self.new += len(finals)
        if finals and self.n_fits >= self.settings.prior_min_cascades and (
                self.updates == 0 or self.new >= self.settings.learner_every or self._law_learnable()):
            self.refit()
        laws, self._law_records = self._law_records, []
        if not finals:
            return laws + encode_results(done)
        keep = [i for i, s in enumerate(chunk) if not (s.final and i not in fits.errors)]
        return laws + encode_results(([chunk[i] for i in keep], _select(fits, keep)))

    def _offer_marks(self, series: list[SerieArrays]) -> None:
        """Offer the marks of final ``series`` to their partitions' samples, one offer per run of
        consecutive series of one partition: the same draws, in the same order, as one offer per
        series (the sampling is sequential), at a fraction of the calls."""
        for partition, run in groupby(series, key=lambda s: s.partition):
            marks = [s.marks for s in run]
            self._sample_marks(partition, marks[0] if len(marks) == 1 else np.concatenate(marks))

    def _sample_marks(self, partition: int, marks: np.ndarray) -> None:
        """Offer a final series' marks to the partition's reservoir (Vitter's algorithm R, vectorised)."""
        sample = self.marks.get(partition, np.empty(0))
        seen = self.marks_seen.get(partition, 0)
        room = max(MARK_SAMPLE - sample.size, 0)
        sample = np.concatenate([sample, marks[:room]])
        rest = marks[room:]
        if rest.size:
            # the k-th mark offered overall replaces a uniform slot with probability MARK_SAMPLE / k
            k = seen + room + 1 + np.arange(rest.size)
            slot = (self._rng.random(rest.size) * k).astype(np.int64)
            hit = slot < MARK_SAMPLE
            sample[slot[hit]] = rest[hit]   # later hits overwrite earlier ones, as in the sequential algorithm
        self.marks[partition] = sample
        self.marks_seen[partition] = seen + marks.size
        if partition >= 0:
            self._dirty.add(partition)

    def _law_learnable(self) -> bool:
        """Whether the marks sample now holds enough marks to learn the law from, and did not at the last refit
        (so that a law is learnt as soon as it can be, not ``learner_every`` cascades later)."""
        return self.learn_marks and self._marks_at_refit < MIN_MARKS <= self._n_marks()

    def _n_marks(self) -> int:
        return sum(m.size for m in self.marks.values())

    def refit(self) -> None:
        """Learn the prior (and the marks' law) again from the fits (and marks) kept so far.

        With a Dask client, the refit runs on a worker (:func:`learn_prior`: 10-100 ms of numerics
        that would otherwise hold the stage's event loop); chunks packed meanwhile keep the current
        prior, and a refit asked for while one runs starts when it ends, on the samples as they
        are then. Without one, it runs here before this call returns."""
        fits = np.array([v for store in self.fits.values() for v in store.values()], dtype=np.float64)
        marks = np.concatenate(list(self.marks.values())) if self.learn_marks and self.marks else None
        self._marks_at_refit = 0 if marks is None else marks.size
        self.new = 0
        if self.client is None:
            self._apply(*learn_prior(fits, marks, self.settings, self.mark_law), len(fits))
        elif self._refit_task is not None:
            self._refit_again = True
        else:
            self._refit_task = asyncio.ensure_future(self._refit_on_dask(fits, marks))

    async def _refit_on_dask(self, fits: np.ndarray, marks: np.ndarray | None) -> None:
        args = (fits, marks, self.settings, self.mark_law)

        def submit():
            return self.client.submit(learn_prior, *args, pure=False)

        try:
            try:
                prior, law = await resilient_result(self.client, submit(), submit, retries=1,
                                                    retry_timeout=self.settings.dask_timeout)
            except Exception as exc:  # the stage goes on under the prior it has
                logger.error("refit of the prior from %d whole cascades failed: %r; keeping %s", len(fits), exc,
                             self.prior)
            else:
                self._apply(prior, law, len(fits))
                laws, self._law_records = self._law_records, []
                if laws and self.emit is not None:
                    out = self.emit(laws)
                    if inspect.isawaitable(out):  # the sinks' back-pressure
                        await out
        finally:
            self._refit_task = None
        if self._refit_again:
            self._refit_again = False
            self.refit()

    def _apply(self, prior: LogNormalPrior, law: MarkLaw, cascades: int) -> None:
        if self.learn_marks and law != self.mark_law:
            self.mark_law = law
            self._law_records.append(MARKS.record(Marks(cascades=cascades, body=list(law.body), tail=law.tail,
                                                        alpha=law.alpha, mu=law.mu)))
            logger.info("marks' law learnt from %d whole cascades: %s", cascades, law)
        self.prior = prior
        self.updates += 1
        logger.info("prior on (p, beta) learnt from %d whole cascades: %s", cascades, prior)

    @property
    def idle(self) -> bool:
        """No refit of the prior running."""
        return self._refit_task is None

    async def drain(self) -> None:
        """Wait until no refit of the prior is running (its law emitted)."""
        while self._refit_task is not None:
            await asyncio.shield(self._refit_task)

    # ------------------------------------------------------------- StateStore

    def snapshot(self, partitions: Collection[int] | None = None) -> list[Change]:
        parts = set(self._dirty) if partitions is None else set(partitions) & self._dirty
        self._dirty -= parts
        out = [(p, b"fits", _encode_fits([(cid, *v) for cid, v in self.fits.get(p, {}).items()])) for p in parts]
        if self.learn_marks:
            out += [(p, b"marks", _encode_marks((self.marks_seen.get(p, 0), self.marks.get(p, np.empty(0)).tobytes())))
                    for p in parts]
        return out

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Take the partition's fits back; the prior is refitted once, before the next chunk is packed
        (not once per restored partition)."""
        store = self.fits[partition] = OrderedDict()
        latest = latest_entries(records, _decode_any)
        for cid, p, beta, size in _decode_fits(latest[b"fits"]) if b"fits" in latest else ():
            store[cid] = (p, beta, size)
        if self.learn_marks and b"marks" in latest:
            seen, raw = _decode_marks(latest[b"marks"])
            self.marks[partition] = np.frombuffer(raw, dtype=np.float64).copy()
            self.marks_seen[partition] = seen
        self._stale = True
        return len(store)

    def drop(self, partitions: Collection[int]) -> None:
        for p in partitions:
            self.fits.pop(p, None)
            self.marks.pop(p, None)
            self.marks_seen.pop(p, None)
            self._dirty.discard(p)

    def committed(self, partition: int, offset: int) -> None:
        pass


_encode_fits = msgspec.msgpack.Encoder().encode
_decode_fits = msgspec.msgpack.Decoder(list[tuple[str, float, float, int]]).decode
_encode_marks = msgspec.msgpack.Encoder().encode
_decode_marks = msgspec.msgpack.Decoder(tuple[int, bytes]).decode

#: Marks kept per input partition for learning the marks' law (``settings.marks == "learnt"``).
MARK_SAMPLE = 20_000


def _decode_any(raw: bytes) -> bytes:
    return raw


def _select(fits: PackedFits, keep: list[int]) -> PackedFits:
    where = {j: n for n, j in enumerate(keep)}
    return PackedFits(fits.params[keep], fits.n_obs[keep], fits.n_supp[keep], fits.converged[keep],
                      fits.series[keep], {where[i]: e for i, e in fits.errors.items() if i in where})


def estimator(series: Stream, settings: Settings, client) -> tuple[Stream, Stream]:
    """The estimator's graph on a stream of ``cascade_series`` batches.

    Returns the output record stream and the Dask submission node (to drain it).
    """
    fit_kwargs = settings.fit_kwargs()
    laws = Stream(stream_name="estimator.marks")
    state = PriorLearner(settings, client, emit=partial(laws.emit, asynchronous=True))
    decoded = series.map(decode_series, stream_name="estimator.decode")
    submit = decoded.pluck(0).filter(bool).submit_batches(
        client, _Fit(fit_kwargs), pack=state.pack, chunk_size=settings.fit_chunk, max_in_flight=settings.max_in_flight,
        retry_timeout=settings.dask_timeout, on_error=_dead_chunk, stream_name="estimator.fit",
    )
    submit.state = state
    out = submit.map(lambda done: done if isinstance(done, list) else state.encode(done))
    return out.union(decoded.pluck(1).filter(bool), laws), submit


def _dead_chunk(chunk: list[SerieArrays], exc: BaseException) -> list[Record]:
    """Dead letters of every series of a chunk whose task kept failing on the workers."""
    return [dead_series(s, f"fit task failed: {type(exc).__name__}: {exc}") for s in chunk]


class _Fit:
    """``fit_chunk`` with the fit settings bound (a plain class pickles cheaply for Dask)."""

    def __init__(self, fit_kwargs: dict[str, Any]):
        self.fit_kwargs = fit_kwargs

    def __call__(self, chunk: PackedSeries) -> PackedFits:
        return fit_chunk(chunk, self.fit_kwargs)
