"""Frozen result records returned by the cascade fits (one fixed set of fields each)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .forecast import forecast_size, message_params
from .marks import MarkLaw

__all__ = ["HawkesFit", "PowerLawFit", "remaining_size_sd"]


def remaining_size_sd(G1: float, n_star: float) -> float:
    """Standard deviation of the number of events still to come, ``sqrt(G1 / (1 - n_star)^3)``.

    The remaining events are a compound Poisson sum: ``Poisson(G1)`` direct children
    of the observed events, each the root of a Galton-Watson tree with ``Poisson(n_star)``
    offspring, whose size has mean ``1/(1 - n_star)`` and second moment ``1/(1 - n_star)^3``.
    Offspring counts that also vary with the marks only add variance (with Pareto marks,
    ``alpha <= 3``, it becomes infinite), so this is a lower bound. ``inf`` if ``n_star >= 1``.
    """
    if n_star >= 1.0:
        return float("inf")
    return float(np.sqrt(max(G1, 0.0) / (1.0 - n_star) ** 3))


@dataclass(frozen=True, slots=True)
class HawkesFit:
    """A fitted marked Hawkes process with exponential kernel ``phi(m, tau) = p m beta exp(-beta tau)``.

    Attributes
    ----------
    p : float
        Infectiousness per follower (dimensionless).
    beta : float
        Decay rate of the kernel, in 1/s.
    n_star : float
        Branching factor ``p * E[m]``.
    G1 : float
        Expected number of direct children after ``t_obs``: ``p * sum m_i exp(-beta (t_obs - t_i))``.
    n_obs : int
        Events observed before ``t_obs`` (the original post included).
    final_size : float
        Forecast final size ``n_obs + G1 / (1 - n_star)`` (no correction).
    loglik : float
        Log-likelihood of the observed events on ``[0, t_obs]`` at the estimate.
    log_posterior : float
        Objective maximised: ``loglik`` plus the log prior density of ``(log p, log beta)``
        (equal to ``loglik`` for a maximum-likelihood fit).
    t_obs : float
        Observation time, seconds.
    mark_law : MarkLaw
        The marks' law used for ``n_star``.
    n_iter : int
        Likelihood passes over the events spent by the optimiser.
    converged : bool
        Whether the optimiser met its tolerance.
    """

    p: float
    beta: float
    n_star: float
    G1: float
    n_obs: int
    final_size: float
    loglik: float
    log_posterior: float
    t_obs: float
    mark_law: MarkLaw
    n_iter: int
    converged: bool
    kernel: str = "exp"

    @property
    def features(self) -> np.ndarray:
        """The fit's part of the correction's features, ``[beta, n_star, G1]`` (shape (3,);
        :func:`estimators.forecast.correction_features`)."""
        return np.array(message_params(self)[1:])

    def predict(self, omega: float = 1.0) -> float:
        """Final-size forecast with correction factor ``omega`` (:func:`estimators.forecast.forecast_size`)."""
        return float(forecast_size(self.n_obs, self.G1, self.n_star, omega))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PowerLawFit:
    """A fitted marked Hawkes process with power-law kernel (Mishra, Rizoiu & Xie, CIKM 2016).

    ``phi(m, tau) = kappa * m**beta * (tau + c)**-(1 + theta)`` with ``tau`` in seconds.

    Attributes
    ----------
    kappa : float
        Scale of the kernel.
    beta : float
        Exponent of the mark (follower-count) influence, dimensionless.
    c : float
        Cut-off of the power-law decay, seconds.
    theta : float
        Tail exponent of the decay (> 0).
    n_star : float
        Branching factor ``kappa * E[m**beta] * c**-theta / theta``.
    G1 : float
        Expected number of direct children after ``t_obs`` (``A1`` in the paper).
    n_obs, final_size, loglik, log_posterior, t_obs, mark_law, n_iter, converged
        As in :class:`HawkesFit`.
    """

    kappa: float
    beta: float
    c: float
    theta: float
    n_star: float
    G1: float
    n_obs: int
    final_size: float
    loglik: float
    log_posterior: float
    t_obs: float
    mark_law: MarkLaw
    n_iter: int
    converged: bool
    kernel: str = "powerlaw"

    @property
    def features(self) -> np.ndarray:
        """The fit's part of the correction's features, ``[theta, n_star, G1]`` (shape (3,);
        :func:`estimators.forecast.correction_features`)."""
        return np.array(message_params(self)[1:])

    def predict(self, omega: float = 1.0) -> float:
        """Final-size forecast with correction factor ``omega`` (:func:`estimators.forecast.forecast_size`)."""
        return float(forecast_size(self.n_obs, self.G1, self.n_star, omega))

    def to_dict(self) -> dict:
        return asdict(self)
