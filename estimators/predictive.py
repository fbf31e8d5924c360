"""The law of a cascade's remaining size, and the forecast that minimises the expected ARE.

Under the marked exponential Hawkes model with marks of a :class:`~estimators.marks.MarkLaw`, the
events observed before ``T_obs`` still have ``Poisson(G1)`` direct children to come;
every future event has a mark ``m`` of that law and ``Poisson(p m)`` children of its own,
``p = n_star / E[m]``. Only counts matter, so the remaining size ``R`` is a compound
Poisson sum of Galton-Watson total progenies:

    R = T_1 + ... + T_K,   K ~ Poisson(G1),   T_i iid total progeny of one new event.

Its law depends on ``(n_star, G1)`` alone (given the marks' law), not on ``beta``.

The ARE ``|x - N| / N`` of a point forecast ``x`` of ``N = n_obs + R`` has its expected
value minimised by the ``1/N``-weighted median of the law of ``N``. The heavy right
tail of ``R`` puts that point well below the mean ``n_obs + G1 / (1 - n_star)``, which
is what :func:`are_optimal_size` returns instead. ``min_size`` conditions the law on
``N >= min_size`` (a dataset that only keeps cascades of at least that many events).

Method (exact up to truncation, no Monte Carlo):

* the offspring law ``P(xi = k) = E[Poisson(k; p m)]`` in closed form with upper
  incomplete gamma functions;
* the total progeny by the hitting-time theorem ``P(T = n) = P(S_n = n - 1) / n``
  (``S_n`` a sum of ``n`` offspring counts), all ``n <= TOTAL_TERMS`` at once from one FFT
  of the offspring law and one matrix product of its powers (5-15 ms a law), on a grid of
  ``n_star`` (step :data:`N_STAR_STEP`, cached per mark law, interpolated linearly between
  grid points);
* the compound Poisson law of ``R`` by FFT, ``pgf_R = exp(G1 (pgf_T - 1))``, on a
  length that grows with the expected remaining size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit
from scipy import special

from ._validation import check_positive
from .marks import COURSE_MARKS, MarkLaw

__all__ = ["offspring_pmf", "progeny_pmf", "progeny_tail", "remaining_size_pmf", "are_optimal_size",
           "are_optimal_omega"]

#: Grid step of n_star for the cached total-progeny laws.
N_STAR_STEP = 0.01
#: Largest total progeny of one event computed exactly; the rest of its mass is put at this size.
TOTAL_TERMS = 1024
#: Largest ``k`` for which :func:`progeny_tail` sums the head of the law directly (the prior's selection
#: weights ask for ``k`` = the smallest size of the whole cascades, 10 on the simulated sets).
HEAD_TERMS = 64
#: Largest FFT length for the remaining size (beyond it, the tail mass is kept as one atom).
MAX_LENGTH = 1 << 18


def offspring_pmf(p: float, alpha: float, mu: float, size: int) -> np.ndarray:
    """``P(xi = k)`` for ``k < size``: the number of children of one event, shape (size,).

    ``xi ~ Poisson(p m)`` with ``m`` Pareto(``alpha``, ``mu``):
    ``P(xi = k) = (alpha - 1) (p mu)**(alpha - 1) Gamma(k - alpha + 1, p mu) / k!``.
    """
    check_positive(p, "p")
    a = alpha - 1.0
    x = p * mu
    # computed up to the first k with k - a > 0 at least, where the downward recursion starts
    k = np.arange(max(size, math.floor(a) + 2), dtype=np.float64)
    s = k - a
    out = np.zeros(k.size)
    # Gamma(s, x) / k! for s > 0 from the regularised function, in log space
    pos = s > 0
    with np.errstate(divide="ignore"):
        out[pos] = np.exp(special.gammaln(s[pos]) - special.gammaln(k[pos] + 1.0)
                          + np.log(special.gammaincc(s[pos], x)))
    # s <= 0 (the first few k): Gamma(s, x) = (Gamma(s + 1, x) - x**s exp(-x)) / s, downwards
    first = int(np.argmax(pos))
    if first > 0:
        s0 = s[first]
        g = math.exp(special.gammaln(s0)) * special.gammaincc(s0, x)
        for j in range(first - 1, -1, -1):
            sj = s[j]
            g = float(special.exp1(x)) if sj == 0 else (g - x**sj * math.exp(-x)) / sj
            out[j] = g / math.factorial(j)
    return np.clip(a * x**a * out[:size], 0.0, None)


def _powers(x: np.ndarray, n: int) -> np.ndarray:
    """``x**1 .. x**n`` as rows, shape (n, x.size), each row the previous one times ``x`` (a loop over
    the rows: ``np.cumprod`` along axis 0 of a broadcast array loops over the columns, 1.75x slower
    here; the products agree to rounding, about 1e-16)."""
    out = np.empty((n, x.size), dtype=x.dtype)
    out[0] = x
    for k in range(1, n):
        np.multiply(out[k - 1], x, out=out[k])
    return out


@lru_cache(maxsize=512)
def _progeny_on_grid(i: int, mark_law: MarkLaw) -> np.ndarray:
    """``P(T = n)`` for ``n = 0 .. TOTAL_TERMS`` (the last entry holds the tail) at ``n_star = i * N_STAR_STEP``."""
    M = TOTAL_TERMS
    out = np.zeros(M + 1)
    n_star = i * N_STAR_STEP
    if n_star <= 0:
        out[1] = 1.0
        return out
    L = 2 * M                  # S_n >= L would wrap around; for n <= M its mass there is negligible
    f = mark_law.offspring_pmf(n_star / mark_law.mean, L)   # P(xi >= L) is negligible and dropped
    phi = np.fft.fft(f)                                    # pgf of xi at the L-th roots of unity
    # P(S_n = n - 1) = (1/L) sum_k phi_k**n w_k**(n-1), w_k = exp(2 pi i k / L): with psi = phi w and
    # n = j B + r, the sum is (psi**(jB) / w) @ psi**r, one (M/B, L) x (L, B) matrix product
    B = 32
    w = np.exp(2j * np.pi * np.arange(L) / L)
    psi = phi * w
    R = _powers(psi, B)                                            # row r - 1: psi**r
    Q = np.empty((M // B, L), dtype=np.complex128)                 # row j: psi**(jB) / w
    Q[0] = 1.0
    Q[1:] = _powers(R[-1], M // B - 1)
    Q *= w.conj()
    S_diag = (Q @ R.T).real.ravel() / L                            # entry n - 1: P(S_n = n - 1)
    n = np.arange(1, M + 1)
    out[1:M + 1] = np.clip(S_diag, 0.0, None) / n
    out[M] += max(1.0 - out.sum(), 0.0)                   # mass beyond TOTAL_TERMS, kept as one atom
    return out


def progeny_pmf(n_star: float, mark_law: MarkLaw = COURSE_MARKS) -> np.ndarray:
    """Law of the total progeny ``T`` of one new event (itself included), shape (TOTAL_TERMS + 1,).

    Entry ``n`` is ``P(T = n)``; the last entry also holds ``P(T > TOTAL_TERMS)``.
    Interpolated between the cached grid laws at multiples of :data:`N_STAR_STEP`.
    """
    if not 0.0 <= n_star < 1.0:
        raise ValueError(f"n_star must be in [0, 1), got {n_star}")
    if not isinstance(mark_law, MarkLaw):
        raise TypeError(f"mark_law must be a MarkLaw, got {type(mark_law).__name__}")
    lo, w = _grid_position(np.float64(n_star))
    f = _progeny_on_grid(int(lo), mark_law)
    if w > 0:
        f = (1.0 - w) * f + w * _progeny_on_grid(int(lo) + 1, mark_law)
    return f


def _grid_position(n_star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, w)``: the grid law below each ``n_star`` (index, ``n_star`` = index * N_STAR_STEP) and the
    weight of the next one in the linear interpolation (0 on a grid point); shapes of ``n_star``."""
    x = n_star / N_STAR_STEP
    lo = np.floor(x).astype(np.int64)
    w = x - lo
    return lo, np.where(w > 1e-12, w, 0.0)


