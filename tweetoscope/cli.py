"""The ``tweetoscope`` command line.

Every sub-command builds one :class:`tweetoscope.config.Settings` (flags >
environment > config file > defaults) and passes it down.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import orjson

from .config import ENV_VARS, SECURITY_PROTOCOLS, ConfigError, Settings, load_settings
from .tuning import tune_process

__all__ = ["main", "entry", "build_parser"]

DEFAULTS = Settings()



def _windows(text: str) -> tuple[int, ...]:
    try:
        w = tuple(int(float(x)) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"windows must be comma-separated seconds, e.g. 600,1200,3600; got {text!r}")
    if not w:
        raise argparse.ArgumentTypeError("at least one window is needed")
    return w


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, e.g. 0,1,2,3,4; got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError("at least one seed is needed")
    return seeds


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--windows", type=_windows, help="observation windows in seconds, e.g. 600,1200,3600 "
                   f"(default {','.join(map(str, DEFAULTS.windows))}; env {ENV_VARS['windows']})")
    g.add_argument("--kernel", choices=("exp", "powerlaw"), help="Hawkes kernel (default exp)")
    g.add_argument("--alpha", type=float, help=f"Pareto exponent of the marks (default {DEFAULTS.alpha})")
    g.add_argument("--mu", type=float, help=f"Pareto lower bound of the marks (default {DEFAULTS.mu})")
    g.add_argument("--marks", choices=("pareto", "learnt"),
                   help="law of the marks: pareto, Pareto(alpha, mu); learnt, learnt from the marks of complete "
                        "cascades (a Pareto tail above a body of atoms), Pareto(alpha, mu) until "
                        "prior_min_cascades of them are known (default pareto)")
    g.add_argument("--max-n-star", dest="max_n_star", type=float,
                   help=f"bound on the fitted branching factor (default {DEFAULTS.max_n_star})")
    g.add_argument("--seed", type=int, help="seed of every random generator (default 0)")
    g.add_argument("--config", dest="config_file", help="TOML config file (env TWEETOSCOPE_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tweetoscope",
        description="Real-time prediction of retweet cascade popularity with marked Hawkes processes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "backtest",
        help="accuracy of every predictor per observation window on complete cascades",
        description="Replays each cascade up to each window, forecasts its final size with every predictor "
        "(observed, hawkes, constant, hawkes+rf, seismic, and oracle when PATH holds a truth.jsonl) and reports "
        "the median and mean absolute relative error |N_hat - N| / N, the rank correlations (Spearman rho, "
        "Kendall tau) with the true sizes and the top-decile share. With --seeds, each figure is the mean over "
        "the seeds, +- its standard deviation.",
    )
    p.add_argument("path", help="a NEWS-layout folder, a folder of RT*.txt files, or a JSONL file")
    _add_model_flags(p)
    p.add_argument("--min-size", dest="min_cascade_size", type=int,
                   help="score cascades with at least this many events before the window (default 2)")
    p.add_argument("--folds", dest="cv_folds", type=int, help="cross-validation folds of the forest (default 5)")
    p.add_argument("--seismic-n-star", dest="seismic_n_star", type=float,
                   help="SEISMIC's mean-degree constant (default 100, the authors' value, calibrated on "
                   "Twitter; on small simulated cascades SEISMIC is mostly supercritical whatever its value)")
    p.add_argument("--seeds", type=_seeds,
                   help="run the folds and forests under each seed, e.g. 0,1,2,3,4 (default: the --seed setting, 0)")
    p.add_argument("--split", choices=("kfold", "time"), default="kfold",
                   help="kfold: shuffled K folds; time: train on the cascades that started earlier, test on the "
                   "later ones (rolling origin; the earliest block is only trained on). Default kfold")
    p.add_argument("--per-cascade", metavar="FILE",
                   help="write every scored cascade's forecasts per predictor, window and seed as JSON lines")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object instead of tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser(
        "simulate",
        help="write simulated cascades with known parameters (NEWS layout + truth.jsonl)",
        description="Simulates complete marked exponential Hawkes cascades by their branching structure, "
        "with (p, beta) drawn from the simulation prior and marks from Pareto(alpha, mu); keeps cascades "
        "of at least --min-size events. Writes news-data.csv, news-index.csv and truth.jsonl in OUTDIR.",
    )
    p.add_argument("outdir", help="output folder (created if needed)")
    p.add_argument("--n", type=int, default=1000, help="number of cascades (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--min-size", type=int, default=10, help="minimum final size of a kept cascade (default 10)")
    p.add_argument("--law", default="course",
                   help="generating law of (p, beta) and of the marks (estimators.simulate.SIMULATION_LAWS): "
                        "course, wide-beta, near-critical or heavy-marks (default course)")
    p.add_argument("--alpha", type=float, help="Pareto exponent of the marks (default: the law's, 2.4 for course)")
    p.add_argument("--mu", type=float, help="Pareto lower bound of the marks (default: the law's, 10 for course)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "run",
        help="run the whole pipeline: replay, collector, estimator (Dask), predictor, learner",
        description="Replays PATH as a stream of tweets through every stage. Without --kafka the stages are "
        "wired in memory on an adaptive local Dask cluster (or --scheduler), every topic is written to "
        "OUT/<topic>.jsonl, and the command exits 0 once the replay is fully processed.",
    )
    p.add_argument("--data", required=True, help="dataset to replay: NEWS folder, folder of RT*.txt, or JSONL")
    p.add_argument("--out", default="out", help="folder of the topics' JSONL files (default ./out)")
    p.add_argument("--speed", type=float, help="replay speed, e.g. 1000 = 1,000 x real time (default: as fast as possible)")
    _add_model_flags(p)
    _add_pipeline_flags(p)
    _add_kafka_flags(p)
    _add_dashboard_flags(p, beside_run=True)
    g = p.add_argument_group("cluster")
    g.add_argument("--cluster", choices=("local", "k8s"), default="local",
                   help="where the fits run: an adaptive local Dask cluster (default), or the Dask cluster on "
                   "Kubernetes started by `tweetoscope cluster up` (k8s)")
    g.add_argument("--cluster-name", default="tweetoscope", help="with --cluster k8s: its name (default tweetoscope)")
    g.add_argument("--namespace", default="default", help="with --cluster k8s: its namespace (default default)")
    p.set_defaults(func=cmd_run)

    for stage, what in (("collector", "tweets -> cascade_series, cascade_properties (sizes)"),
                        ("estimator", "cascade_series -> cascade_properties (parameters), fits on Dask"),
                        ("predictor", "cascade_properties, models -> alerts, stats, samples"),
                        ("learner", "samples -> models, refits on Dask")):
        p = sub.add_parser(stage, help=f"run the {stage} stage on Kafka ({what})",
                           description=f"Runs the {stage} stage ({what}) as a member of the consumer group "
                           f"<group-prefix>-{stage}: start several to share the work. SIGTERM drains, commits "
                           "and exits 0.")
        _add_model_flags(p)
        _add_pipeline_flags(p)
        _add_kafka_flags(p, required=True)
        p.set_defaults(func=cmd_stage, stage=stage)

    p = sub.add_parser("generate", help="replay a dataset as tweets on Kafka",
                       description="Posts the cascades of PATH as the course's `tweets` messages (key = source "
                       "id), interleaved by event time, then an end-of-stream message per source.")
    p.add_argument("path", help="dataset: NEWS folder, folder of RT*.txt, or JSONL")
    p.add_argument("--speed", type=float, help="replay speed (default: as fast as possible)")
    p.add_argument("--sources", type=int, help="spread the cascades over this many sources (default 1)")
    p.add_argument("--config", dest="config_file", help="TOML config file")
    _add_kafka_flags(p, required=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("cluster", help="the Dask cluster on Kubernetes (dask-kubernetes operator)",
                       description="Launches (up), inspects (status) or deletes (down) the Dask cluster the "
                       "pipeline's fits run on, from the DaskCluster manifest dask-k8s/operator/daskcluster.yaml, "
                       "with an adaptive worker pool. Needs a reachable Kubernetes cluster with the "
                       "dask-kubernetes operator, and credentials ($KUBECONFIG, ~/.kube/config or a pod's).")
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--name", default="tweetoscope", help="name of the DaskCluster (default tweetoscope)")
    p.add_argument("--namespace", default="default", help="Kubernetes namespace (default default)")
    p.add_argument("--manifest", help="DaskCluster manifest (default dask-k8s/operator/daskcluster.yaml)")
    p.add_argument("--image", help="image of the scheduler and workers (default: the manifest's)")
    p.add_argument("--min", dest="minimum", type=int, default=1, help="fewest workers (default 1)")
    p.add_argument("--max", dest="maximum", type=int, default=10, help="most workers (default 10)")
    p.add_argument("--print-spec", action="store_true", help="with up: print the cluster spec as YAML and stop")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("dashboard", help="live Bokeh dashboard of a running pipeline",
                       description="Serves a live Bokeh page (top-K forecasts, alert feed, accuracy per window, "
                       "cascade inspector, pipeline health) reading a running pipeline: its Kafka topics "
                       "(--kafka) or an embedded run's output folder (--out). Without a pipeline to read, the "
                       "page says so and keeps trying.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="output folder of an embedded run (tweetoscope run --out DIR)")
    where.add_argument("--kafka", dest="kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers of the pipeline")
    p.add_argument("--topic-prefix", dest="topic_prefix", help="prefix of the pipeline's topic names")
    p.add_argument("--scheduler", help="Dask scheduler of the pipeline, for the health panel")
    p.add_argument("--windows", type=_windows, help="observation windows in seconds (default 600,1200,3600)")
    p.add_argument("--config", dest="config_file", help="TOML config file")
    _add_dashboard_flags(p, beside_run=False)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("alerts", help="print the alerts of a running pipeline",
                       description="Reads the `alerts` topic from its beginning. On a terminal: a live table "
                       "of the largest forecasts; --json: one JSON object per (cascade, window) alert, for pipes; "
                       "otherwise one text line each. A repeated alert is shown once; --follow keeps waiting for "
                       "new ones.")
    p.add_argument("--follow", action="store_true", help="keep printing new alerts until interrupted")
    p.add_argument("--min-size", dest="alert_min", type=float, default=0.0,
                   help="only alerts forecasting at least this final size")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--top", type=int, default=20,
                   help="rows of the live table shown on a terminal (default 20; not with --json)")
    _add_kafka_flags(p, required=True)
    p.set_defaults(func=cmd_alerts)
    return parser


def _add_kafka_flags(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_argument_group("kafka")
    g.add_argument("--kafka", metavar="BOOTSTRAP",
                   help="Kafka bootstrap servers, e.g. 127.0.0.1:9092" + (
                       " (required here: the flag, env TWEETOSCOPE_KAFKA or the config file)" if required else
                       " (default: no Kafka, stages wired in memory)"))
    g.add_argument("--topic-prefix", dest="topic_prefix", help="prefix of every topic name (default none)")
    g.add_argument("--partitions", type=int, help=f"partitions of the topics created (default {DEFAULTS.partitions})")
    g.add_argument("--instance-id", dest="instance_id",
                   help="stable id of this instance (static group membership), e.g. the pod name")
    g.add_argument("--health-port", dest="health_port", type=int,
                   help="serve GET /healthz (alive: can make progress), /readyz (consuming: in its group, state "
                   "restored, Dask connected) and /metrics (Prometheus) on this port (default: none)")
    g.add_argument("--checkpoint-interval", dest="checkpoint_interval", type=float,
                   help=f"seconds between two checkpoints of a stage's state, each followed by a commit "
                   f"(default {DEFAULTS.checkpoint_interval:g})")
    g.add_argument("--security-protocol", dest="kafka_security_protocol",
                   choices=SECURITY_PROTOCOLS, help="Kafka security protocol "
                   "(default PLAINTEXT); the SASL password comes from env TWEETOSCOPE_KAFKA_SECRET or the config "
                   "file, never from the command line")
    g.add_argument("--sasl-mechanism", dest="kafka_sasl_mechanism", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                   help="SASL mechanism")
    g.add_argument("--kafka-user", dest="kafka_user", help="SASL user name")
    g.add_argument("--ca-file", dest="kafka_ca_file", help="CA certificate (PEM) of the brokers, for SSL")


def _add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline")
    g.add_argument("--scheduler", help="address of an existing Dask scheduler (default: an adaptive local cluster)")
    g.add_argument("--terminated", type=float, help=f"seconds of inactivity that end a cascade (default {DEFAULTS.terminated:g})")
    g.add_argument("--min-size", dest="min_cascade_size", type=int,
                   help=f"fit a window only with at least this many events (default {DEFAULTS.min_cascade_size})")
    g.add_argument("--alert-threshold", dest="alert_threshold", type=float,
                   help=f"forecast size that raises an alert (default {DEFAULTS.alert_threshold:g})")
    g.add_argument("--learner-every", dest="learner_every", type=int,
                   help=f"new samples between two refits of a window's model (default {DEFAULTS.learner_every})")
    g.add_argument("--learner-interval", dest="learner_interval", type=float,
                   help=f"least seconds between two refits of a window's model (default {DEFAULTS.learner_interval:g})")
    g.add_argument("--sources", type=int, help="spread the replayed cascades over this many sources (default 1)")
    g.add_argument("--stagger", type=float, help="event-time seconds between the starts of replayed cascades that "
                   f"have no start time of their own (default {DEFAULTS.stagger:g})")
    g.add_argument("--workers", dest="dask_workers", type=int,
                   help=f"most workers of the adaptive local Dask cluster (default {DEFAULTS.dask_workers})")


def _add_dashboard_flags(p: argparse.ArgumentParser, *, beside_run: bool) -> None:
    g = p.add_argument_group("dashboard")
    if beside_run:
        g.add_argument("--no-dashboard", action="store_true",
                       help="do not serve the live dashboard beside the run (nor the Dask dashboard it links to)")
    g.add_argument("--address", default="127.0.0.1", help="address the dashboard listens on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=5006, help="port of the dashboard (default 5006)")
    g.add_argument("--allow-websocket-origin", action="append", dest="origins", metavar="HOST[:PORT]",
                   help="host allowed to open the dashboard's websocket (repeatable; default the address itself)")


def _settings(args: argparse.Namespace, *, need_kafka: bool = False) -> Settings:
    keys = set(ENV_VARS) & set(vars(args))
    settings = load_settings({k: getattr(args, k) for k in keys}, config_file=getattr(args, "config_file", None))
    if need_kafka and not settings.kafka:
        raise ConfigError("this command needs a Kafka cluster: give --kafka BOOTSTRAP (or TWEETOSCOPE_KAFKA, "
                          "or kafka in the config file)")
    return settings


def cmd_backtest(args: argparse.Namespace) -> int:
    from streams.datasets import load_dataset

    from .backtest import backtest
    from .report import print_backtest

    settings = _settings(args)
    dataset = load_dataset(args.path)
    kw = {"progress": not args.no_progress, "seeds": args.seeds, "split": args.split}
    if args.per_cascade:
        with open(args.per_cascade, "wb") as f:
            report = backtest(dataset, settings, per_cascade=f, **kw)
    else:
        report = backtest(dataset, settings, **kw)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print_backtest(report)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from estimators import SIMULATION_LAWS, simulate_dataset
    from streams.datasets import write_news

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.law not in SIMULATION_LAWS:
        raise ConfigError(f"--law must be one of {', '.join(SIMULATION_LAWS)}, got {args.law!r}")
    law = SIMULATION_LAWS[args.law]
    alpha = law.alpha if args.alpha is None else args.alpha
    mu = law.mu if args.mu is None else args.mu
    cascades = simulate_dataset(args.n, prior=law.prior, alpha=alpha, mu=mu, min_size=args.min_size,
                                random_state=args.seed)
    truth = [
        {"p": c.p, "beta": c.beta, "n_star": c.n_star, "alpha": c.alpha, "mu": c.mu, "size": c.size}
        for c in cascades
    ]
    write_news(args.outdir, [(c.times, c.marks) for c in cascades], truth)
    n_events = sum(c.size for c in cascades)
    print(f"wrote {len(cascades)} cascades ({n_events} events, law {args.law}, marks Pareto({alpha:g}, {mu:g})) "
          f"to {Path(args.outdir)}/", file=sys.stderr)
    return 0


def _quiet_logs() -> None:
    """Log to stderr at WARNING, or at the level named by env ``TWEETOSCOPE_LOG_LEVEL`` (e.g. INFO)."""
    import logging

    level = os.environ.get("TWEETOSCOPE_LOG_LEVEL", "WARNING").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise SystemExit(f"TWEETOSCOPE_LOG_LEVEL={level!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("bokeh.server.util").setLevel(logging.ERROR)  # the Dask dashboard's wildcard-origin notice


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from streams.datasets import DataError, load_dataset

    settings = _settings(args)
    if args.cluster == "k8s":
        if settings.scheduler:
            raise ValueError("--cluster k8s and --scheduler both say where the fits run: give one")
        from .k8s import scheduler_address

        settings = settings.replace(scheduler=scheduler_address(args.cluster_name, namespace=args.namespace))
    if not settings.kafka:
        if not Path(args.data).exists():
            raise DataError(args.data, None, "no such file or folder")
        if not settings.scheduler:
            from .forkserver import start_forkserver

            start_forkserver(settings.worker_nice)  # first: the workers' imports take longest, on the other core

    from .pipeline import close_dask, open_dask, run_embedded
    from .report import print_run

    if settings.kafka:
        dataset = load_dataset(args.data)
        _quiet_logs()
        tune_process()
        from .kafka_mode import run_kafka

        async def with_dashboard() -> int:
            if not args.no_dashboard:
                from .dashboard import KafkaFeed

                _serve_beside_run(args, lambda: KafkaFeed(settings), settings.windows, None)
            return await run_kafka(settings, dataset=dataset, speed=args.speed, until_done=True)

        return asyncio.run(with_dashboard())
    _quiet_logs()
    on_dask = None
    if not args.no_dashboard:
        def on_dask(client, stages, bus) -> None:
            from .dashboard import MemoryFeed

            def dask_info() -> dict:
                info = client.scheduler_info() or {}  # an asynchronous client's cached totals
                return {"workers": info.get("n_workers"), "link": client.dashboard_link,
                        "in_flight": stages.estimator.in_flight if stages.estimator is not None else None}

            _serve_beside_run(args, lambda: MemoryFeed(bus), settings.windows, dask_info)

    async def embedded():
        # The Dask workers start (seconds of imports in their processes) while this process loads the
        # dataset and the stages' modules in a thread; the replay does not wait for them: the first fits
        # wait at the scheduler (and the run fails if the workers cannot start).
        dask = asyncio.ensure_future(open_dask(settings, dashboard=not args.no_dashboard))
        try:
            dataset = await asyncio.get_running_loop().run_in_executor(None, _load_for_run, args.data)
        except BaseException:
            await close_dask(*(await dask)[:2])
            raise
        client, cluster, workers = await dask
        try:
            tune_process()
            return await run_embedded(dataset, settings, args.out, client=client, speed=args.speed, progress=True,
                                      on_dask=on_dask, workers=workers)
        finally:
            if workers is not None:
                workers.cancel()  # done by now, unless the run stopped first
            await close_dask(client, cluster)

    print_run(asyncio.run(embedded()))
    return 0


def _load_for_run(path: str):
    """The dataset of ``tweetoscope run``, and the modules its stages import when built (the predictor's
    and the learner's: time that would otherwise pass before the replay starts). Neither skops nor
    scikit-learn: the models come from the learner in this process, compiled
    (:func:`tweetoscope.models.model_record`, :class:`estimators.inference.CompiledOmega`)."""
    from streams.datasets import load_dataset

    from . import learner, predictor  # noqa: F401

    return load_dataset(path)


def _serve_beside_run(args: argparse.Namespace, make_feed, windows, dask_info) -> None:
    """Serve the dashboard on the running loop; if the port is taken, say so and go on without it."""
    from .dashboard import Dashboard, serve

    feed = make_feed()
    try:
        serve(Dashboard(feed, windows, dask_info=dask_info), address=args.address, port=args.port,
              allow_websocket_origin=args.origins)
    except OSError as exc:
        feed.close()
        print(f"tweetoscope run: the dashboard could not listen on {args.address}:{args.port} ({exc}); "
              "running without it (--port to choose another)", file=sys.stderr)
        return
    where = f"--out {args.out}" if not getattr(args, "kafka", None) else f"--kafka {args.kafka}"
    print(f"dashboard: http://{args.address}:{args.port}/ (while the run lasts; afterwards: "
          f"tweetoscope dashboard {where})", file=sys.stderr)


def cmd_cluster(args: argparse.Namespace) -> int:
    from . import k8s

    if args.action == "up":
        k8s._check_bounds(args.minimum, args.maximum)
        spec = k8s.cluster_spec(args.manifest, name=args.name, image=args.image, workers=args.minimum)
        if args.print_spec:
            import yaml

            sys.stdout.write(yaml.safe_dump(spec, sort_keys=False))
            return 0
        cluster = k8s.cluster_up(spec, namespace=args.namespace, minimum=args.minimum, maximum=args.maximum)
        print(f"Dask cluster {args.name} up: scheduler {cluster.scheduler_address}, dashboard "
              f"{cluster.dashboard_link}, {args.minimum} to {args.maximum} workers.\n"
              f"Run the pipeline on it: tweetoscope run --cluster k8s --cluster-name {args.name} ...")
    elif args.action == "status":
        st = k8s.cluster_status(args.name, namespace=args.namespace)
        print(f"Dask cluster {st['name']} ({st['namespace']}): scheduler {st['scheduler']}, {st['workers']} "
              f"worker(s), dashboard {st['dashboard']}")
    else:
        k8s.cluster_down(args.name, namespace=args.namespace)
        print(f"Dask cluster {args.name} deleted")
    return 0


def _tasks_in_flight(dask_scheduler) -> int:
    """Tasks queued on the scheduler or processing on a worker (runs on the scheduler)."""
    return len(dask_scheduler.queued) + sum(len(ws.processing) for ws in dask_scheduler.workers.values())


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tornado.ioloop import IOLoop

    from .dashboard import Dashboard, KafkaFeed, OutDirFeed, serve

    settings = _settings(args)
    _quiet_logs()
    feed = KafkaFeed(settings) if settings.kafka else OutDirFeed(args.out)
    dask_info = client = None
    if settings.scheduler:
        from distributed import Client

        client = Client(settings.scheduler, timeout="10s")

        def dask_info() -> dict:
            tasks = client.run_on_scheduler(_tasks_in_flight)
            return {"workers": len(client.scheduler_info().get("workers", {})), "link": client.dashboard_link,
                    "in_flight": tasks}

    dashboard = Dashboard(feed, settings.windows, dask_info=dask_info)
    try:
        serve(dashboard, address=args.address, port=args.port, allow_websocket_origin=args.origins)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.address}:{args.port}: {exc}") from None
    print(f"dashboard of {feed.source}: http://{args.address}:{args.port}/", file=sys.stderr, flush=True)
    try:
        IOLoop.current().start()
    finally:
        dashboard.close()
        if client is not None:
            client.close()
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    import asyncio

    from .kafka_mode import run_kafka

    settings = _settings(args, need_kafka=True)
    _quiet_logs()
    tune_process()
    return asyncio.run(run_kafka(settings, stages=(args.stage,)))


def cmd_generate(args: argparse.Namespace) -> int:
    import asyncio

    from streams.datasets import load_dataset

    from .kafka_mode import run_kafka

    settings = _settings(args, need_kafka=True)
    _quiet_logs()
    dataset = load_dataset(args.path)
    return asyncio.run(run_kafka(settings, stages=(), dataset=dataset, speed=args.speed, until_done=True))


def cmd_alerts(args: argparse.Namespace) -> int:
    from .alerts import print_alerts

    settings = _settings(args, need_kafka=True)
    _quiet_logs()
    return print_alerts(settings, follow=args.follow, min_size=args.alert_min, as_json=args.json, top=args.top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError, PermissionError, TimeoutError) as exc:
        print(f"tweetoscope {args.command}: error: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The ``tweetoscope`` command: :func:`main`, then exit with its status. The heap is frozen first
    (``gc.freeze``): the interpreter's shutdown would otherwise walk all of it in its last collections,
    0.8-0.9 s at the end of a ``tweetoscope run`` (0.1 s frozen; BENCHMARKS.md, issue 12)."""
    import gc

    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry()
