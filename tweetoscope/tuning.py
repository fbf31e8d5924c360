"""Process settings for the stages' hot paths: the garbage collector's thresholds, glibc's malloc and
one BLAS thread.

Every command that runs stages calls :func:`tune_process` (the benchmarks too, to measure the
stages as they run). The Dask workers get :func:`tune_malloc` and :func:`tune_blas` from
:class:`tweetoscope.pipeline.WarmFits`: those of a local cluster inherit them from the process they
fork from (:mod:`tweetoscope._worker_preload` runs it there), the others run it when they start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

__all__ = ["tune_process", "tune_gc", "tune_malloc", "tune_blas", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

#: Blocks of at least this many bytes get pages of their own from the kernel (glibc's largest setting).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap kept for later blocks, up to this many bytes.
TRIM_THRESHOLD = 128 * 2**20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def tune_process() -> None:
    """:func:`tune_gc`, :func:`tune_malloc` and :func:`tune_blas`."""
    tune_gc()
    tune_malloc()
    tune_blas()


def tune_gc() -> None:
    """Streaming allocates millions of short-lived objects next to long-lived state: collect the
    young generation less often (measured: 20-30 % more events/s in the embedded replay)."""
    gc.set_threshold(100_000, 50, 100)


def tune_malloc() -> bool:
    """Keep the arrays of the numerical paths in the heap: by default glibc gives each block of
    128 KiB or more (a threshold that grows only up to the largest block freed so far) pages of its
    own, and trims the heap's top beyond twice that, so that the same temporaries of 0.1-16 MiB
    (the predictive laws' FFTs and powers, the forests) page-fault their memory back at every call.
    One law of the model's forecast took 2.3 ms, 0.8 ms with these settings (BENCHMARKS.md, stop 25).
    Returns whether the settings were applied (False off glibc, where nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune_blas() -> None:
    """One BLAS thread in this process and in the processes it starts, as Dask gives its own workers
    (``distributed.nanny.pre-spawn-environ``): every process of the pipeline runs one thread of work,
    and on a busy machine OpenBLAS's other threads wait for cores that the other processes hold (the
    matrix product of a predictive law took 3-5 ms in the pipeline instead of 0.3 ms)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the processes started later
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # the libraries loaded already