@lru_cache(maxsize=1024)
def _progeny_head_on_grid(i: int, k: int, mark_law: MarkLaw) -> float:
    """``P(T < k)`` at ``n_star = i * N_STAR_STEP``, by the hitting-time theorem with explicit convolutions:
    ``P(S_n = n - 1)`` for ``n < k`` involves offspring counts below ``k`` only, so the offspring law
    truncated there gives it exactly (no FFT wrap-around), in ``k`` products of laws of length ``k``."""
    if k <= 1:
        return 0.0
    if i <= 0:
        return 1.0  # no children: T = 1
    f = mark_law.offspring_pmf(i * N_STAR_STEP / mark_law.mean, k)
    s, head = f, float(f[0])  # s: the law of S_n below k; n = 1: P(T = 1) = P(xi = 0)
    for n in range(2, k):
        s = np.convolve(s, f)[:k]
        head += s[n - 1] / n
    return head


def progeny_tail(n_star: np.ndarray, k: int, mark_law: MarkLaw = COURSE_MARKS) -> np.ndarray:
    """``P(T >= k)`` for the total progeny ``T`` of :func:`progeny_pmf`, element-wise over ``n_star``
    (values in [0, 1)); same shape. The same interpolation between grid laws, applied to their tails,
    so each grid law is summed once for all the cascades. Up to ``k =`` :data:`HEAD_TERMS`, a grid law's
    tail is ``1 - P(T < k)`` with the head summed exactly (:func:`_progeny_head_on_grid`, 0.1-0.3 ms)
    instead of taken from the whole law (4 ms under a learnt marks' law): the two differ by the whole
    law's FFT wrap-around, below 1e-7 (and tails below 1e-13 are lost in ``1 - P(T < k)``)."""
    ns = np.asarray(n_star, dtype=np.float64)
    if ns.size and not (np.all(ns >= 0.0) and np.all(ns < 1.0)):
        raise ValueError("n_star must be in [0, 1)")
    lo, w = _grid_position(ns)
    up = w > 0
    grid = np.unique(np.concatenate([lo.ravel(), lo[up] + 1]))
    if k <= HEAD_TERMS:
        tails = np.array([max(1.0 - _progeny_head_on_grid(int(i), k, mark_law), 0.0) for i in grid])
    else:
        tails = np.array([_progeny_on_grid(int(i), mark_law)[k:].sum() for i in grid])
    t_lo = tails[np.searchsorted(grid, lo)]
    t_hi = tails[np.minimum(np.searchsorted(grid, lo + 1), grid.size - 1)]  # used only where ``up``
    return np.where(up, (1.0 - w) * t_lo + w * t_hi, t_lo)


