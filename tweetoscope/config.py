"""One frozen settings object for every command and stage.

Precedence, highest first: command-line flag > environment variable > config
file (TOML, ``--config FILE`` or ``$TWEETOSCOPE_CONFIG``) > default. The CLI
builds one :class:`Settings` with :func:`load_settings` and hands it down;
nothing below the CLI reads ``os.environ``. Environment variable names are
``TWEETOSCOPE_`` plus the field name in capitals (``TWEETOSCOPE_KAFKA``,
``TWEETOSCOPE_WINDOWS=600,1200``...); they are listed in :data:`ENV_VARS`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Settings", "load_settings", "ENV_PREFIX", "ENV_VARS", "ConfigError", "SECRETS"]

ENV_PREFIX = "TWEETOSCOPE_"
#: Settings that are never printed or logged.
SECRETS = ("kafka_secret", "model_key")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the setting and where it came from."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of Tweetoscope. Times in seconds.

    Model
        ``windows``: observation windows T_obs; ``kernel``: ``"exp"`` or ``"powerlaw"``;
        ``alpha``, ``mu``: Pareto law of the marks; ``marks``: ``"pareto"`` (that law) or, the default,
        ``"learnt"`` (learnt from the marks of complete cascades, :func:`tweetoscope.models.learn_mark_law`:
        by the backtest from each fold's training cascades, by the estimator online like the prior,
        Pareto(``alpha``, ``mu``) until ``prior_min_cascades`` of them are known); ``max_n_star``: bound on the fitted
        branching factor; ``prior_*``: course prior on (p, beta) (see
        :class:`estimators.LogNormalPrior`); ``empirical_prior``: fit under the prior learnt
        from complete cascades (:mod:`estimators.prior`) once ``prior_min_cascades`` of
        them are known, the course prior until then.
    Correction
        ``forest_trees``: trees per forest; ``seismic_n_star``: SEISMIC's mean-degree
        constant (the authors' 100 is calibrated on Twitter follower counts); ``cv_folds``: folds of
        the backtest's cross-validation; ``seed``: every random generator.
    Pipeline
        ``kafka``: bootstrap servers (``None``: embedded in-memory run);
        ``scheduler``: address of an existing Dask scheduler; ``terminated``: a cascade
        ends when its source's clock passes its last event by this much;
        ``min_cascade_size``: smaller cascades are not fitted; ``alert_threshold``:
        forecast size that raises an alert; ``kafka_secret``: SASL password, masked in repr.
        ``fit_chunk``: most series per Dask task (tasks are smaller under light load); ``max_in_flight``: Dask tasks in flight per stage;
        ``join_capacity``: pending (cid, T_obs) joins kept by the predictor;
        ``learner_every``: new samples of a window between two refits of its model, and
        ``learner_interval``: least wall-clock seconds between two refits of a window;
        ``learner_max_samples``: latest samples kept per window; ``learner_trees``: trees of the
        learner's forests (refits must stay cheap next to the fits); ``batch_size``: messages per batch;
        ``poll_timeout``: seconds a Kafka source waits to fill a batch (bounds the added latency);
        ``dask_workers``, ``dask_min_workers``: most and fewest workers of the adaptive local
        cluster (two at least, so that a model refit never holds up the fits); ``worker_nice``: niceness
        added to the local cluster's workers (0 to 19; Linux ``nice``): when the fits and the refits want
        more cores than the machine has, the stages' process keeps its own (0: same priority; ignored
        with ``scheduler``); ``group_prefix``: Kafka
        consumer groups are ``<prefix>-<stage>``; ``topic_prefix``: prepended to every topic
        name (several pipelines on one cluster); ``partitions``, ``replication``: of the topics
        the stages create; ``instance_id``: stable id of this instance (static group
        membership: a restarted instance gets its partitions back at once); ``health_port``: port of
        a stage's ``/healthz`` (alive) and ``/readyz`` (in its consumer group, its state restored, its Dask client connected) HTTP endpoints (0: none);
        ``session_timeout``: seconds after which the group hands the partitions of a silent (or,
        with ``instance_id``, stopped) instance to the others (the broker allows 6 to 300).
    Reliability
        ``checkpoint_interval``: seconds between two checkpoints of a stage's state to its
        changelog topic, each followed by a commit (a restart re-reads about this much);
        ``dask_timeout``: seconds a stage waits for a lost Dask cluster (resubmitting its tasks),
        or at start-up for its scheduler to answer, before it exits non-zero;
        ``stall_timeout``: seconds without progress, with work in
        flight, or outside the consumer group after a revocation or a lost session, after which
        a stage is not live (``/healthz`` 503) and exits non-zero;
        ``max_cascade_events``: events kept per cascade (later ones count in its size only);
        ``max_clock_jump``: seconds a source's clock may jump forward on one unconfirmed event.
    Security
        ``kafka_security_protocol`` (``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``),
        ``kafka_sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``), ``kafka_user``,
        ``kafka_secret`` (its password), ``kafka_ca_file`` (CA certificate, PEM): given to every Kafka
        client; ``model_key``: HMAC key signing the ``models`` topic (the learner signs, the
        predictors refuse unsigned or badly signed files). Secrets are masked in repr and logs.
    Replay
        ``sources``: sources the replayed cascades are spread over; ``stagger``: seconds
        between the starts of cascades that have no start time of their own.
    """

    windows: tuple[int, ...] = (600, 1200, 3600)
    kernel: str = "exp"
    alpha: float = 2.4
    mu: float = 10.0
    marks: str = "learnt"
    max_n_star: float = 0.95
    prior_mean_p: float = 0.02
    prior_mean_beta: float = 2e-4
    prior_sd_p: float = 0.01
    prior_sd_beta: float = 1e-3
    prior_corr: float = -0.1
    empirical_prior: bool = True
    prior_min_cascades: int = 30
    forest_trees: int = 200
    seismic_n_star: float = 100.0
    cv_folds: int = 5
    seed: int = 0
    kafka: str | None = None
    scheduler: str | None = None
    terminated: float = 7200.0
    min_cascade_size: int = 2
    alert_threshold: float = 100.0
    fit_chunk: int = 8192
    max_in_flight: int = 8
    join_capacity: int = 100_000
    learner_every: int = 100
    learner_max_samples: int = 2000
    learner_trees: int = 50
    learner_interval: float = 30.0
    batch_size: int = 10_000
    poll_timeout: float = 0.05
    sources: int = 1
    stagger: float = 10.0
    dask_workers: int = 2
    dask_min_workers: int = 2
    worker_nice: int = 5
    group_prefix: str = "tweetoscope"
    topic_prefix: str = ""
    partitions: int = 4
    replication: int = 1
    instance_id: str | None = None
    health_port: int = 0
    session_timeout: float = 45.0
    checkpoint_interval: float = 2.0
    dask_timeout: float = 120.0
    stall_timeout: float = 300.0
    max_cascade_events: int = 20_000
    max_clock_jump: float = 86_400.0
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_user: str | None = None
    kafka_secret: str | None = field(default=None, repr=False)
    kafka_ca_file: str | None = None
    model_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.windows or any(w <= 0 for w in self.windows):
            raise ConfigError(f"windows must be positive seconds, got {self.windows}")
        if tuple(sorted(set(self.windows))) != tuple(self.windows):
            raise ConfigError(f"windows must be strictly increasing, got {self.windows}")
        if self.kernel not in ("exp", "powerlaw"):
            raise ConfigError(f"kernel must be 'exp' or 'powerlaw', got {self.kernel!r}")
        if self.prior_min_cascades < 3:
            raise ConfigError(f"prior_min_cascades must be >= 3, got {self.prior_min_cascades}")
        if not 6 <= self.session_timeout <= 300:
            raise ConfigError(f"session_timeout must be within 6 and 300 s (the broker's bounds), got {self.session_timeout}")
        if self.alpha <= 2 or self.mu <= 0:
            raise ConfigError(f"alpha must be > 2 and mu > 0, got alpha={self.alpha}, mu={self.mu}")
        if self.marks not in ("pareto", "learnt"):
            raise ConfigError(f"marks must be 'pareto' or 'learnt', got {self.marks!r}")
        if not 0 < self.max_n_star <= 1:
            raise ConfigError(f"max_n_star must be in (0, 1], got {self.max_n_star}")
        if self.cv_folds < 2:
            raise ConfigError(f"cv_folds must be >= 2, got {self.cv_folds}")
        if self.min_cascade_size < 2:
            raise ConfigError(f"min_cascade_size must be >= 2 (a fit needs two events), got {self.min_cascade_size}")
        if self.dask_min_workers > self.dask_workers:
            raise ConfigError(f"dask_min_workers ({self.dask_min_workers}) must be <= dask_workers ({self.dask_workers})")
        if not 0 <= self.worker_nice <= 19:
            raise ConfigError(f"worker_nice must be within 0 and 19, got {self.worker_nice}")
        if self.terminated <= 0:
            raise ConfigError(f"terminated must be > 0 seconds, got {self.terminated}")
        if self.kafka_security_protocol.upper() not in SECURITY_PROTOCOLS:
            raise ConfigError(f"kafka_security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                              f"got {self.kafka_security_protocol!r}")
        if self.kafka_security_protocol.upper().startswith("SASL") and not (
                self.kafka_sasl_mechanism and self.kafka_user and self.kafka_secret):
            raise ConfigError(f"kafka_security_protocol {self.kafka_security_protocol} needs kafka_sasl_mechanism, "
                              "kafka_user and kafka_secret")
        for name in ("checkpoint_interval", "dask_timeout", "stall_timeout", "max_clock_jump"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        for name in ("fit_chunk", "max_in_flight", "join_capacity", "learner_every", "learner_max_samples",
                     "learner_trees", "batch_size", "sources", "dask_workers", "dask_min_workers", "partitions",
                     "replication", "max_cascade_events"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def prior(self):
        """The prior on (p, beta) as an :class:`estimators.LogNormalPrior`."""
        from estimators import LogNormalPrior

        return LogNormalPrior(self.prior_mean_p, self.prior_mean_beta, self.prior_sd_p, self.prior_sd_beta,
                              self.prior_corr)

    @property
    def mark_law(self):
        """The Pareto law set by ``alpha`` and ``mu``, an :class:`estimators.MarkLaw` (with ``marks="learnt"``,
        the law until one is learnt)."""
        from estimators.marks import MarkLaw

        return MarkLaw.pareto(self.alpha, self.mu)

    def fit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`estimators.fit_cascade` implied by these settings."""
        kw: dict[str, Any] = {"kernel": self.kernel, "mark_law": self.mark_law}
        if self.kernel == "exp":
            kw.update(prior=self.prior, max_n_star=self.max_n_star)
        return kw

    def kafka_config(self) -> dict[str, Any]:
        """The librdkafka connection settings of every client: bootstrap servers and security."""
        if not self.kafka:
            raise ConfigError("a Kafka bootstrap address is needed (--kafka HOST:PORT)")
        config: dict[str, Any] = {"bootstrap.servers": self.kafka,
                                  "security.protocol": self.kafka_security_protocol.upper()}
        if self.kafka_sasl_mechanism:
            config.update({"sasl.mechanism": self.kafka_sasl_mechanism, "sasl.username": self.kafka_user or "",
                           "sasl.password": self.kafka_secret or ""})
        if self.kafka_ca_file:
            config["ssl.ca.location"] = self.kafka_ca_file
        return config

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in SECRETS:
            if mask_secrets and d.get(name):
                d[name] = "***"
        return d

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


#: Environment variable of each setting.
ENV_VARS: dict[str, str] = {f.name: ENV_PREFIX + f.name.upper() for f in fields(Settings)}


def _convert(name: str, value: Any, source: str) -> Any:
    """Convert a raw value (string from env/CLI, or TOML value) to the field's type."""
    default = Settings.__dataclass_fields__[name].default
    try:
        if name == "windows":
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(int(float(v)) for v in value)
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            if default is None:
                return None
            raise ValueError("a value is required")
        if isinstance(default, bool):
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r} from {source}: cannot use {value!r} ({exc})") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Build the settings from defaults, a TOML file, environment variables and overrides (in that order).

    ``overrides`` holds command-line values; ``None`` values are ignored (flag not given).
    ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get(CONFIG_ENV)
    if path:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        raw = raw.get("tweetoscope", raw)
        for key, value in raw.items():
            if key not in ENV_VARS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _convert(key, value, f"config file {path}")
    for name, var in ENV_VARS.items():
        if var in env:
            values[name] = _convert(name, env[var], f"environment variable {var}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in ENV_VARS:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _convert(key, value, "the command line")
    try:
        return Settings(**values)
    except ConfigError:
        raise
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
