"""What a local cluster's Dask workers import before they start (:func:`tweetoscope.pipeline.start_forkserver`).

Imported once by the forkserver process that the workers fork from, after distributed's own preload,
so that each worker starts with it instead of importing it (about 2 CPU seconds per worker):

- the modules of the tasks the pipeline submits (fits, the prior's and the learner's refits), with
  scikit-learn and skops;
- the fit with the default settings, compiled (numba), as :class:`tweetoscope.pipeline.WarmFits` does.

A failure here is logged, not raised: the forkserver would die with it and no worker could start;
the workers then import what they need themselves.
"""

import logging
import os

#: The process that ran this preload (the forkserver); a worker with another pid inherited it.
PRELOADED_IN: int = os.getpid()
#: Whether the whole preload ran.
COMPLETE: bool = False


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
