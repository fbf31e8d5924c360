"""Exact simulation of marked exponential Hawkes cascades through their branching structure.

Every event with mark ``m`` at time ``t`` has a Poisson(``p m``) number of direct
children; each child comes after an Exp(``beta``) delay and draws its own mark
from the Pareto law. Generations are simulated until extinction (finite when
``n_star = p E[m] < 1``), so the returned cascade is complete and its length is
the true final size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._validation import check_positive
from .hawkes import COURSE_PRIOR, DEFAULT_BETA_BOUNDS, LogNormalPrior
from .marks import pareto_mean, sample_pareto

__all__ = [
    "SimulatedCascade",
    "simulate_cascade",
    "simulate_dataset",
    "draw_parameters",
    "CascadeTooLarge",
    "SIMULATION_PRIOR",
    "SimulationLaw",
    "SIMULATION_LAWS",
]

#: Generating law of ``(p, beta)`` for simulated datasets: the course's mean for ``p``,
#: time scales ``1/beta`` around 10 to 30 minutes (the course prior's own beta law puts
#: most cascades at several hours, which leaves almost nothing to see in a 10-minute
#: window). Truncated to the course bounds by :func:`draw_parameters`.
SIMULATION_PRIOR = LogNormalPrior(mean_p=0.02, mean_beta=1.5e-3, sd_p=0.01, sd_beta=1e-3, corr=-0.1)


@dataclass(frozen=True, slots=True)
class SimulationLaw:
    """A generating law of simulated datasets: ``prior`` of ``(p, beta)`` (beta in 1/s) and the
    marks' Pareto(``alpha``, ``mu``)."""

    prior: LogNormalPrior
    alpha: float
    mu: float
    about: str


#: Named generating laws (``tweetoscope simulate --law``, ``bench/best_achievable.py --law``):
#: ``course`` is the default one; the others check that the forecast is not tuned to it.
SIMULATION_LAWS: dict[str, SimulationLaw] = {
    "course": SimulationLaw(SIMULATION_PRIOR, 2.4, 10.0, "the default: n* around 0.7, 1/beta 10-30 min"),
    "wide-beta": SimulationLaw(LogNormalPrior(mean_p=0.02, mean_beta=3e-3, sd_p=0.01, sd_beta=6e-3, corr=-0.1),
                               2.4, 10.0, "time scales from seconds to hours (sd of beta 2x its mean)"),
    "near-critical": SimulationLaw(LogNormalPrior(mean_p=0.025, mean_beta=1.5e-3, sd_p=0.004, sd_beta=1e-3,
                                                  corr=-0.1), 2.4, 10.0, "n* mostly between 0.75 and 0.99"),
    "heavy-marks": SimulationLaw(LogNormalPrior(mean_p=0.0045, mean_beta=1.5e-3, sd_p=0.0022, sd_beta=1e-3,
                                                corr=-0.1), 2.15, 20.0,
                                 "marks Pareto(2.15, 20): mean 153, a heavier tail; n* around 0.7"),
}


class CascadeTooLarge(RuntimeError):
    """The simulated cascade exceeded ``max_size`` events (near-critical draw)."""


@dataclass(frozen=True, slots=True)
class SimulatedCascade:
    """A complete simulated cascade, events sorted by time.

    ``times`` (s, shape (n,)), ``marks`` (followers, shape (n,)), ``parents``
    (index of each event's parent in the sorted arrays, -1 for the root) and the
    parameters that generated it.
    """

    times: np.ndarray
    marks: np.ndarray
    parents: np.ndarray
    p: float
    beta: float
    alpha: float
    mu: float

    @property
    def n_star(self) -> float:
        return self.p * pareto_mean(self.alpha, self.mu)

    @property
    def size(self) -> int:
        return int(self.times.size)


