"""What a local cluster's Dask workers import before they start (:func:`tweetoscope.forkserver.start_forkserver`).

Imported once by the forkserver process that the workers fork from, after distributed,
so that each worker starts with it instead of importing it (about 2 CPU seconds per worker):

- the modules of the tasks the pipeline submits (fits, the prior's and the learner's refits), with
  scikit-learn and skops;
- the fit with the default settings, compiled (numba), and the process settings of the stages (glibc's
  malloc, one BLAS thread: :mod:`tweetoscope.tuning`), as :class:`tweetoscope.pipeline.WarmFits` does;
- the workers' niceness (``Settings.worker_nice``, given by :func:`tweetoscope.forkserver.start_forkserver`):
  on a machine with fewer cores than runnable processes, the stages' process keeps its core and the
  fits and refits take the rest (measured: BENCHMARKS.md, "Stop 29").

A failure here is logged, not raised: the forkserver would die with it and no worker could start;
the workers then import what they need themselves.

When the cluster's process exits, the forkserver exits at once (``os._exit``), without tearing
down its imports one by one: that took 0.6-0.7 s, during which it still held the command's
stdout and stderr open, so that a caller reading them (a pipe, ``subprocess.run``) waited for it.
It has nothing to flush or release: the workers are gone by then, and each one exits on its own.
"""

import atexit
import logging
import os
import sys

#: The process that ran this preload (the forkserver); a worker with another pid inherited it.
PRELOADED_IN: int = os.getpid()
#: Whether the whole preload ran.
COMPLETE: bool = False
#: Whether this process is a forkserver that exits at once (see the module's docstring).
EXITS_AT_ONCE: bool = False


def _preload() -> None:
    from . import estimator, learner  # noqa: F401  (the tasks' modules)
    from .config import Settings
    from .pipeline import WarmFits

    WarmFits(Settings().fit_kwargs()).setup(None)


try:
    _preload()
    COMPLETE = True
except Exception:  # noqa: BLE001  (see the module's docstring)
    logging.getLogger(__name__).warning("the Dask workers' preload failed: each worker imports on its own",
                                        exc_info=True)


def _in_forkserver() -> bool:
    """Whether this import runs within :func:`multiprocessing.forkserver.main` (its preload)."""
    server = sys.modules.get("multiprocessing.forkserver")
    frame = sys._getframe()
    while server is not None and frame is not None:
        if frame.f_code is server.main.__code__:
            return True
        frame = frame.f_back
    return False


def _exit_at_once() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


if _in_forkserver():
    from .forkserver import NICE_VAR

    os.nice(int(os.environ.get(NICE_VAR, "0")))  # before any thread: all inherit it
    # the last handler registered runs first: the modules' own handlers, registered by their
    # imports above, are the teardown skipped (the server's forked workers never run atexit)
    atexit.register(_exit_at_once)
    EXITS_AT_ONCE = True
