"""The process that a local cluster's Dask workers fork from (a module of its own, importing nothing
heavy: ``tweetoscope run`` starts it before it imports Dask)."""

from __future__ import annotations

__all__ = ["start_forkserver"]


def start_forkserver() -> None:
    """Start, if it is not running yet, the process that a local cluster's Dask workers fork from.

    It imports what the workers need once (distributed and its dependencies, the tasks' modules,
    scikit-learn and skops for the models) and compiles the fit (:mod:`tweetoscope._worker_preload`),
    while this process goes on: each worker then starts with all of it instead of importing and
    compiling it itself (spawn). Returns at once; the first worker waits for the preload.
    """
    import multiprocessing.forkserver

    # Not distributed's own preload list (distributed.utils.get_mp_context), which adds pandas: no
    # task here uses it, and its import would delay the first worker. Once running, the server keeps
    # the modules it was started with (later calls, distributed's too, change nothing).
    multiprocessing.forkserver.set_forkserver_preload(["distributed", "tweetoscope._worker_preload"])
    multiprocessing.forkserver.ensure_running()