def branch(
    m0: float,
    mean_children: Callable[[np.ndarray], np.ndarray],
    delays: Callable[[int], np.ndarray],
    *,
    alpha: float,
    mu: float,
    max_size: int,
    n_star: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow a cascade from a root with mark ``m0`` at t = 0, generation by generation, until extinction.

    An event with mark ``m`` has a Poisson(``mean_children(m)``) number of direct
    children, each after a delay drawn by ``delays(n)`` (seconds) and with a
    Pareto(``alpha``, ``mu``) mark. Returns ``times``, ``marks`` and ``parents``
    sorted by time (``parents[i]`` indexes the sorted arrays, -1 for the root).
    Raises :class:`CascadeTooLarge` beyond ``max_size`` events.
    """
    times = [np.zeros(1)]
    marks = [np.array([float(m0)])]
    parents = [np.array([-1])]
    gen_t, gen_m, gen_idx = times[0], marks[0], np.zeros(1, dtype=np.int64)
    total = 1
    while gen_t.size:
        k = rng.poisson(mean_children(gen_m))
        n_new = int(k.sum())
        if n_new == 0:
            break
        total += n_new
        if total > max_size:
            raise CascadeTooLarge(f"cascade exceeded max_size={max_size} events (n_star={n_star:.3f})")
        t_new = np.repeat(gen_t, k) + delays(n_new)
        m_new = sample_pareto(alpha, mu, n_new, rng)
        times.append(t_new)
        marks.append(m_new)
        parents.append(np.repeat(gen_idx, k))
        gen_t, gen_m, gen_idx = t_new, m_new, np.arange(total - n_new, total)
    t = np.concatenate(times)
    m = np.concatenate(marks)
    par = np.concatenate(parents)
    order = np.argsort(t, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    par_sorted = np.where(par[order] >= 0, rank[np.maximum(par[order], 0)], -1)
    return t[order], m[order], par_sorted


def simulate_cascade(
    p: float,
    beta: float,
    *,
    alpha: float = 2.4,
    mu: float = 10.0,
    m0: float | None = None,
    max_size: int = 1_000_000,
    random_state: int | np.random.Generator | None = None,
) -> SimulatedCascade:
    """Simulate one complete cascade started by a post with mark ``m0`` at ``t = 0``.

    Parameters
    ----------
    p : float
        Infectiousness per follower; ``n_star = p * E[m]`` must be < 1.
    beta : float
        Kernel decay rate, 1/s.
    alpha, mu : float
        Pareto exponent (> 2) and lower bound of the marks.
    m0 : float, optional
        Mark of the original post; drawn from the Pareto law when omitted.
    max_size : int
        Raise :class:`CascadeTooLarge` beyond this many events.
    random_state : int, Generator or None
        Seed or generator; the only source of randomness.
    """
    p = check_positive(p, "p")
    beta = check_positive(beta, "beta")
    if alpha <= 2:
        raise ValueError(f"alpha must be > 2, got {alpha}")
    n_star = p * pareto_mean(alpha, mu)
    if n_star >= 1:
        raise ValueError(f"the branching factor p * E[m] = {n_star:.3f} must be < 1 for a finite cascade")
    rng = np.random.default_rng(random_state)
    if m0 is None:
        m0 = float(sample_pareto(alpha, mu, 1, rng)[0])
    times, marks, parents = branch(
        float(m0), lambda m: p * m, lambda n: rng.exponential(1.0 / beta, size=n), alpha=alpha, mu=mu,
        max_size=max_size, n_star=n_star, rng=rng,
    )
    return SimulatedCascade(times=times, marks=marks, parents=parents, p=p, beta=beta, alpha=alpha, mu=mu)


def draw_parameters(
    size: int,
    *,
    prior: LogNormalPrior = COURSE_PRIOR,
    alpha: float = 2.4,
    mu: float = 10.0,
    max_n_star: float = 0.99,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Draw ``size`` parameter pairs ``(p, beta)`` from ``prior`` truncated to the fit bounds.

    Rejection sampling keeps draws with ``n_star < max_n_star`` and ``beta`` in
    ``beta_bounds`` (1/s). Returns shape (size, 2).
    """
    rng = np.random.default_rng(random_state)
    em = pareto_mean(alpha, mu)
    out = np.empty((0, 2))
    while out.shape[0] < size:
        d = prior.sample(max(2 * (size - out.shape[0]), 16), rng)
        ok = (d[:, 0] * em < max_n_star) & (d[:, 1] >= beta_bounds[0]) & (d[:, 1] <= beta_bounds[1])
        out = np.vstack([out, d[ok]])
    return out[:size]


def simulate_dataset(
    n: int,
    *,
    prior: LogNormalPrior = SIMULATION_PRIOR,
    alpha: float = 2.4,
    mu: float = 10.0,
    min_size: int = 10,
    max_n_star: float = 0.99,
    beta_bounds: tuple[float, float] = DEFAULT_BETA_BOUNDS,
    max_size: int = 100_000,
    random_state: int | np.random.Generator | None = None,
) -> list[SimulatedCascade]:
    """Simulate ``n`` complete cascades with parameters drawn from ``prior``.

    Each cascade draws ``(p, beta)`` from ``prior`` truncated to
    ``n_star < max_n_star`` and ``beta_bounds`` (1/s), and its root mark from the
    Pareto law like every other mark. Only cascades whose final size is at least
    ``min_size`` are kept (draws are repeated until ``n`` are kept), as datasets of
    real cascades are selected by size; cascades beyond ``max_size`` are redrawn.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    rng = np.random.default_rng(random_state)
    out: list[SimulatedCascade] = []
    while len(out) < n:
        theta = draw_parameters(
            256, prior=prior, alpha=alpha, mu=mu, max_n_star=max_n_star, beta_bounds=beta_bounds, random_state=rng
        )
        for p, beta in theta:
            try:
                c = simulate_cascade(p, beta, alpha=alpha, mu=mu, max_size=max_size, random_state=rng)
            except CascadeTooLarge:
                continue
            if c.size >= min_size:
                out.append(c)
                if len(out) == n:
                    break
    return out
