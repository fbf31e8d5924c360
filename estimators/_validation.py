"""One input gate for every public estimator function.

Inner numerical code trusts its inputs; everything a user or a stream can hand
in passes :func:`check_cascade` first.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["check_cascade", "check_positive"]


def _as_1d_float(x: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


@njit(cache=True)
def _scan(t, m, T):
    """First problem in the events: (code, index), code 0 when valid; and the number of events before T."""
    prev = -np.inf
    n_before = 0
    for i in range(t.shape[0]):
        ti = t[i]
        mi = m[i]
        if not np.isfinite(ti):
            return 1, i, 0
        if not np.isfinite(mi):
            return 2, i, 0
        if ti < 0:
            return 3, i, 0
        if mi < 0:
            return 4, i, 0
        if ti < prev:
            return 5, i - 1, 0
        if ti < T:
            n_before += 1
        prev = ti
    return 0, 0, n_before


def check_positive(value: float, name: str, *, strict: bool = True) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` if it is not finite and > 0 (>= 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (v <= 0 if strict else v < 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_cascade(
    times: object,
    marks: object,
    t_obs: float | None = None,
    *,
    min_events: int = 2,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate one cascade and cut it at the observation time.

    Parameters
    ----------
    times : array-like, shape (n,)
        Event times in seconds since the original post, sorted, >= 0, finite.
        The first event is the original post (usually at t = 0).
    marks : array-like, shape (n,)
        Marks (follower counts) of the events, finite and >= 0.
    t_obs : float or None
        Observation time in seconds. Only events with ``t < t_obs`` are kept.
        ``None`` keeps every event and sets ``t_obs`` to the last event time.
    min_events : int
        Minimum number of events that must remain before ``t_obs``.

    Returns
    -------
    times, marks : ndarray of float64, shape (n_obs,)
        Contiguous copies restricted to ``t < t_obs``.
    t_obs : float

    Raises
    ------
    ValueError
        With a message naming the argument and what is wrong with it.
    """
    t = _as_1d_float(times, "times")
    m = _as_1d_float(marks, "marks")
    if t.shape != m.shape:
        raise ValueError(f"times and marks must have the same length, got {t.size} and {m.size}")
    if t.size == 0:
        raise ValueError("the cascade is empty: times and marks have no events")
    if t_obs is None:
        t_end = float(t[-1])
    else:
        try:
            t_end = float(t_obs)
        except (TypeError, ValueError):
            raise ValueError(f"t_obs must be a number of seconds, got {t_obs!r}") from None
        if not math.isfinite(t_end) or t_end <= 0:
            raise ValueError(f"t_obs must be finite and > 0 seconds, got {t_obs!r}")
        if t_end <= t[0]:
            raise ValueError(
                f"t_obs = {t_end!r} s is not after the first event (t = {t[0]!r} s): nothing is observed"
            )
    code, i, n_obs = _scan(t, m, math.inf if t_obs is None else t_end)
    if code == 1:
        raise ValueError(f"times must be finite: times[{i}] = {t[i]!r}")
    if code == 2:
        raise ValueError(f"marks must be finite: marks[{i}] = {m[i]!r}")
    if code == 3:
        raise ValueError(f"times must be >= 0 (seconds since the original post): times[{i}] = {t[i]!r}")
    if code == 4:
        raise ValueError(f"marks must be >= 0 (follower counts): marks[{i}] = {m[i]!r}")
    if code == 5:
        raise ValueError(
            f"times must be sorted in increasing order: times[{i}] = {t[i]!r} > times[{i + 1}] = {t[i + 1]!r}"
        )
    if n_obs < min_events:
        raise ValueError(
            f"need at least {min_events} events before t_obs = {t_end!r} s, got {n_obs}"
            + (" (a one-event cascade carries no information on its growth)" if n_obs == 1 else "")
        )
    if n_obs < t.size:
        t, m = t[:n_obs], m[:n_obs]
    return np.ascontiguousarray(t), np.ascontiguousarray(m), t_end
