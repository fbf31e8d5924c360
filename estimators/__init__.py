"""Pure numerics of Tweetoscope: Hawkes fits, forecasts, simulation, baselines, correction, metrics.

Nothing here does I/O, Kafka, Dask or streaming: functions take plain arrays
(times in seconds since the original post, marks in followers) and return
frozen records, so they run the same in a notebook, a benchmark or a Dask task.
"""

from .fit import fit_cascade
from .hawkes import COURSE_PRIOR, DEFAULT_BETA_BOUNDS, ConvergenceWarning, LogNormalPrior, loglikelihood, loglikelihood_grad
from .marks import COURSE_MARKS, MarkLaw, ParetoFit, fit_pareto, pareto_mean, sample_pareto
from .predictive import are_optimal_size, remaining_size_pmf
from .prior import fit_prior
from .forecast import KERNELS, correction_features, forecast_size, message_params, omega_target, series_features
from .results import HawkesFit, PowerLawFit, remaining_size_sd
from .simulate import SIMULATION_LAWS, SIMULATION_PRIOR, CascadeTooLarge, SimulationLaw, SimulatedCascade, draw_parameters, simulate_cascade, simulate_dataset

__all__ = [
    "fit_cascade",
    "HawkesFit",
    "PowerLawFit",
    "forecast_size",
    "omega_target",
    "message_params",
    "correction_features",
    "series_features",
    "KERNELS",
    "remaining_size_sd",
    "are_optimal_size",
    "remaining_size_pmf",
    "fit_prior",
    "LogNormalPrior",
    "COURSE_PRIOR",
    "DEFAULT_BETA_BOUNDS",
    "ConvergenceWarning",
    "loglikelihood",
    "loglikelihood_grad",
    "MarkLaw",
    "COURSE_MARKS",
    "ParetoFit",
    "fit_pareto",
    "pareto_mean",
    "sample_pareto",
    "SimulatedCascade",
    "simulate_cascade",
    "simulate_dataset",
    "SIMULATION_PRIOR",
    "SIMULATION_LAWS",
    "SimulationLaw",
    "draw_parameters",
    "CascadeTooLarge",
]
