"""The process that a local cluster's Dask workers fork from (a module of its own, importing nothing
heavy: ``tweetoscope run`` starts it before it imports Dask)."""

from __future__ import annotations

__all__ = ["start_forkserver"]


#: How :func:`start_forkserver` tells the server its niceness (read by :mod:`tweetoscope._worker_preload`).
NICE_VAR = "_TWEETOSCOPE_FORKSERVER_NICE"


def start_forkserver(nice: int = 0) -> None:
    """Start, if it is not running yet, the process that a local cluster's Dask workers fork from.

    It imports what the workers need once (distributed and its dependencies, the tasks' modules,
    scikit-learn and skops for the models) and compiles the fit (:mod:`tweetoscope._worker_preload`),
    while this process goes on: each worker then starts with all of it instead of importing and
    compiling it itself (spawn). Returns at once; the first worker waits for the preload.

    ``nice``: niceness the server adds to itself, so to every worker (``Settings.worker_nice``).
    The first call decides (the server keeps its niceness as it keeps its modules).
    """
    import multiprocessing.forkserver
    import os

    # Not distributed's own preload list (distributed.utils.get_mp_context), which adds pandas: no
    # task here uses it, and its import would delay the first worker. Once running, the server keeps
    # the modules it was started with (later calls, distributed's too, change nothing).
    multiprocessing.forkserver.set_forkserver_preload(["distributed", "tweetoscope._worker_preload"])
    os.environ[NICE_VAR] = str(int(nice))  # the server starts with this process's environment
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        del os.environ[NICE_VAR]