def remaining_size_pmf(n_star: float, G1: float, mark_law: MarkLaw = COURSE_MARKS,
                       length: int | None = None) -> np.ndarray:
    """Law of the number ``R`` of events still to come, ``P(R = r)`` for ``r < length``, shape (length,).

    The mass of ``R >= length`` is what the entries leave of 1. ``length`` defaults to
    a power of two well beyond the mean ``G1 / (1 - n_star)``.
    """
    if not (math.isfinite(G1) and G1 >= 0):
        raise ValueError(f"G1 must be finite and >= 0, got {G1}")
    fT = progeny_pmf(n_star, mark_law)
    if length is None:
        length = int(_law_length(np.float64(n_star), np.float64(G1)))
    if G1 == 0:
        out = np.zeros(length)
        out[0] = 1.0
        return out
    pR = np.fft.irfft(np.exp(G1 * (np.fft.rfft(_folded(fT, length)) - 1.0)), n=2 * length)
    return np.clip(pR[:length], 0.0, None)


def _folded(fT: np.ndarray, length: int) -> np.ndarray:
    """The progeny law ``fT`` folded at ``length`` (progenies of ``length`` or more: one atom at ``length``)
    and zero-padded to ``2 length``, so that sums passing ``length`` land in ``[length, 2 length)``,
    dropped after the inverse transform."""
    folded = np.zeros(2 * length)
    m = min(fT.size, length)
    folded[:m] = fT[:m]
    folded[length] += fT[m:].sum()
    return folded


