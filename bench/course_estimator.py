"""A faithful reimplementation of the course's Hawkes estimator, the speed and accuracy baseline.

Python-loop log-likelihood in log space, MAP by scipy's Powell from the prior
mean within the course's bounds, prediction ``n + G1 / (1 - n_star)``: the
functions ``loglikelihood``, ``compute_MAP`` and ``prediction`` of the course
notebook, with the same arithmetic. Only used by benchmarks.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize as optim


def loglikelihood(params, history, t):
    """Log-likelihood of ``history`` (shape (n, 2): times, marks) on [0, t]; the course's Python loop."""
    p, beta = params
    if p <= 0 or p >= 1 or beta <= 0.0:
        return -np.inf
    n = len(history)
    mis = history[:, 1]
    LL = (n - 1) * np.log(p * beta)
    logA = -np.inf
    prev_ti, prev_mi = history[0]
    for ti, mi in history[1:]:
        logA = np.log(prev_mi + np.exp(logA)) - beta * (ti - prev_ti)
        LL += logA
        prev_ti, prev_mi = ti, mi
    logA = np.log(prev_mi + np.exp(logA)) - beta * (t - prev_ti)
    LL -= p * (np.sum(mis) - np.exp(logA))
    return LL


def log_prior_terms(prior_params=(0.02, 0.0002, 0.01, 0.001, -0.1)):
    mu_p, mu_beta, sig_p, sig_beta, corr = prior_params
    sample_mean = np.array([mu_p, mu_beta])
    cov_p_beta = corr * sig_p * sig_beta
    Q = np.array([[sig_p**2, cov_p_beta], [cov_p_beta, sig_beta**2]])
    cov_prior = np.log(Q / sample_mean.reshape((-1, 1)) / sample_mean.reshape((1, -1)) + 1)
    mean_prior = np.log(sample_mean) - np.diag(cov_prior) / 2.0
    return sample_mean, mean_prior, np.linalg.inv(cov_prior)


def map_objective(params, history, t, prior_params=(0.02, 0.0002, 0.01, 0.001, -0.1)):
    """Minus the log posterior the course minimises (prior density on log theta, no Jacobian)."""
    _, mean_prior, inv_cov_prior = log_prior_terms(prior_params)
    log_params = np.log(params)
    if np.any(np.isnan(log_params)):
        return np.inf
    d = log_params - mean_prior
    prior_term = float(-0.5 * d @ inv_cov_prior @ d)
    return -(prior_term + loglikelihood(params, history, t))


def compute_MAP(history, t, alpha, mu, prior_params=(0.02, 0.0002, 0.01, 0.001, -0.1), max_n_star=1):
    """The course's MAP: Powell from the prior mean, p bounded by n_star < max_n_star."""
    sample_mean, mean_prior, inv_cov_prior = log_prior_terms(prior_params)

    def target(params):
        log_params = np.log(params)
        if np.any(np.isnan(log_params)):
            return np.inf
        dparams = log_params - mean_prior
        prior_term = float(-0.5 * dparams @ inv_cov_prior @ dparams)
        return -(prior_term + loglikelihood(params, history, t))

    EM = mu * (alpha - 1) / (alpha - 2)
    eps = 1.0e-8
    p_min, p_max = eps, max_n_star / EM - eps
    beta_min, beta_max = 1 / (3600.0 * 24 * 10), 1 / (60.0 * 10)
    bounds = optim.Bounds(np.array([p_min, beta_min]), np.array([p_max, beta_max]))
    res = optim.minimize(target, sample_mean, method="Powell", bounds=bounds)
    return -res.fun, res.x


def prediction(params, history, alpha, mu, t):
    """The course's forecast ``n + G1 / (1 - n_star)`` (raises when n_star >= 1)."""
    p, beta = params
    EM = mu * (alpha - 1) / (alpha - 2)
    n_star = p * EM
    if n_star >= 1:
        raise Exception(f"Branching factor {n_star:.2f} greater than one")
    idx = history[:, 0] < t
    tis, mis = history[idx, 0], history[idx, 1]
    G1 = p * np.sum(mis * np.exp(-beta * (t - tis)))
    return len(tis) + G1 / (1.0 - n_star)
