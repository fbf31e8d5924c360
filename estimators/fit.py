"""``fit_cascade``: the one entry point for fitting a cascade, whatever the kernel."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .hawkes import COURSE_PRIOR, DEFAULT_BETA_BOUNDS, LogNormalPrior, fit_exp
from .marks import COURSE_MARKS, MarkLaw
from .results import HawkesFit, PowerLawFit

__all__ = ["fit_cascade"]


def fit_cascade(
    times: np.ndarray,
    marks: np.ndarray,
    t_obs: float,
    *,
    kernel: Literal["exp", "powerlaw"] = "exp",
    mark_law: MarkLaw = COURSE_MARKS,
    prior: LogNormalPrior | None = COURSE_PRIOR,
    max_n_star: float = 1.0,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    mark_floor: float = 1.0,
) -> HawkesFit | PowerLawFit:
    """Fit a marked Hawkes process to the events of one cascade observed until ``t_obs``.

    Parameters
    ----------
    times : array-like, shape (n,)
        Event times in seconds relative to the original post (the first event),
        sorted. Only events with ``t < t_obs`` are used; at least two are needed.
    marks : array-like, shape (n,)
        Follower counts of the posters (>= 0). Marks below ``mark_floor`` are raised
        to it, so that a poster with no follower still sustains the intensity.
    t_obs : float
        End of the observation window, seconds. The likelihood covers ``[0, t_obs]``.
    kernel : {"exp", "powerlaw"}
        ``"exp"``: the course model ``p m beta exp(-beta tau)``, fitted by MAP under
        ``prior`` (MLE with ``prior=None``). ``"powerlaw"``: Mishra et al. (2016),
        fitted by maximum likelihood; ``prior``, ``max_n_star`` and ``beta_bounds``
        apply to the exponential kernel only.
    mark_law : MarkLaw
        The law of the marks, for ``n_star`` (the course's Pareto(2.4, 10) by default;
        :meth:`MarkLaw.fit` learns one from observed marks).
    prior : LogNormalPrior or None
        Prior on ``(p, beta)``, a normal density on ``(log p, log beta)``.
    max_n_star : float
        Upper bound on the branching factor (the course uses 1).
    beta_bounds : (float, float)
        Bounds on ``beta`` in 1/s (course: 10 days to 10 minutes time scales).

    Returns
    -------
    HawkesFit or PowerLawFit
        Frozen record with ``n_star``, ``G1``, ``n_obs``, ``final_size``, ``loglik``,
        and the kernel's parameters (``p``, ``beta`` for ``"exp"``).

    Raises
    ------
    ValueError
        On empty, one-event, unsorted, negative or non-finite input, or ``t_obs``
        not after the first event.
    """
    if kernel == "exp":
        return fit_exp(
            times, marks, t_obs, mark_law=mark_law, prior=prior, max_n_star=max_n_star,
            beta_bounds=beta_bounds, mark_floor=mark_floor,
        )
    if kernel == "powerlaw":
        from .powerlaw import fit_powerlaw

        return fit_powerlaw(times, marks, t_obs, mark_law=mark_law, mark_floor=mark_floor)
    raise ValueError(f"kernel must be 'exp' or 'powerlaw', got {kernel!r}")