def are_optimal_size(n_obs: float, n_star: float, G1: float, *, mark_law: MarkLaw = COURSE_MARKS,
                     min_size: float = 1.0) -> float:
    """The forecast of the final size ``N = n_obs + R`` with the least expected ARE.

    The ``1/N``-weighted median of the law of ``N`` given ``N >= min_size``: the
    smallest ``x`` with ``E[1{N <= x} / N] >= E[1 / N] / 2``. Returns ``inf`` if
    ``n_star >= 1``; ``max(n_obs, min_size)`` if nothing is left to come (``G1 == 0``).
    """
    check_positive(n_obs, "n_obs")
    if not math.isfinite(n_star) or n_star < 0:
        raise ValueError(f"n_star must be finite and >= 0, got {n_star}")
    if n_star >= 1.0:
        return math.inf
    if G1 <= 0:
        return float(max(n_obs, min_size))
    if not math.isfinite(G1):
        raise ValueError(f"G1 must be finite and >= 0, got {G1}")
    return float(_are_optimal_sizes(np.array([n_obs], dtype=np.float64), np.array([n_star], dtype=np.float64),
                                    np.array([G1], dtype=np.float64), mark_law, min_size)[0])


def are_optimal_omega(n_obs: np.ndarray, n_star: np.ndarray, G1: np.ndarray, *,
                      mark_law: MarkLaw = COURSE_MARKS, min_size: float = 1.0) -> np.ndarray:
    """:func:`are_optimal_size` as a correction ``omega`` (``(N - n_obs)(1 - n_star) / G1``), element-wise.

    Shape of the broadcast inputs; 0 where ``G1 <= 0`` or ``n_star >= 1``. The laws of the
    cascades are computed together (:func:`_are_optimal_sizes`), equal to :func:`are_optimal_size`'s.
    """
    n_obs, n_star, G1 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (n_obs, n_star, G1)))
    out = np.zeros(n_obs.shape)
    ok = (G1 > 0) & (n_star < 1)
    if ok.any():
        no, ns, g = n_obs[ok], n_star[ok], G1[ok]
        if not (np.all(no > 0) and np.all(np.isfinite(no)) and np.all(ns >= 0) and np.all(np.isfinite(g))):
            raise ValueError("n_obs must be finite and > 0, n_star >= 0 and G1 finite")
        x = _are_optimal_sizes(no, ns, g, mark_law, min_size)
        out[ok] = (x - no) * (1.0 - ns) / g
    return out


#: Most entries of the laws computed at once by :func:`_are_optimal_sizes` (rows x length), 16 MiB.
_BLOCK = 1 << 21


def _law_length(n_star: np.ndarray, G1: np.ndarray) -> np.ndarray:
    """:func:`remaining_size_pmf`'s default length for each cascade: a power of two well beyond the mean
    ``G1 / (1 - n_star)``, from 256 to :data:`MAX_LENGTH`; shape of the inputs."""
    mean = G1 / (1.0 - n_star)
    bits = np.ceil(np.log2(16.0 * mean + 64.0 * np.sqrt(mean + 1.0) + 64.0))
    return np.left_shift(1, np.clip(bits, 8, MAX_LENGTH.bit_length() - 1).astype(np.int64))


#: Longest law whose grid spectra are cached (a spectrum of length 2**14 is 256 KiB; longer ones, for the
#: rare cascades with a large expected remaining size, are computed each time).
_CACHED_LENGTH = 1 << 14


def _grid_spectrum(i: int, length: int, mark_law: MarkLaw) -> np.ndarray:
    """``rfft`` of the grid law ``i`` folded at ``length`` (its mass beyond as one atom at ``length``),
    zero-padded to ``2 length``: shape (length + 1,), complex. Cached up to :data:`_CACHED_LENGTH`."""
    if length <= _CACHED_LENGTH:
        return _cached_grid_spectrum(i, length, mark_law)
    return _fold_spectrum(i, length, mark_law)


def _fold_spectrum(i: int, length: int, mark_law: MarkLaw) -> np.ndarray:
    return np.fft.rfft(_folded(_progeny_on_grid(i, mark_law), length))


_cached_grid_spectrum = lru_cache(maxsize=256)(_fold_spectrum)


def _are_optimal_sizes(n_obs: np.ndarray, n_star: np.ndarray, G1: np.ndarray, mark_law: MarkLaw,
                       min_size: float) -> np.ndarray:
    """:func:`are_optimal_size` of cascades with ``G1 > 0`` and ``0 <= n_star < 1``, shape (n,) each.

    The law of the remaining size ``R`` is compound Poisson: ``pgf_R = exp(G1 (pgf_T - 1))``, with
    ``T`` the total progeny of one new event, interpolated linearly in ``n_star`` between grid laws.
    The Fourier transform is linear, so each grid law is transformed once per length
    (:func:`_grid_spectrum`, cached) and a cascade's spectrum is the same interpolation of two of
    them; cascades of the same length then share one inverse transform. The interpolation and the
    exponential (:func:`_compound_spectra`), and the weighted median (:func:`_weighted_medians`),
    are compiled loops over each row, without temporaries. Equal to :func:`remaining_size_pmf`
    followed by the weighted median, to rounding."""
    out = np.empty(n_obs.size)
    length = _law_length(n_star, G1)
    lo, w = _grid_position(n_star)
    hi = np.where(w > 0, lo + 1, lo)
    for size in np.unique(length):
        size = int(size)
        rows = np.flatnonzero(length == size)
        grid, where = np.unique(np.concatenate([lo[rows], hi[rows]]), return_inverse=True)
        S = np.stack([_grid_spectrum(int(i), size, mark_law) for i in grid])
        at_lo, at_hi = where[:rows.size], where[rows.size:]
        step = max(1, _BLOCK // size)
        for b in range(0, rows.size, step):
            blk = slice(b, b + step)
            r = rows[blk]
            E = np.empty((r.size, size + 1), dtype=np.complex128)
            _compound_spectra(S, at_lo[blk], at_hi[blk], w[r], G1[r], E)
            pR = np.fft.irfft(E, n=2 * size, axis=1)
            out[r] = _weighted_medians(pR, size, n_obs[r], float(min_size))
    return out


@njit(cache=True)
def _compound_spectra(S, at_lo, at_hi, w, G1, out):  # pragma: no cover  (compiled)
    """Row ``r`` of ``out`` (shape (n, m)): ``exp(G1[r] (F - 1))`` with ``F = (1 - w[r]) S[at_lo[r]] + w[r] S[at_hi[r]]``
    (just ``S[at_lo[r]]`` where ``w[r] == 0``), the pgf of the remaining size on the transform's grid."""
    for r in range(out.shape[0]):
        a = S[at_lo[r]]
        g = G1[r]
        wr = w[r]
        if wr > 0.0:
            b = S[at_hi[r]]
            for j in range(out.shape[1]):
                out[r, j] = np.exp(g * ((1.0 - wr) * a[j] + wr * b[j] - 1.0))
        else:
            for j in range(out.shape[1]):
                out[r, j] = np.exp(g * (a[j] - 1.0))


@njit(cache=True)
def _weighted_medians(pR, size, n_obs, min_size):  # pragma: no cover  (compiled)
    """For each row of ``pR`` (the law of ``R`` on its first ``size`` entries, negatives from rounding
    read as 0; the mass they leave of 1 lies beyond): ``n_obs + j`` for the smallest ``j`` whose
    ``1/N``-weighted mass of ``N = n_obs + R >= min_size`` reaches half of the whole; shape (n,)."""
    n = pR.shape[0]
    out = np.empty(n)
    for r in range(n):
        mass = 0.0
        total = 0.0
        for k in range(size):
            p = max(pR[r, k], 0.0)
            mass += p
            N = n_obs[r] + k
            if N >= min_size:
                total += p / N
        total += max(1.0 - mass, 0.0) / (n_obs[r] + size)
        if not total > 0.0:
            out[r] = max(n_obs[r], min_size)
            continue
        half = 0.5 * total
        acc = 0.0
        j = size
        for k in range(size):
            N = n_obs[r] + k
            if N >= min_size:
                acc += max(pR[r, k], 0.0) / N
            if acc >= half:
                j = k
                break
        out[r] = n_obs[r] + j
    return out
